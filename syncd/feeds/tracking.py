"""What a feed knows about itself between two ``status()`` calls: connected or not, since
when changes may have been missed, the last event and the last connection error; kept
thread-safe (the feed's thread writes, the daemon's status page reads), plus the one
back-off loop both connection-keeping feeds share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from syncd.feeds.base import FeedStatus
from syncd.logs import scrub
from syncd.retry import RetryPolicy

Clock = Callable[[], float]

MAX_ERROR_CHARS = 500
"""A connection error is kept (and shown) at most this long."""


def reconnect_policy(initial_delay_s: float, max_delay_s: float) -> RetryPolicy:
    """The back-off between connection attempts: doubling with jitter, never giving up."""
    return RetryPolicy(
        max_attempts=2**31,
        initial_delay_s=initial_delay_s,
        max_delay_s=max(max_delay_s, initial_delay_s),
    )


class _Reconnecting(Protocol):
    @property
    def feed_name(self) -> str: ...
    @property
    def reconnect_delay_s(self) -> float: ...
    @property
    def reconnect_max_delay_s(self) -> float: ...


class ConnectedFeed:
    """What the feeds that keep a connection share: their name, their clock, the back-off
    between connection attempts, and a ``FeedTracker`` behind ``status`` and ``reconciled``."""

    kind: str

    def __init__(self, config: _Reconnecting, clock: Clock) -> None:
        self.name = config.feed_name
        self._clock = clock
        self._policy = reconnect_policy(config.reconnect_delay_s, config.reconnect_max_delay_s)
        self._tracker = FeedTracker(self.name, self.kind, clock=clock)

    def status(self) -> FeedStatus:
        return self._tracker.status()

    def reconciled(self, started_at: float) -> bool:
        """A scheduled reconcile that started at ``started_at`` completed: what was missed
        before it is repaired (see ``FeedTracker.reconciled``)."""
        return self._tracker.reconciled(started_at)


def error_text(exc: BaseException) -> str:
    """An exception as one line for status and logs: its type and message, secrets
    scrubbed, cut at ``MAX_ERROR_CHARS``."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    text = scrub(f"{type(exc).__name__}: {message}")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


@dataclass
class _State:
    connected: bool = False
    connected_at: float | None = None
    last_event_at: float | None = None
    missed_since: float | None = None
    error: str | None = None


class FeedTracker:
    """The mutable status of one feed, behind a lock."""

    def __init__(self, name: str, kind: str, *, clock: Clock = time.time) -> None:
        self.name = name
        self.kind = kind
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()

    def connected(self, *, may_have_missed: bool) -> float:
        """The feed is (re)connected; ``may_have_missed``: what was sent while it was not
        is lost (NOTIFY), so ``missed_since`` is set (to when it was lost, or now on the
        first connect) unless already set. Returns the connect time."""
        now = self._clock()
        with self._lock:
            state = self._state
            if may_have_missed and state.missed_since is None:
                state.missed_since = now
            state.connected, state.connected_at, state.error = True, now, None
        return now

    def disconnected(self, error: str | None, *, may_have_missed: bool) -> None:
        """The connection failed or dropped (``error`` already scrubbed)."""
        now = self._clock()
        with self._lock:
            state = self._state
            if may_have_missed and state.missed_since is None:
                state.missed_since = now
            state.connected = False
            if error is not None:
                state.error = error

    def note(self, problem: str) -> None:
        """A problem shown as the status ``error`` while connected (cleared on reconnect)."""
        with self._lock:
            self._state.error = problem

    def missed(self) -> None:
        """Changes were received but not pushed, and can't be redelivered."""
        now = self._clock()
        with self._lock:
            if self._state.missed_since is None:
                self._state.missed_since = now

    def received(self, at: float) -> None:
        with self._lock:
            self._state.last_event_at = at

    def reconciled(self, started_at: float) -> bool:
        """A scheduled reconcile that started at ``started_at`` completed: it covers what
        was missed before it started, so ``missed_since`` is cleared when the feed was
        connected (and the miss happened) before that start. Returns whether it was."""
        with self._lock:
            state = self._state
            if state.missed_since is None:
                return False
            if not state.connected or state.connected_at is None:
                return False
            if started_at < max(state.connected_at, state.missed_since):
                return False
            state.missed_since = None
            return True

    def status(self) -> FeedStatus:
        with self._lock:
            state = self._state
            return FeedStatus(
                name=self.name,
                kind=self.kind,
                connected=state.connected,
                last_event_at=state.last_event_at,
                missed_since=state.missed_since,
                error=state.error,
            )
