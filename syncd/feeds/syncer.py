"""Coalescing the feeds' events into targeted syncs, one at a time per worker thread.

``FeedSyncer.sink`` queues a feed's events and returns. The worker waits ``coalesce_s``
from the first event waiting (events for one key in that window become one read), takes
at most ``max_batch`` keys, and runs ``sync_keys`` holding its ``lock``: the daemon gives
each target its own syncer and lock, and a scheduled run holds every target's lock, so a
scheduled run and a targeted sync never push the same target at once nor race each
other's acknowledgements (leases keep other processes off), while a slow or throttled
target delays no other. While a scheduled run goes on, the keys wait for it to end and
are then read and pushed (never dropped: the run's read may have begun before their
change committed). Each handed-over batch's ``Done`` is called once its every key settled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx
import structlog

from syncd.config import SyncdConfig
from syncd.executor import Events
from syncd.feeds.base import Done, KeyEvent
from syncd.feeds.targeted import DeleteWindow, TargetedSync, sync_keys
from syncd.sources import Source
from syncd.state.base import StateStore

log = structlog.get_logger("syncd.feeds")


class FeedObserver(Protocol):
    """What the syncer reports (``SyncdMetrics`` takes these)."""

    def feed_acknowledged(self, target: str, feed: str, latency_s: float) -> None: ...

    def feed_gone(self, feed: str, events: int) -> None: ...

    def feed_run(self, target: str, outcome: str, counts: Mapping[str, int]) -> None: ...


class _NoObserver:
    def feed_acknowledged(self, target: str, feed: str, latency_s: float) -> None:
        pass

    def feed_gone(self, feed: str, events: int) -> None:
        pass

    def feed_run(self, target: str, outcome: str, counts: Mapping[str, int]) -> None:
        pass


@dataclass
class _Handover:
    """One batch a feed handed over: its ``Done`` waits for every key."""

    done: Done
    left: set[str]
    ok: bool = True

    def settle(self, key: str, ok: bool) -> bool:
        """Settle ``key``; whether the batch is now complete."""
        self.left.discard(key)
        self.ok = self.ok and ok
        return not self.left


@dataclass
class _Waiting:
    """A key waiting for its targeted sync, with every event and batch naming it."""

    first_at: float
    """Monotonic time the first of its events was queued."""
    events: list[KeyEvent] = field(default_factory=list)
    handovers: list[_Handover] = field(default_factory=list)
    not_before: float = 0.0
    """Monotonic time before which it is not tried (a locked target: tried again)."""


SyncKeys = Callable[[Sequence[str]], TargetedSync]


class FeedSyncer:
    """Queues the feeds' events and runs targeted syncs in a worker thread."""

    def __init__(
        self,
        config: SyncdConfig,
        store: StateStore,
        *,
        lock: threading.Lock | None = None,
        environ: Mapping[str, str] | None = None,
        transports: Mapping[str, httpx.BaseTransport] | None = None,
        events: Events | None = None,
        observer: FeedObserver | None = None,
        source: Source | None = None,
        targets: Callable[[], Sequence[str]] | None = None,
        count_gone: bool = True,
    ) -> None:
        self.config = config
        self.store = store
        self.lock = lock or threading.Lock()
        """Held for every targeted sync: pass the daemon's run lock."""
        self._environ = environ
        self._transports = transports
        self._events = events
        self._observer = observer or _NoObserver()
        self._source = source
        self._targets = targets
        self._count_gone = count_gone
        """Whether this syncer counts events for keys the source no longer has (one of a
        feed's per-target syncers does, so each event counts once)."""
        settings = config.feed_sync
        self.coalesce_s = settings.coalesce_s
        self.max_batch = settings.max_batch
        self.retry_locked_s = settings.retry_locked_s
        self.window = DeleteWindow(settings.delete_window_s)
        self._waiting: dict[str, _Waiting] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._run_stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0
        """Targeted syncs run so far."""
        self._spaced_until = 0.0
        """Monotonic time before which the next targeted sync may not start: each run has
        its own executor, so the rate limit is kept across runs here."""

    # -- the sink every feed hands its events to ----------------------------------------
    def sink(self, events: Sequence[KeyEvent], done: Done) -> None:
        """Queue ``events`` (coalesced per key); ``done`` is called once all settled."""
        keys = list(dict.fromkeys(event.key for event in events))
        if not keys:
            done(True)
            return
        handover = _Handover(done, set(keys))
        now = time.monotonic()
        with self._cond:
            for event in events:
                waiting = self._waiting.get(event.key)
                if waiting is None:
                    waiting = self._waiting[event.key] = _Waiting(now)
                waiting.events.append(event)
            for key in keys:
                self._waiting[key].handovers.append(handover)
            self._cond.notify_all()

    def lag_s(self, now: float | None = None) -> dict[str, float]:
        """Per feed, how long its oldest waiting event has waited (seconds, wall clock)."""
        now = time.time() if now is None else now
        lag: dict[str, float] = {}
        with self._cond:
            for waiting in self._waiting.values():
                for event in waiting.events:
                    lag[event.feed] = max(lag.get(event.feed, 0.0), now - event.received_at)
        return lag

    @property
    def waiting(self) -> int:
        """Keys waiting for a targeted sync."""
        with self._cond:
            return len(self._waiting)

    # -- the worker -----------------------------------------------------------------------
    def start(self) -> FeedSyncer:
        self.window.seed(
            self.store, [t.name for t in self.config.targets if t.enabled], time.time()
        )
        self._thread = threading.Thread(target=self._work, name="syncd-feed-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking batches; the one in progress stops like a run on SIGTERM. Keys
        still waiting are left unacknowledged (``Done(False)``: a broker redelivers)."""
        self._stop.set()
        self._run_stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            waiting, self._waiting = self._waiting, {}
        self._settle(waiting, set())

    def _work(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                self.run_batch(batch)

    def _next_batch(self) -> dict[str, _Waiting]:
        """The keys due now (at most ``max_batch``, oldest first), once the first waiting
        one has waited ``coalesce_s``; empty when stopping."""
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                due = [(w.first_at, k) for k, w in self._waiting.items() if w.not_before <= now]
                if not due:
                    later = [w.not_before for w in self._waiting.values()]
                    self._cond.wait(min(later) - now if later else None)
                    continue
                oldest = min(due)[0]
                ready_at = oldest + self.coalesce_s
                if now < ready_at and len(due) < self.max_batch:
                    self._cond.wait(ready_at - now)
                    continue
                chosen = [key for _, key in sorted(due)[: self.max_batch]]
                return {key: self._waiting.pop(key) for key in chosen}
        return {}

    def run_batch(self, batch: dict[str, _Waiting]) -> TargetedSync | None:
        """One targeted sync of ``batch``'s keys (under the run lock), then their batches'
        ``Done``; keys a locked target held back wait ``retry_locked_s`` and go again."""
        keys = sorted(batch)
        pause = self._spaced_until - time.monotonic()
        if pause > 0 and self._stop.wait(pause):
            self._settle(batch, set())
            return None
        started = time.monotonic()
        try:
            with self.lock:
                # a fresh stop per run: a lease lost in one run (which sets it) stops no other
                self._run_stop = threading.Event()
                if self._stop.is_set():
                    self._settle(batch, set())
                    return None
                outcome = sync_keys(
                    self.config,
                    self.store,
                    keys,
                    window=self.window,
                    environ=self._environ,
                    transports=self._transports,
                    events=self._events,
                    stop=self._run_stop,
                    source=self._source,
                    targets=self._targets() if self._targets is not None else (),
                )
        except Exception as exc:  # the worker outlives a failed batch
            log.error("syncd.feeds.batch_failed", keys=len(keys), error=str(exc), exc_info=True)
            self._settle(batch, set())
            return None
        self.batches += 1
        self._spaced_until = started + self._send_time(outcome)
        if outcome.locked and not outcome.read.error and not self._stop.is_set():
            self._requeue(batch)
            return outcome
        self._observe(batch, outcome)
        self._settle(batch, set(outcome.settled))
        log.info(
            "syncd.feeds.synced",
            keys=len(keys),
            pushed=outcome.pushed,
            gone=len(outcome.read.gone),
            unreachable=len(outcome.read.unreachable),
            outcomes=" ".join(f"{t.target}={t.outcome}" for t in outcome.report.targets)
            if outcome.report
            else None,
        )
        return outcome

    def _send_time(self, outcome: TargetedSync) -> float:
        """The least time a run's requests take at their targets' rate limits."""
        report = outcome.report
        if report is None:
            return 0.0
        spans = [0.0]
        for target in report.targets:
            rate = self.config.target(target.target).rate_limit_per_s
            if rate > 0 and target.requests:
                spans.append(target.requests / rate)
        return max(spans)

    def _requeue(self, batch: dict[str, _Waiting]) -> None:
        retry_at = time.monotonic() + self.retry_locked_s
        with self._cond:
            for key, waiting in batch.items():
                waiting.not_before = retry_at
                newer = self._waiting.get(key)
                if newer is not None:  # events that came meanwhile join it
                    waiting.events += newer.events
                    waiting.handovers += newer.handovers
                self._waiting[key] = waiting
            self._cond.notify_all()

    def _observe(self, batch: dict[str, _Waiting], outcome: TargetedSync) -> None:
        gone: dict[str, int] = {}
        for key, waiting in batch.items():
            if key in outcome.read.gone and self._count_gone:
                for event in waiting.events:
                    gone[event.feed] = gone.get(event.feed, 0) + 1
            if key not in outcome.settled:
                continue
            for target, acked_at in outcome.acked_at.items():
                for event in waiting.events:
                    since = event.changed_at if event.changed_at is not None else event.received_at
                    self._observer.feed_acknowledged(target, event.feed, max(0.0, acked_at - since))
        for feed, count in gone.items():
            self._observer.feed_gone(feed, count)
        for run in outcome.report.targets if outcome.report else ():
            if run.outcome != "locked":
                counts = {
                    "created": run.created,
                    "updated": run.updated,
                    "deleted": run.deleted,
                    "rejected": run.rejected,
                    "failed": run.failed,
                    "held": run.held,
                }
                self._observer.feed_run(run.target, run.outcome, counts)

    @staticmethod
    def _settle(batch: Mapping[str, _Waiting], settled: set[str]) -> None:
        """Settle every key of ``batch`` (ok when in ``settled``), calling each batch's
        ``Done`` once its last key settles."""
        for key, waiting in batch.items():
            for handover in waiting.handovers:
                if handover.settle(key, key in settled):
                    try:
                        handover.done(handover.ok)
                    except Exception as exc:  # a feed's callback must not stop the worker
                        log.error("syncd.feeds.done_failed", error=str(exc), exc_info=True)
