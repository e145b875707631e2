"""Targets: the product APIs syncd mirrors the catalog into, one folder each.

A target is registered here with one line: its kind, its config model and the factory
of its adapter. Everything else about it lives in its folder (``targets/<kind>/``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from syncd.config import HttpConfig, TargetConfig, UserfluxTargetConfig, VambeTargetConfig
from syncd.targets.base import PlannedRequests, Target, TargetInfo
from syncd.targets.userflux import UserfluxTarget
from syncd.targets.vambe import VambeTarget


@dataclass(frozen=True, slots=True)
class Backend:
    """One kind of target: its config model, and how its adapter is made."""

    config: type[Any]
    factory: Callable[..., Target]
    """``factory(config, http, *, api_key, transport)`` -> the adapter."""


BACKENDS: Mapping[str, Backend] = {
    "userflux": Backend(UserfluxTargetConfig, UserfluxTarget),
    "vambe": Backend(VambeTargetConfig, VambeTarget),
}
"""Every target kind, by the ``kind`` of its ``[[targets]]`` table."""


def open_target(
    config: TargetConfig,
    http: HttpConfig,
    *,
    api_key: str,
    transport: httpx.BaseTransport | None = None,
) -> Target:
    """The target adapter for a validated target config."""
    backend = BACKENDS.get(config.kind)
    if backend is None or not isinstance(config, backend.config):
        raise TypeError(f"unknown target config {type(config).__name__}")
    return backend.factory(config, http, api_key=api_key, transport=transport)


__all__ = ["BACKENDS", "Backend", "PlannedRequests", "Target", "TargetInfo", "open_target"]
