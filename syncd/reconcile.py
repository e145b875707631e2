"""One run: read the source once, plan every target, guard, send, acknowledge, report.

``reconcile_once`` (``Reconciler.sync``) is a plain function; the daemon only schedules
it and the CLI only calls it. ``Reconciler.plan`` is the same run up to the plan, sending
and writing nothing. The stages themselves live in ``syncd.stages``; this module wires
them (opening → reading/planning → deciding → sending → finishing) and re-exports the
names other modules and tests use.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import structlog

from syncd.config import SyncdConfig
from syncd.diff import Plan
from syncd.executor import Clock, Events, Execution, SystemClock
from syncd.leases import LeaseKeeper, holder_id
from syncd.model import Spool
from syncd.progress import RunProgress
from syncd.proof import DeleteProof
from syncd.runs import RunOptions, RunReport, TargetReport
from syncd.sources import Source, open_source
from syncd.stages.budget import Budget
from syncd.stages.deciding import LEFT_OUT_BY, NOT_IN_SOURCE, decide, not_planned
from syncd.stages.fingerprinting import (
    mapping_fingerprint,
    record_row,
    row_digest,
    row_fingerprint,
)
from syncd.stages.finishing import finish
from syncd.stages.opening import OpenTarget, open_targets
from syncd.stages.planning import CHUNK, MAX_DOCUMENT_BYTES, TargetPlanner
from syncd.stages.reading import SourceRead, read_source
from syncd.stages.sending import send
from syncd.state.base import StateStore


class Reconciler:
    """Everything a run needs, wired once; ``plan`` and ``sync`` are the two entry points."""

    def __init__(
        self,
        config: SyncdConfig,
        store: StateStore,
        *,
        environ: Mapping[str, str] | None = None,
        transports: Mapping[str, httpx.BaseTransport] | None = None,
        clock: Clock | None = None,
        events: Events | None = None,
        stop: threading.Event | None = None,
        source: Source | None = None,
        progress: RunProgress | None = None,
    ) -> None:
        self.config = config
        self.progress = progress or RunProgress()
        """Each target's sending so far (done / total, rate, ETA), for the TTY and /metrics."""
        self.store = store
        self._environ = os.environ if environ is None else environ
        self._transports = transports or {}
        self._clock = clock
        self._events = events
        self.stop = stop or threading.Event()
        self._source = source

    # -- the two entry points -------------------------------------------------------
    def plan(self, options: RunOptions | None = None) -> list[Plan]:
        """What a run would send to each target, sending nothing and writing nothing."""
        options = options or RunOptions()
        with ExitStack() as stack:
            # the spool outlives this call: the plans' documents read their payloads from it
            opened = self._open(options, stack, leases=None)
            plans, _ = self._plan_all(opened, options, Spool(), Budget(self.stop))
            return plans

    def sync(self, options: RunOptions | None = None) -> RunReport:
        """One run: plan every target, then send and record."""
        options = options or RunOptions()
        started = time.monotonic()
        holder = holder_id()
        budget = Budget.starting(
            self.stop, options.max_run_s or self.config.schedule.max_run_s, started
        )
        with ExitStack() as stack:
            # a lost lease stops this run's sending at once (another process may take over)
            leases = stack.enter_context(
                LeaseKeeper(self.store, holder, self.config.schedule.lease_ttl_s, self.stop)
            )
            spool = stack.enter_context(Spool())
            opened = self._open(options, stack, leases=leases, holder=holder)
            plans, read = self._plan_all(opened, options, spool, budget)
            reports = self._send_all(opened, plans, started, budget)
            return RunReport(tuple(reports), read.count, read.error is None, read.error)

    # -- the stages, wired --------------------------------------------------------------
    def _open(
        self,
        options: RunOptions,
        stack: ExitStack,
        *,
        leases: LeaseKeeper | None,
        holder: str = "",
    ) -> list[OpenTarget]:
        return open_targets(
            self.config,
            self.store,
            options,
            stack,
            environ=self._environ,
            transports=self._transports,
            leases=leases,
            holder=holder,
        )

    def _plan_all(
        self, opened: Sequence[OpenTarget], options: RunOptions, spool: Spool, budget: Budget
    ) -> tuple[list[Plan], SourceRead]:
        """Read the source once for every target still running, and decide each one's plan."""
        source = self._source or open_source(self.config.source, self.config.http)
        proof = DeleteProof(source, self.config.source)
        planners = [
            None
            if target.outcome is not None
            else TargetPlanner(
                target, spool, mapping_fingerprint(self.config.source, target.config)
            )
            for target in opened
        ]
        active = [planner for planner in planners if planner is not None]
        read = read_source(source, self.config.source, active, budget) if active else SourceRead()
        plans = [
            not_planned(target)
            if planner is None
            else decide(target, planner.planned(), read, options, proof, self.store, spool)
            for target, planner in zip(opened, planners, strict=True)
        ]
        return plans, read

    def _send_all(
        self,
        opened: Sequence[OpenTarget],
        plans: Sequence[Plan],
        started: float,
        budget: Budget,
    ) -> list[TargetReport]:
        """Send every target's plan at once, each in its own thread with its own executor,
        rate limit and outcome: a slow, throttled or failing target delays no other, and the
        run takes about as long as its slowest target."""
        pairs = list(zip(opened, plans, strict=True))
        if len(pairs) < 2:
            return [self._send_one(target, plan, started, budget) for target, plan in pairs]
        with ThreadPoolExecutor(len(pairs), thread_name_prefix="syncd-target") as pool:
            # each thread starts from the caller's logging context (structlog contextvars)
            futures = [
                pool.submit(
                    contextvars.copy_context().run, self._send_one, target, plan, started, budget
                )
                for target, plan in pairs
            ]
            return [future.result() for future in futures]

    def _send_one(
        self, opened: OpenTarget, plan: Plan, started: float, budget: Budget
    ) -> TargetReport:
        structlog.contextvars.bind_contextvars(target=opened.name, run_id=opened.run_id)
        try:
            if opened.outcome is not None:
                return finish(
                    opened,
                    plan,
                    Execution(),
                    store=self.store,
                    started=started,
                    outcome=opened.outcome,
                    error=opened.error,
                )
            sent = send(
                opened,
                plan,
                store=self.store,
                budget=budget,
                clock=self._clock or SystemClock(),
                events=self._events,
                progress=self.progress,
                grace_s=self.config.schedule.shutdown_grace_s,
            )
            return finish(
                opened,
                plan,
                sent.execution,
                store=self.store,
                started=started,
                outcome=sent.outcome,
                error=sent.error,
                doubted=sent.doubted,
            )
        finally:
            structlog.contextvars.unbind_contextvars("target", "run_id")


def reconcile_once(
    config: SyncdConfig, store: StateStore, options: RunOptions | None = None, **kwargs: Any
) -> RunReport:
    """One run over every selected target (see ``Reconciler``)."""
    return Reconciler(config, store, **kwargs).sync(options)


__all__ = [
    "CHUNK",
    "LEFT_OUT_BY",
    "MAX_DOCUMENT_BYTES",
    "NOT_IN_SOURCE",
    "Reconciler",
    "RunOptions",
    "RunReport",
    "TargetReport",
    "mapping_fingerprint",
    "reconcile_once",
    "record_row",
    "row_digest",
    "row_fingerprint",
]
