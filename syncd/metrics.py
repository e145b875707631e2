"""Prometheus metrics of syncd, in a registry of their own (never the global default one).

``SyncdMetrics`` is the executor's ``Events`` (every request answered, every retry) and
takes each run's ``RunReport``; ``render`` gives the text format served on ``/metrics``.
``Progress`` forwards the same events and prints a progress line on a terminal.
Fit for alerting: every target's series exist from the start at zero, no ``_created``
series, ``syncd_build_info`` and the process metrics. The per-target state gauges (last
outcome, last success, open rejections, products, a run in progress) are read back from
state (``refresh_from_state``), so every replica of a daemon reports the same truth.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from syncd import __version__
from syncd.errors import SyncdError
from syncd.executor import Events
from syncd.model import RunRecord
from syncd.progress import RunProgress
from syncd.reconcile import RunReport
from syncd.runs import TELLING_OUTCOMES, tells
from syncd.state.base import StateStore

OPERATIONS = ("created", "updated", "deleted", "rejected", "failed", "held")
"""The ``operation`` label of ``syncd_products_total``."""
OUTCOMES = ("ok", "partial", "blocked", "failed", "locked", "interrupted", "incomplete")
"""The ``outcome`` label of ``syncd_runs_total`` (every one exists from the start)."""

_TELLING = TELLING_OUTCOMES
_RUNS_READ = 50
"""Runs read back per target to find its last telling run and last success."""

disable_created_metrics()  # type: ignore[no-untyped-call] # no ``_created`` series: they double the counters for nothing

_RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, float("inf"))
_REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))
_FEED_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, float("inf"))


class SyncdMetrics:
    """Counters, gauges and histograms of runs, products and requests, per target."""

    def __init__(self, targets: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        ProcessCollector(registry=registry)
        Info("syncd_build", "The running syncd.", registry=registry).info({"version": __version__})
        self.runs = Counter(
            "syncd_runs", "Runs by target and outcome.", ["target", "outcome"], registry=registry
        )
        self.products = Counter(
            "syncd_products",
            "Products by target and what happened to them (created, updated, deleted, "
            "rejected, failed, held).",
            ["target", "operation"],
            registry=registry,
        )
        self.requests = Counter(
            "syncd_http_requests",
            "Requests to the targets, by endpoint and status (2xx, 4xx codes, 5xx codes, error).",
            ["target", "endpoint", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "syncd_http_request_duration_seconds",
            "Time a target took to answer a request.",
            ["target", "endpoint"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self._request_series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        """The children of ``requests`` and ``request_seconds`` met so far, by labels."""
        self.retries = Counter(
            "syncd_retries",
            "Requests retried, by target and the status that caused the retry.",
            ["target", "status"],
            registry=registry,
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the target's last successful run finished (POSIX seconds; 0: never).",
            ["target"],
            registry=registry,
        )
        self.last_run = Gauge(
            "syncd_last_run_timestamp_seconds",
            "When the target's last run finished, whatever its outcome (POSIX seconds).",
            ["target"],
            registry=registry,
        )
        self.run_seconds = Histogram(
            "syncd_run_duration_seconds",
            "How long a target's run took.",
            ["target"],
            buckets=_RUN_BUCKETS,
            registry=registry,
        )
        self.drift = Gauge(
            "syncd_drift_products",
            "Products the target holds minus products state says it holds (last run).",
            ["target"],
            registry=registry,
        )
        self.in_state = Gauge(
            "syncd_products_in_state",
            "Products the target acknowledged, as kept in state.",
            ["target"],
            registry=registry,
        )
        self.open_rejections = Gauge(
            "syncd_open_rejections",
            "Products currently refused (open rejections in state).",
            ["target"],
            registry=registry,
        )
        self.running = Gauge(
            "syncd_run_in_progress",
            "1 while a run is going (in this process, or recorded as running in state by "
            "another process that still holds the target's lease), else 0.",
            registry=registry,
        )
        self._running_here = 0
        self._running_in_state = False
        self._run_counts: dict[str, dict[str, int]] = {}
        self._counts_lock = threading.Lock()
        self.last_outcome = Gauge(
            "syncd_last_run_outcome",
            "1 for the outcome of the target's last telling run (ok, partial, blocked, "
            "failed), 0 for the others; locked and interrupted runs leave it as it was.",
            ["target", "outcome"],
            registry=registry,
        )
        self.progress = RunProgress()
        """The running (or last) run's sending, per target: pass it to the ``Reconciler``."""
        self.products_done = Gauge(
            "syncd_run_products_done",
            "Products the target's current (or last) run has settled so far.",
            ["target"],
            registry=registry,
        )
        self.products_planned = Gauge(
            "syncd_run_products_total",
            "Products the target's current (or last) run sends.",
            ["target"],
            registry=registry,
        )
        self.eta = Gauge(
            "syncd_run_eta_seconds",
            "Seconds the target's current run still needs at its rate so far (-1: unknown, "
            "as while the read goes on and the total still grows).",
            ["target"],
            registry=registry,
        )
        self.feed_latency = Histogram(
            "syncd_feed_latency_seconds",
            "From a change (its changed_at when the feed says, else when syncd received it) "
            "to the target's acknowledgement of its targeted sync, by target and feed.",
            ["target", "feed"],
            buckets=_FEED_BUCKETS,
            registry=registry,
        )
        self.feed_lag = Gauge(
            "syncd_feed_lag_seconds",
            "How long the feed's oldest event still waiting for its targeted sync has waited "
            "(0: none waiting).",
            ["feed"],
            registry=registry,
        )
        self.feed_connected = Gauge(
            "syncd_feed_connected",
            "1 while the change feed is connected (taking events), else 0.",
            ["feed"],
            registry=registry,
        )
        self.feed_last_event = Gauge(
            "syncd_feed_last_event_timestamp_seconds",
            "When the feed last received an event (POSIX seconds; 0: never).",
            ["feed"],
            registry=registry,
        )
        self.feed_missed_since = Gauge(
            "syncd_feed_missed_since_timestamp_seconds",
            "Since when the feed may have missed changes (lost connection, a push that "
            "failed) until a scheduled run repairs them (POSIX seconds; 0: nothing missed).",
            ["feed"],
            registry=registry,
        )
        self.feed_gone_events = Counter(
            "syncd_feed_gone_events",
            "Feed events for keys the source no longer has (deleted on the targets).",
            ["feed"],
            registry=registry,
        )
        self.feed_runs = Counter(
            "syncd_feed_runs",
            "A change feed's targeted syncs by target and outcome (not in syncd_runs_total, "
            "which counts the scheduled and CLI runs).",
            ["target", "outcome"],
            registry=registry,
        )
        self.feed_products = Counter(
            "syncd_feed_products",
            "Products a change feed's targeted syncs created, updated, deleted, rejected, "
            "failed or held, by target (not in syncd_products_total).",
            ["target", "operation"],
            registry=registry,
        )
        self.repaired = Gauge(
            "syncd_feed_repaired_products",
            "Products the target's last scheduled run had to create, update or delete while "
            "change feeds are configured: what the feeds missed (0 is a healthy feed).",
            ["target"],
            registry=registry,
        )
        for target in targets:
            self.add_target(target)

    # -- the change feeds -------------------------------------------------------------
    def add_feed(self, feed: str, targets: Iterable[str]) -> None:
        """Create a feed's series at zero."""
        for series in (self.feed_lag, self.feed_connected, self.feed_last_event):
            series.labels(feed)
        self.feed_missed_since.labels(feed)
        self.feed_gone_events.labels(feed)
        for target in targets:
            self.feed_latency.labels(target, feed)
            self.repaired.labels(target)

    def feed_acknowledged(self, target: str, feed: str, latency_s: float) -> None:
        """A feed's event reached ``target`` ``latency_s`` after the change."""
        self.feed_latency.labels(target, feed).observe(latency_s)

    def feed_run(self, target: str, outcome: str, counts: Mapping[str, int]) -> None:
        """One targeted sync of ``target`` ended ``outcome``, ``counts`` by operation."""
        self.feed_runs.labels(target, outcome).inc()
        for operation, count in counts.items():
            self.feed_products.labels(target, operation).inc(count)

    def feed_gone(self, feed: str, events: int) -> None:
        """``events`` of ``feed`` named keys the source no longer has."""
        self.feed_gone_events.labels(feed).inc(events)

    def observe_feed(
        self,
        feed: str,
        *,
        connected: bool,
        last_event_at: float | None,
        missed_since: float | None,
        lag_s: float,
    ) -> None:
        """A feed's status now."""
        self.feed_connected.labels(feed).set(1 if connected else 0)
        self.feed_last_event.labels(feed).set(last_event_at or 0)
        self.feed_missed_since.labels(feed).set(missed_since or 0)
        self.feed_lag.labels(feed).set(lag_s)

    def observe_repaired(self, target: str, products: int) -> None:
        """What the target's last scheduled run repaired that the feeds missed."""
        self.repaired.labels(target).set(products)

    def add_target(self, target: str) -> None:
        """Create the target's series at zero, so ``rate()`` and ``increase()`` see its
        first failure (a series born at 1 has no increase)."""
        for outcome in OUTCOMES:
            self.runs.labels(target, outcome)
        for operation in OPERATIONS:
            self.products.labels(target, operation)
        self.run_seconds.labels(target)
        self.last_success.labels(target)
        self.last_run.labels(target)
        self.in_state.labels(target)
        self.open_rejections.labels(target)
        for outcome in _TELLING:
            self.last_outcome.labels(target, outcome)

    def set_outcome(self, target: str, outcome: str) -> None:
        """The target's last telling outcome (others go to 0); ignored for the rest."""
        if outcome in _TELLING:
            for each in _TELLING:
                self.last_outcome.labels(target, each).set(1 if each == outcome else 0)

    # -- the executor's Events --------------------------------------------------------
    def request(self, target: str, endpoint: str, status: str, seconds: float) -> None:
        series = self._request_series.get((target, endpoint, status))
        if series is None:
            # ``labels`` validates and looks up under a lock: once per series, not per request
            series = self._request_series[(target, endpoint, status)] = (
                self.requests.labels(target, endpoint, status),
                self.request_seconds.labels(target, endpoint),
            )
        series[0].inc()
        series[1].observe(seconds)
        self._count(target, "requests answered")

    def retry(self, target: str, status: str) -> None:
        self.retries.labels(target, status).inc()
        self._count(target, "retried")

    def _count(self, target: str, what: str) -> None:
        if self._running_here:
            with self._counts_lock:
                counts = self._run_counts.setdefault(target, {})
                counts[what] = counts.get(what, 0) + 1

    def run_progress(self) -> dict[str, dict[str, int]]:
        """Per target, what the run this process is doing has done so far (requests
        answered, retried); empty when it is doing none. For the status page."""
        with self._counts_lock:
            return {t: dict(c) for t, c in self._run_counts.items()} if self._running_here else {}

    # -- runs and state ---------------------------------------------------------------
    def observe_report(self, report: RunReport, now: float | None = None) -> None:
        """Count one run: its outcome, products by operation, duration, drift, per target."""
        now = time.time() if now is None else now
        for target in report.targets:
            name = target.target
            self.runs.labels(name, target.outcome).inc()
            telling = tells(target.outcome, target.mode, target.mode_reason)
            if telling:
                self.set_outcome(name, target.outcome)
            if target.outcome == "locked":
                continue  # another process ran it: nothing happened here
            counts = {
                "created": target.created,
                "updated": target.updated + target.refreshed,
                "deleted": target.deleted,
                "rejected": target.rejected,
                "failed": target.failed,
                "held": target.held,
            }
            for operation, count in counts.items():
                self.products.labels(name, operation).inc(count)
            self.run_seconds.labels(name).observe(target.duration_ms / 1000)
            self.last_run.labels(name).set(now)
            if target.ok and telling:  # a resend of a few keys is no successful run
                self.last_success.labels(name).set(now)
            if target.drift is not None:
                self.drift.labels(name).set(target.drift)

    def observe_failure(self, targets: list[str], now: float | None = None) -> None:
        """A run that raised before it could report: count it as failed for each target."""
        now = time.time() if now is None else now
        for name in targets:
            self.runs.labels(name, "failed").inc()
            self.set_outcome(name, "failed")
            self.last_run.labels(name).set(now)

    def observe_state(self, target: str, *, products: int, open_rejections: int) -> None:
        """What state holds for a target now."""
        self.in_state.labels(target).set(products)
        self.open_rejections.labels(target).set(open_rejections)

    def seed_last_success(self, target: str, finished_at: float) -> None:
        """The last success recorded in state before this process started."""
        self.last_success.labels(target).set(finished_at)

    def observe_runs(self, target: str, runs: Sequence[RunRecord], *, now: float) -> bool:
        """Set the target's state gauges from its runs in state (newest first): the last
        telling run's outcome, the last successful and the last finished run; whether one
        is recorded as running. A resend tells nothing about the target."""
        telling = next((r for r in runs if tells(r.outcome, r.mode, r.mode_reason)), None)
        if telling is not None:
            self.set_outcome(target, telling.outcome)
        success = next(
            (
                r.finished_at
                for r in runs
                if r.finished_at and r.outcome == "ok" and tells(r.outcome, r.mode, r.mode_reason)
            ),
            None,
        )
        if success is not None:
            self.last_success.labels(target).set(success)
        finished = next((r.finished_at for r in runs if r.finished_at), None)
        if finished is not None:
            self.last_run.labels(target).set(finished)
        return any(r.outcome == "running" for r in runs[:1])

    def refresh_from_state(
        self, store: StateStore, targets: Iterable[str], now: float | None = None
    ) -> None:
        """Read every per-target state gauge back from state (at start, after every run,
        on a scrape): every replica on one state database then reports the same truth."""
        now = time.time() if now is None else now
        running = False
        for target in targets:
            try:
                runs = store.recent_runs(target, limit=_RUNS_READ, feed=False)
                if self.observe_runs(target, runs, now=now):
                    running = running or store.lease_holder(target, now) is not None
                self.observe_state(
                    target,
                    products=store.count(target),
                    open_rejections=len(store.open_rejections(target)),
                )
            except SyncdError:
                continue  # unreadable now: the gauges keep their last values
        self._running_in_state = running
        self._show_running()

    def run_started(self) -> None:
        """This process started a run."""
        with self._counts_lock:
            self._run_counts = {}
        self._running_here += 1
        self._show_running()

    def run_ended(self) -> None:
        """This process's run ended."""
        self._running_here = max(0, self._running_here - 1)
        self._show_running()

    def _show_running(self) -> None:
        self.running.set(1 if self._running_here or self._running_in_state else 0)

    # -- exposition -------------------------------------------------------------------
    def observe_progress(self) -> None:
        """The progress gauges, from ``progress`` as it is now."""
        for each in self.progress.snapshot():
            self.products_done.labels(each.target).set(each.done)
            self.products_planned.labels(each.target).set(each.total)
            eta = None if each.planning else each.eta_s  # while reading, the total grows
            self.eta.labels(each.target).set(-1 if eta is None else eta)

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        self.observe_progress()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Progress:
    """Forwards the executor's events and prints a line on stderr now and then (for a TTY).

    The counts are approximate (unlocked increments from worker threads): display only.
    """

    def __init__(
        self, events: Events, interval_s: float = 10.0, progress: RunProgress | None = None
    ) -> None:
        self._events = events
        self._progress = progress
        """Per-target done / total, rate and ETA, printed with each line when given."""
        self._interval_s = interval_s
        self._requests = 0
        self._retries = 0
        self._started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._report, name="syncd-progress", daemon=True)

    def request(self, target: str, endpoint: str, status: str, seconds: float) -> None:
        self._requests += 1
        self._events.request(target, endpoint, status, seconds)

    def retry(self, target: str, status: str) -> None:
        self._retries += 1
        self._events.retry(target, status)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=1)

    def _report(self) -> None:
        while not self._done.wait(self._interval_s):
            elapsed = int(time.monotonic() - self._started)
            sys.stderr.write(
                f"syncd: {self._requests} requests answered, {self._retries} retried, "
                f"{elapsed // 60}m{elapsed % 60:02d}s\n"
            )
            for target in self._progress.snapshot() if self._progress else ():
                sys.stderr.write(f"syncd:   {target.line()}\n")
            sys.stderr.flush()


__all__ = ["OPERATIONS", "OUTCOMES", "Progress", "SyncdMetrics"]
