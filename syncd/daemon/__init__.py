"""The daemon (``syncd run``, the container's command): syncs on a schedule until SIGTERM.

APScheduler 3 fires the incremental and the full-refresh schedules into one worker
thread, so two runs never overlap in a process; the reconciler's leases keep other
processes off a target. Daemons on one state database divide the targets between them
(``syncd.leases``: a heartbeat per replica, a fair share each) and run at once the
targets a replica that left or died had. At start it catches up a scheduled run missed
while no daemon ran; after each run it announces outcome changes (``syncd.alerts``) and prunes old
history. Also serves /healthz, /readyz and /metrics, and computes the next scheduled
runs for ``syncd status`` (``schedule.py``). The only package that imports APScheduler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import httpx
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from syncd.alerts import Alerter
from syncd.config import SyncdConfig
from syncd.daemon.schedule import (
    MissedRun,
    Triggers,
    crontab_day_of_week,
    missed_run,
    next_fire,
    next_runs,
    schedule_timezone,
    schedule_triggers,
)
from syncd.errors import StateSchemaError, SyncdError
from syncd.feeds.runner import FeedRunner
from syncd.health import FAILING, HealthServer, Probes
from syncd.leases import ReplicaHeartbeat, assign_targets, holder_id
from syncd.logs import scrub
from syncd.metrics import Progress, SyncdMetrics
from syncd.model import RunRecord
from syncd.reconcile import Reconciler, RunOptions, RunReport
from syncd.runs import names_keys
from syncd.state import StateStore
from syncd.statuspage import status_page

log = structlog.get_logger("syncd.daemon")

StoreFactory = Callable[[], StateStore]
"""Opens the state store (and applies pending migrations)."""

SYNC_JOB, FULL_JOB, REASSERT_JOB, CATCH_UP_JOB = "sync", "full_refresh", "reassert", "catch_up"
TAKEOVER_JOB = "takeover"
_HARD_EXIT = 130
_NOT_A_RUN = ("running", "interrupted")
"""Runs that never got to the end: they don't count as the night's run."""
_SCRAPE_REFRESH_S = 10.0
"""A scrape of /metrics reads the state gauges back from state at most this often."""
_DAY_S = 86_400.0
_KEYED_RUNS_READ = 5000
"""Runs read back to find the last scheduled one behind a change feed's targeted syncs."""
_ALERTS_CLOSE_S = 10.0
"""At shutdown or the end of ``syncd sync``: how long queued alerts may still take."""


# --------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------


def _observe_state(store: StateStore, config: SyncdConfig, metrics: SyncdMetrics) -> None:
    """The per-target state gauges, read back from state (what every replica agrees on)."""
    metrics.refresh_from_state(store, [t.name for t in config.targets if t.enabled])


def record_failed_runs(
    store: StateStore, targets: list[str], *, mode: str, reason: str, error: str
) -> dict[str, int]:
    """Record a run that raised before it could report as failed for each target (so
    history shows it and the next run's alert compares with it); target -> run id."""
    holder = holder_id()
    ids: dict[str, int] = {}
    now = time.time()
    for name in targets:
        try:
            run_id = store.start_run(name, mode=mode, mode_reason=reason, holder=holder)
            store.finish_run(
                RunRecord(
                    id=run_id,
                    target=name,
                    started_at=now,
                    finished_at=time.time(),
                    mode=mode,
                    mode_reason=reason,
                    outcome="failed",
                    error=scrub(error),
                    holder=holder,
                )
            )
        except SyncdError as exc:
            log.warning("syncd.daemon.state_unreadable", target=name, error=str(exc))
            continue
        ids[name] = run_id
    return ids


def prune_history(store: StateStore, config: SyncdConfig, targets: list[str]) -> None:
    """Prune the targets' runs and stale local rejections past ``[state] keep_runs_days``
    and ``keep_runs`` (indexed deletes; a target's latest run and open rejections stay)."""
    keep = config.state
    before = time.time() - keep.keep_runs_days * _DAY_S if keep.keep_runs_days else 0.0
    for name in targets:
        try:
            runs = store.prune_runs(name, before=before, keep=keep.keep_runs)
            rejections = store.prune_stale_rejections(name, before=before) if before else 0
        except SyncdError as exc:
            log.warning("syncd.daemon.prune_failed", target=name, error=str(exc))
            continue
        if runs or rejections:
            log.info("syncd.daemon.history_pruned", target=name, runs=runs, rejections=rejections)


def find_missed_run(store: StateStore, config: SyncdConfig, now: datetime) -> MissedRun | None:
    """The scheduled run that fell while no daemon ran, judged by the runs in state."""
    last_started: dict[str, float] = {}
    last_full: dict[str, float] = {}
    for target in config.targets:
        if not target.enabled:
            continue
        recent = store.recent_runs(target.name, limit=50, feed=False)  # past a busy feed
        if len(recent) == 50 and all(names_keys(r.mode, r.mode_reason) for r in recent):
            # many resends of a few keys: look further back for the scheduled runs
            recent = store.recent_runs(target.name, limit=_KEYED_RUNS_READ, feed=False)
        runs = [
            run
            for run in recent
            if not names_keys(run.mode, run.mode_reason)  # a few keys: not the night's run
        ]
        if not runs:
            continue  # never ran: nothing was missed
        done = [run for run in runs if run.outcome not in _NOT_A_RUN]
        last_started[target.name] = done[0].started_at if done else runs[-1].started_at
        full = next((run for run in done if run.mode == "full"), None)
        if full is not None:
            last_full[target.name] = full.started_at
    return missed_run(config.schedule, now, last_started, last_full)


def _store_reasons(store: StateStore) -> list[str]:
    try:
        store.ping()
    except StateSchemaError as exc:
        return [str(exc)]
    except SyncdError as exc:
        return [f"state database unreachable: {exc}"]
    return []


class Daemon:
    """Schedules runs in one worker thread and serves the probes; ``run_daemon`` drives it."""

    def __init__(
        self,
        config: SyncdConfig,
        open_state: StoreFactory,
        *,
        environ: Mapping[str, str] | None = None,
        transports: Mapping[str, httpx.BaseTransport] | None = None,
        progress: bool = False,
        alerter: Alerter | None = None,
    ) -> None:
        self.config = config
        self._open_state = open_state
        self._environ = environ
        self._transports = transports
        self._progress = progress
        self.metrics = SyncdMetrics(t.name for t in config.targets if t.enabled)
        self.alerter = alerter or Alerter(config, environ=environ)
        self.missed: MissedRun | None = None
        """The scheduled run found missed at start (and caught up), if any."""
        self.store: StateStore | None = None
        self._stopping = threading.Event()
        self._run_stop: threading.Event | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._run_lock = threading.Lock()
        self._scheduler: BlockingScheduler | None = None
        self._scheduler_thread: threading.Thread | None = None
        self._server: HealthServer | None = None
        self._refreshed_at = 0.0
        self.runs_finished = 0
        """Runs done since start (whatever their outcome)."""
        self.stop_requested = False
        """Set by ``request_stop`` (a plain flag: signal handlers must not take locks)."""
        self.replica = holder_id()
        """This daemon among the replicas sharing the state database."""
        self.heartbeat: ReplicaHeartbeat | None = None
        self._takeover: dict[str, float] = {}
        """Targets gained from a replica that left: run at once; given up at the deadline
        (monotonic seconds) if their lease stays held."""
        self._takeover_lock = threading.Lock()
        self.feeds: FeedRunner | None = (
            FeedRunner(
                config,
                metrics=self.metrics,
                environ=environ,
                transports=transports,
            )
            if config.feeds
            else None
        )
        """The change feeds, when configured: targeted syncs between scheduled runs."""

    # -- life cycle ---------------------------------------------------------------------
    def start(self, *, run_at_start: bool | None = None) -> None:
        """Open state (migrating it), start the listener and the scheduler; return at once."""
        config = self.config
        schedule = config.schedule
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        triggers = schedule_triggers(schedule)
        now = datetime.now(UTC)
        start_now = schedule.run_at_start if run_at_start is None else run_at_start
        scheduler = self._scheduler_for(triggers, start_now=start_now, now=now)
        self.store = store = self._open_state()
        try:
            if schedule.share_targets:
                self.heartbeat = ReplicaHeartbeat(
                    store, self.replica, schedule.lease_ttl_s, self._replicas_beat
                ).start()
            self._seed(store)
            if schedule.catch_up and not start_now:
                self._catch_up(scheduler, store, now)
            feeds = self.feeds
            if config.health.enabled:
                self._server = HealthServer(
                    config.health.host,
                    config.health.port,
                    Probes(
                        alive=self.alive,
                        ready=self.not_ready,
                        metrics=self.render_metrics,
                        status=status_page(
                            config,
                            lambda: self.store,
                            self.metrics.run_progress,
                            feeds=feeds.rows if feeds is not None else None,
                        ),
                        post=feeds.post if feeds is not None else None,
                    ),
                ).start()
            if feeds is not None:
                feeds.start(store)
        except BaseException:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            store.close()
            raise
        self._scheduler = scheduler
        self._scheduler_thread = threading.Thread(
            target=scheduler.start, name="syncd-scheduler", daemon=True
        )
        self._scheduler_thread.start()
        log.info(
            "syncd.daemon.started",
            cron=None if schedule.interval_s is not None else schedule.cron,
            interval_s=schedule.interval_s,
            full_refresh_cron=schedule.full_refresh_cron or None,
            timezone=schedule.timezone,
            run_at_start=start_now,
            next_sync=_iso(now if start_now else next_fire(triggers.sync, now)),
            next_full_refresh=_iso(next_fire(triggers.full_refresh, now)),
            targets=",".join(t.name for t in config.targets if t.enabled),
            health=self._server.url if self._server else None,
        )

    def _scheduler_for(
        self, triggers: Triggers, *, start_now: bool, now: datetime
    ) -> BlockingScheduler:
        schedule = self.config.schedule
        scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": max(1, round(schedule.misfire_grace_s)),
            },
            timezone=schedule_timezone(schedule),
        )
        if triggers.sync is not None or start_now:
            scheduler.add_job(
                self.run_once,
                triggers.sync or "date",
                id=SYNC_JOB,
                name="incremental sync",
                kwargs={"full": False, "reason": "", "trigger": "schedule"},
                **({"next_run_time": now} if start_now else {}),
            )
        if triggers.full_refresh is not None:
            scheduler.add_job(
                self.run_once,
                triggers.full_refresh,
                id=FULL_JOB,
                name="full refresh",
                kwargs={
                    "full": True,
                    "reason": "scheduled full refresh "
                    f"(schedule.full_refresh_cron = {schedule.full_refresh_cron!r})",
                    "trigger": "full_refresh_cron",
                },
            )
        return scheduler

    def _catch_up(self, scheduler: BlockingScheduler, store: StateStore, now: datetime) -> None:
        try:
            missed = find_missed_run(store, self.config, now)
        except SyncdError as exc:
            log.warning("syncd.daemon.catch_up_unknown", error=str(exc))
            return
        if missed is None:
            return
        self.missed = missed
        what = "full refresh" if missed.full else "sync"
        reason = f"scheduled {what} missed (due {_iso(missed.due_at)})"
        scheduler.add_job(
            self.run_once,
            "date",
            run_date=now,
            id=CATCH_UP_JOB,
            name=f"missed {what}",
            kwargs={
                "full": missed.full,
                "reason": reason,
                "trigger": "catch_up",
            },
        )
        log.info(
            "syncd.daemon.catching_up",
            reason=reason,
            full=missed.full,
            due_at=_iso(missed.due_at),
            last_run_at=_iso(missed.last_run_at),
        )

    def _seed(self, store: StateStore) -> None:
        _observe_state(store, self.config, self.metrics)
        self._refreshed_at = time.monotonic()

    def render_metrics(self) -> tuple[bytes, str]:
        """/metrics: the state gauges read back from state first (at most every few
        seconds), so a run another replica is doing or just did shows here too."""
        store = self.store
        if store is not None and time.monotonic() - self._refreshed_at >= _SCRAPE_REFRESH_S:
            self._refreshed_at = time.monotonic()
            _observe_state(store, self.config, self.metrics)
        if self.feeds is not None:
            self.feeds.observe()
        return self.metrics.render()

    def request_stop(self) -> None:
        """Ask the daemon to stop; safe from any thread and from a signal handler."""
        self.stop_requested = True

    def wait(self, poll_s: float = 0.2) -> None:
        """Block until a stop is requested or the scheduler thread died."""
        while not self.stop_requested and self.alive():
            time.sleep(poll_s)

    def shutdown(self) -> bool:
        """Stop the run in progress (within the grace period) and the scheduler.

        Returns whether everything stopped in time; when not, a run thread is still going.
        """
        grace = self.config.schedule.shutdown_grace_s
        log.info(
            "syncd.daemon.stopping",
            run_in_progress=not self._idle.is_set(),
            grace_s=grace,
        )
        self._stopping.set()
        run_stop = self._run_stop
        if run_stop is not None:
            run_stop.set()
        scheduler, thread = self._scheduler, self._scheduler_thread
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
        if thread is not None:
            thread.join(timeout=5)
        if self.feeds is not None:
            self.feeds.stop(grace + 15)  # waiting keys are left unacknowledged
        finished = self._idle.wait(grace + 15)
        if self.heartbeat is not None:
            self.heartbeat.stop()  # the other replicas take this one's targets now
        self.alerter.close(_ALERTS_CLOSE_S)
        if self._server is not None:
            self._server.stop()
        if finished and self.store is not None:
            self.store.close()
        return finished

    # -- probes ---------------------------------------------------------------------------
    def alive(self) -> bool:
        """Liveness: the process and its scheduler run (failing syncs don't make it dead)."""
        thread = self._scheduler_thread
        return thread is not None and thread.is_alive()

    def not_ready(self) -> list[str]:
        """Readiness: the state database answers and its schema is current. Failing runs
        are no reason: they go to metrics and alerts, which an unready pod would silence."""
        return _store_reasons(self.store) if self.store is not None else ["not started"]

    @property
    def health_url(self) -> str | None:
        return self._server.url if self._server else None

    # -- one run --------------------------------------------------------------------------
    def run_once(self, *, full: bool, reason: str, trigger: str) -> RunReport | None:
        """One run (the scheduled job); None when the daemon is stopping or the run raised."""
        store = self.store
        if store is None or self._stopping.is_set():
            return None
        with self._run_lock:
            self._idle.clear()
            try:
                run_stop = threading.Event()
                self._run_stop = run_stop
                if self._stopping.is_set():  # the stop came while waiting for the lock
                    return None
                try:
                    # no targeted sync of a change feed pushes a target meanwhile
                    with self.feeds.exclusive() if self.feeds else contextlib.nullcontext():
                        return self._run(store, run_stop, full=full, reason=reason, trigger=trigger)
                finally:
                    self.runs_finished += 1
            finally:
                self._run_stop = None
                self._idle.set()

    def _run(
        self, store: StateStore, stop: threading.Event, *, full: bool, reason: str, trigger: str
    ) -> RunReport | None:
        config = self.config
        names = self._targets_to_run(trigger)
        mode = "full" if full else "incremental"
        if not names:
            log.info("syncd.daemon.run_skipped", mode=mode, trigger=trigger, replica=self.replica)
            return None
        log.info(
            "syncd.daemon.run_started",
            mode=mode,
            trigger=trigger,
            reason=reason or None,
            targets=",".join(names),
            replica=self.replica,
        )
        started = time.monotonic()
        options = (
            RunOptions(full=full, full_reason=reason, targets=tuple(names))
            if full
            else RunOptions(targets=tuple(names))
        )
        self.metrics.run_started()
        try:
            store.upgrade()  # a state database replaced by an empty one is migrated again
            with contextlib.ExitStack() as stack:
                events: SyncdMetrics | Progress = self.metrics
                if self._progress:
                    events = stack.enter_context(
                        Progress(self.metrics, progress=self.metrics.progress)
                    )
                reconciler = Reconciler(
                    config,
                    store,
                    environ=self._environ,
                    transports=self._transports,
                    events=events,
                    stop=stop,
                    progress=self.metrics.progress,
                )
                missed = self.feeds.reconcile_started() if self.feeds is not None else {}
                report = reconciler.sync(options)
                if self.feeds is not None:
                    self.feeds.reconcile_finished(report, missed)
        except Exception as exc:  # the daemon outlives a failed run
            now = time.time()
            self.metrics.observe_failure(names, now)
            run_ids = record_failed_runs(
                store, names, mode=mode, reason=reason or "scheduled sync", error=str(exc)
            )
            self.alerter.observe_failure(names, str(exc), store, run_ids)
            _observe_state(store, config, self.metrics)
            log.error(
                "syncd.daemon.run_failed",
                mode=mode,
                error=str(exc),
                exc_info=not isinstance(exc, SyncdError),
            )
            return None
        finally:
            self.metrics.run_ended()
        now = time.time()
        self.metrics.observe_report(report, now)
        for target in report.targets:
            if target.outcome == "locked":
                log.info("syncd.daemon.target_locked", target=target.target, reason=target.error)
            else:  # run by this replica: no takeover pending any more
                with self._takeover_lock:
                    self._takeover.pop(target.target, None)
        self.alerter.observe(report, store)
        prune_history(store, config, [t.target for t in report.targets if t.outcome != "locked"])
        _observe_state(store, config, self.metrics)
        self._follow_up_doubts(report)
        failing = any(t.outcome in FAILING for t in report.targets)
        (log.warning if failing else log.info)(
            "syncd.daemon.run_finished",
            mode=mode,
            trigger=trigger,
            outcomes=" ".join(f"{t.target}={t.outcome}" for t in report.targets),
            duration_ms=int((time.monotonic() - started) * 1000),
            next_sync=_iso(self._next_sync()),
        )
        return report

    # -- sharing the targets with other replicas ------------------------------------------
    def _targets_to_run(self, trigger: str) -> list[str]:
        """This replica's share of the enabled targets, from a fresh heartbeat (all of them
        when targets are not shared); for a takeover, the gained ones still pending."""
        enabled = [t.name for t in self.config.targets if t.enabled]
        heartbeat = self.heartbeat
        if heartbeat is None:
            return enabled
        live = heartbeat.beat()
        assigned = assign_targets(enabled, live)
        mine = [name for name in enabled if assigned.get(name) == self.replica]
        if trigger == TAKEOVER_JOB:
            now = time.monotonic()
            with self._takeover_lock:
                for name, deadline in list(self._takeover.items()):
                    if name not in mine or deadline < now:
                        del self._takeover[name]
                return [name for name in mine if name in self._takeover]
        if len(live) > 1:
            log.info(
                "syncd.daemon.targets_shared",
                replica=self.replica,
                replicas=len(live),
                mine=",".join(mine),
                others=len(enabled) - len(mine),
            )
        return mine

    def _replicas_beat(self, before: tuple[str, ...], after: tuple[str, ...]) -> None:
        """After each heartbeat: when replicas left, run at once the targets this one gained
        from them (their runs may have died half-way; a run that has nothing left to
        send sends nothing); retry those still locked by a dying holder's lease."""
        scheduler = self._scheduler
        if set(before) - set(after):
            enabled = [t.name for t in self.config.targets if t.enabled]
            had, has = assign_targets(enabled, before), assign_targets(enabled, after)
            gained = [
                name
                for name in enabled
                if has.get(name) == self.replica and had.get(name) != self.replica
            ]
            if gained:
                deadline = time.monotonic() + 2 * self.config.schedule.lease_ttl_s
                with self._takeover_lock:
                    self._takeover.update(dict.fromkeys(gained, deadline))
                log.info(
                    "syncd.daemon.targets_taken_over",
                    replica=self.replica,
                    targets=",".join(gained),
                    left=",".join(sorted(set(before) - set(after))),
                )
        with self._takeover_lock:
            pending = bool(self._takeover)
        if not pending or scheduler is None or not scheduler.running or self._stopping.is_set():
            return
        if scheduler.get_job(TAKEOVER_JOB) is None:
            scheduler.add_job(
                self.run_once,
                "date",
                run_date=datetime.now(UTC),
                id=TAKEOVER_JOB,
                name="take over a departed replica's targets",
                replace_existing=True,
                kwargs={"full": False, "reason": "", "trigger": TAKEOVER_JOB},
            )

    def _follow_up_doubts(self, report: RunReport) -> None:
        """Schedule one more run for when the writes this run left in doubt may be
        re-asserted, so a write that lands late is repaired minutes later, not at the next
        scheduled run."""
        scheduler = self._scheduler
        doubtful = [t for t in report.targets if t.in_doubt]
        if not doubtful or scheduler is None or self._stopping.is_set():
            return
        window = max(self.config.target(t.target).in_doubt_window_s for t in doubtful)
        when = datetime.now(UTC) + timedelta(seconds=window + 1)
        scheduler.add_job(
            self.run_once,
            "date",
            run_date=when,
            id=REASSERT_JOB,
            name="re-assert writes in doubt",
            replace_existing=True,
            kwargs={"full": False, "reason": "", "trigger": "in_doubt"},
        )
        log.info(
            "syncd.daemon.reassert_scheduled",
            at=_iso(when),
            products=sum(t.in_doubt for t in doubtful),
            targets=",".join(t.target for t in doubtful),
        )

    def _next_sync(self) -> datetime | None:
        scheduler = self._scheduler
        job = scheduler.get_job(SYNC_JOB) if scheduler is not None else None
        when: datetime | None = getattr(job, "next_run_time", None)
        return when


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat()


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``request_stop``; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        # Only plain assignments here: the main thread may be inside a lock.
        received.append(signum)
        if len(received) > 1:
            os.write(2, b"syncd: second signal, exiting at once\n")
            os._exit(_HARD_EXIT)
        request_stop()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_daemon(
    config: SyncdConfig,
    open_state: StoreFactory,
    *,
    run_at_start: bool | None = None,
    environ: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; the exit code (0 after a signal, 1 if the scheduler died)."""
    daemon = Daemon(
        config,
        open_state,
        environ=environ,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    with _signals(daemon.request_stop):
        daemon.start(run_at_start=run_at_start)
        try:
            daemon.wait()
        finally:
            code = 0 if daemon.stop_requested else 1
            finished = daemon.shutdown()
            log.info("syncd.daemon.stopped", exit_code=code, run_abandoned=not finished)
    if not finished:
        # The run's thread is stuck past the grace period (e.g. still reading the source);
        # the interpreter would wait for it. Its acks are committed; its lease expires.
        logging.shutdown()
        os._exit(code)
    return code


def sync_once(
    config: SyncdConfig,
    store: StateStore,
    options: RunOptions,
    *,
    metrics_port: int | None = None,
    progress: bool = False,
    environ: Mapping[str, str] | None = None,
    metrics: SyncdMetrics | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """One run outside the daemon (``syncd sync``), serving /metrics while it lasts if asked.

    SIGTERM/SIGINT set ``stop``: no new requests, in-flight ones finish within the grace
    period and their acknowledgements are committed; a second signal exits at once.
    """
    metrics = metrics or SyncdMetrics(t.name for t in config.targets if t.enabled)
    stop = stop or threading.Event()
    alerter = Alerter(config, environ=environ)
    with contextlib.ExitStack() as stack:
        stack.callback(alerter.close, _ALERTS_CLOSE_S)
        stack.enter_context(_signals(stop.set))
        if metrics_port is not None:
            stack.enter_context(
                HealthServer(
                    config.health.host,
                    metrics_port,
                    Probes(
                        alive=lambda: True,
                        ready=lambda: _store_reasons(store),
                        metrics=metrics.render,
                    ),
                )
            )
        events: Any = (
            stack.enter_context(Progress(metrics, interval_s=5.0, progress=metrics.progress))
            if progress
            else metrics
        )
        report = Reconciler(
            config, store, environ=environ, events=events, stop=stop, progress=metrics.progress
        ).sync(options)
        metrics.observe_report(report)
        alerter.observe(report, store)
        prune_history(store, config, [t.target for t in report.targets if t.outcome != "locked"])
        _observe_state(store, config, metrics)
        return report


__all__ = [
    "Daemon",
    "MissedRun",
    "Triggers",
    "crontab_day_of_week",
    "find_missed_run",
    "missed_run",
    "next_runs",
    "prune_history",
    "run_daemon",
    "schedule_triggers",
    "sync_once",
]
