"""Targets: the product APIs syncd mirrors the catalog into (UserFlux, Vambe)."""

from __future__ import annotations

import httpx

from syncd.config import HttpConfig, TargetConfig, UserfluxTargetConfig, VambeTargetConfig
from syncd.targets.base import PlannedRequests, Target, TargetInfo


def open_target(
    config: TargetConfig,
    http: HttpConfig,
    *,
    api_key: str,
    transport: httpx.BaseTransport | None = None,
) -> Target:
    """The target adapter for a validated target config."""
    if isinstance(config, UserfluxTargetConfig):
        from syncd.targets.userflux import UserfluxTarget

        return UserfluxTarget(config, http, api_key=api_key, transport=transport)
    if isinstance(config, VambeTargetConfig):
        from syncd.targets.vambe import VambeTarget

        return VambeTarget(config, http, api_key=api_key, transport=transport)
    raise TypeError(f"unknown target config {type(config).__name__}")


__all__ = ["PlannedRequests", "Target", "TargetInfo", "open_target"]
