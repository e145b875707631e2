"""The daemon's change feeds, run: each feed in its own thread handing its events to a
``FeedSyncer`` per target (its own worker and lock: a throttled target delays no other;
a scheduled run holds every lock, ``exclusive``), their status (connection, lag, last
event, ``missed_since``) for the status page and /metrics, and what a scheduled run
repaired that the feeds missed.

``missed_since`` comes from the feed; the runner clears it once a scheduled run that
started while the feed was connected again (after it missed) ended ``ok`` for every
target: that run read the whole catalog, so nothing missed before it stays missed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import httpx
import structlog

from syncd.config import SyncdConfig
from syncd.feeds.base import ChangeFeed, Done, FeedStatus, KeyEvent
from syncd.feeds.registry import build_feeds
from syncd.feeds.syncer import FeedSyncer
from syncd.feeds.webhook import WebhookFeed, webhook_router
from syncd.logs import scrub
from syncd.metrics import SyncdMetrics
from syncd.runs import RunReport
from syncd.state.base import StateStore

log = structlog.get_logger("syncd.feeds")


class FeedRunner:
    """Starts and stops the configured feeds and reports on them."""

    def __init__(
        self,
        config: SyncdConfig,
        *,
        metrics: SyncdMetrics,
        environ: Mapping[str, str] | None = None,
        transports: Mapping[str, httpx.BaseTransport] | None = None,
        feeds: Sequence[ChangeFeed] | None = None,
    ) -> None:
        self.config = config
        self.feeds: list[ChangeFeed] = (
            list(feeds) if feeds is not None else build_feeds(config, environ)
        )
        self._metrics = metrics
        self._environ = environ
        self._transports = transports
        self.syncers: list[FeedSyncer] = []
        """One per enabled target, each with its worker thread and lock."""
        self.locks = {t.name: threading.Lock() for t in config.targets if t.enabled}
        """Per target: held by its targeted syncs, and all of them by a scheduled run."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cleared: dict[str, float] = {}
        self._reconcile_started_at = 0.0
        """Per feed, the ``missed_since`` a scheduled run has repaired since."""
        self.repaired: dict[str, int] = {}
        """Per target, what its last scheduled run repaired (created, updated, deleted)."""
        targets = [t.name for t in config.targets if t.enabled]
        for feed in self.feeds:
            metrics.add_feed(feed.name, targets)

    def start(self, store: StateStore) -> FeedRunner:
        """One syncer per enabled target (its own worker and lock), then every feed."""
        for index, name in enumerate(self.locks):
            self.syncers.append(
                FeedSyncer(
                    self.config,
                    store,
                    lock=self.locks[name],
                    environ=self._environ,
                    transports=self._transports,
                    events=self._metrics,
                    observer=self._metrics,
                    targets=lambda name=name: (name,),  # type: ignore[misc]
                    count_gone=index == 0,
                ).start()
            )
        for feed in self.feeds:
            thread = threading.Thread(
                target=self._run_feed, args=(feed,), name=f"syncd-feed-{feed.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("syncd.feeds.started", feeds=",".join(f.name for f in self.feeds))
        return self

    def sink(self, events: Sequence[KeyEvent], done: Done) -> None:
        """Every feed's ``FeedSink``: the events go to each target's syncer; ``done`` is
        called once, when every target settled them (True only if each pushed them)."""
        syncers = self.syncers
        if not syncers:
            done(False)
            return
        left = [len(syncers)]
        results: list[bool] = []
        lock = threading.Lock()

        def one(ok: bool) -> None:
            with lock:
                results.append(ok)
                left[0] -= 1
                last = left[0] == 0
            if last:
                done(all(results))

        for syncer in syncers:
            syncer.sink(events, one)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold every target's lock (a scheduled run): no targeted sync runs meanwhile."""
        with contextlib.ExitStack() as stack:
            for lock in self.locks.values():
                stack.enter_context(lock)
            yield

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no key waits and no targeted sync runs; whether it came to that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(s.waiting for s in self.syncers):
                with self.exclusive():
                    if not any(s.waiting for s in self.syncers):
                        return True
            time.sleep(0.05)
        return False

    def lag_s(self) -> dict[str, float]:
        """Per feed, the age of its oldest event still waiting for some target."""
        lag: dict[str, float] = {}
        for syncer in self.syncers:
            for feed, seconds in syncer.lag_s().items():
                lag[feed] = max(lag.get(feed, 0.0), seconds)
        return lag

    def _run_feed(self, feed: ChangeFeed) -> None:
        try:
            feed.run(self.sink, self._stop)
        except Exception as exc:  # a feed must never raise; if it does, it is reported
            log.error("syncd.feeds.feed_died", feed=feed.name, error=scrub(str(exc)), exc_info=True)

    def stop(self, timeout: float) -> None:
        """Stop the feeds, then the syncer (a batch in progress stops like a run)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for syncer in self.syncers:
            syncer.stop(timeout)

    # -- the listener -------------------------------------------------------------------
    def post(self, *args: Any) -> Any:
        """The listener's POST handler: the webhook feeds' endpoints."""
        return webhook_router([f for f in self.feeds if isinstance(f, WebhookFeed)])(*args)

    @property
    def has_webhooks(self) -> bool:
        return any(isinstance(f, WebhookFeed) for f in self.feeds)

    # -- status -------------------------------------------------------------------------
    def statuses(self) -> list[FeedStatus]:
        """Each feed's status, ``missed_since`` cleared where a scheduled run repaired it."""
        out = []
        for feed in self.feeds:
            status = feed.status()
            cleared = self._cleared.get(feed.name)
            if (
                status.missed_since is not None
                and cleared is not None
                and status.missed_since <= cleared
            ):
                status = replace(status, missed_since=None)
            out.append(status)
        return out

    def rows(self) -> list[dict[str, object]]:
        """The status page's rows."""
        lag = self.lag_s()
        return [
            {
                "name": s.name,
                "kind": s.kind,
                "connected": s.connected,
                "last_event_at": s.last_event_at,
                "lag_s": lag.get(s.name, 0.0),
                "missed_since": s.missed_since,
                "error": s.error,
            }
            for s in self.statuses()
        ]

    def observe(self) -> None:
        """The feed gauges of /metrics, as they are now."""
        lag = self.lag_s()
        for status in self.statuses():
            self._metrics.observe_feed(
                status.name,
                connected=status.connected,
                last_event_at=status.last_event_at,
                missed_since=status.missed_since,
                lag_s=lag.get(status.name, 0.0),
            )

    # -- the scheduled runs -------------------------------------------------------------
    def reconcile_started(self) -> dict[str, float]:
        """Before a scheduled run: the ``missed_since`` of each connected feed, which the
        run repairs if it ends ``ok``."""
        self._reconcile_started_at = time.time()
        return {
            s.name: s.missed_since
            for s in (feed.status() for feed in self.feeds)
            if s.connected and s.missed_since is not None
        }

    def reconcile_finished(self, report: RunReport, missed: Mapping[str, float]) -> None:
        """After a scheduled run: what it repaired per target (the feeds missed it), and
        the feeds' ``missed_since`` it cleared."""
        for target in report.targets:
            if target.outcome == "locked":
                continue
            repaired = target.created + target.updated + target.deleted
            self.repaired[target.target] = repaired
            self._metrics.observe_repaired(target.target, repaired)
            log.info(
                "syncd.feeds.repaired",
                target=target.target,
                repaired=repaired,
                created=target.created,
                updated=target.updated,
                deleted=target.deleted,
                outcome=target.outcome,
            )
        if report.targets and all(t.ok for t in report.targets):
            self._cleared.update(missed)
            for feed in self.feeds:
                # the feed forgets the miss it repaired, so a later one is reported again
                reconciled = getattr(feed, "reconciled", None)
                if callable(reconciled) and feed.name in missed:
                    reconciled(self._reconcile_started_at)
