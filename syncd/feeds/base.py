# syncd/feeds/base.py
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class KeyEvent:
    """One product key a change feed says changed (insert, update or delete alike)."""

    key: str
    feed: str  # the feed's name (its config `name`, default its kind)
    received_at: float  # time.time() when syncd received it
    changed_at: float | None = None  # time.time() the source committed it, when the feed says


Done = Callable[[bool], None]
"""Called exactly once per handed-over batch: True once every key was pushed to and
acknowledged by every target (or needed nothing); False when not (the feed must not ack:
the broker redelivers; a feed that can't redeliver marks itself as having missed changes)."""

FeedSink = Callable[[Sequence[KeyEvent], Done], None]
"""Where a feed hands its events; returns at once (the work is queued and coalesced)."""


@dataclass(frozen=True)
class FeedStatus:
    name: str
    kind: str
    connected: bool
    last_event_at: float | None = None
    missed_since: float | None = None
    """Set when the feed lost its connection (changes may have been missed until the next
    scheduled reconcile); cleared by a reconcile that started after it reconnected."""
    error: str | None = None  # the last connection error, secrets scrubbed


class ChangeFeed(Protocol):
    name: str
    kind: str

    def run(self, sink: FeedSink, stop: threading.Event) -> None:
        """Receive events until ``stop`` is set, reconnecting with back-off (use
        syncd.retry.RetryPolicy); never raises for connection errors."""

    def status(self) -> FeedStatus: ...
