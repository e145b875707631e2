"""The state store: what each target acknowledged, the run history, rejections, leases."""

from __future__ import annotations

from syncd.state.base import Staging, StateStore


def open_store(url: str, *, upgrade: bool = True) -> StateStore:
    """The state store at a SQLAlchemy URL, its schema brought up to date."""
    from syncd.state.sql import SqlStateStore

    store = SqlStateStore(url)
    if upgrade:
        store.upgrade()
    return store


__all__ = ["Staging", "StateStore", "open_store"]
