"""One run: read the source once, plan every target, guard, send, acknowledge, report.

``reconcile_once`` (``Reconciler.sync``) is a plain function; the daemon only schedules
it and the CLI only calls it. ``Reconciler.plan`` is the same run up to the plan, sending
and writing nothing. The stages themselves live in ``syncd.stages``; this module wires
them (opening → reading/planning → deciding → sending → finishing) and re-exports the
names other modules and tests use.

A run is a pipeline: the read (on the calling thread) plans each target's creates and
updates a group at a time into the target's ``Outbox``, and every target's sender (a
thread of its own, with its own executor, rate limit and outcome) takes them as they come.
What needs the whole read (duplicates, deletes, guards, a whole-block upsert) is decided
when it ends and put after them; each sender then finishes its target.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
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
from syncd.stages.outbox import Outbox
from syncd.stages.planning import CHUNK, MAX_DOCUMENT_BYTES, TargetPlanner, streams
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
    def plan(self, options: RunOptions | None = None, *, payloads: bool = True) -> list[Plan]:
        """What a run would send to each target, sending nothing and writing nothing.
        ``payloads=False``: the plans' requests keep keys and hashes, not the payloads (a
        plan only counted and shown: its spool is a few dozen bytes a product)."""
        options = options or RunOptions()
        with ExitStack() as stack:
            # the spool outlives this call: the plans' documents read their payloads from it
            spool = Spool()
            opened = self._open(options, stack, leases=None)
            outboxes = [Outbox(spool, hollow=not payloads) for _ in opened]
            plans, _ = self._plan_all(opened, options, outboxes, Budget(self.stop))
            return plans

    def sync(self, options: RunOptions | None = None) -> RunReport:
        """One run: read and plan every target while each sends what is planned, decide
        what needs the whole read, and record how each target's run ended."""
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
            opened = self._open(options, stack, leases=leases, holder=holder)
            active = [i for i, target in enumerate(opened) if target.outcome is None]
            for i in active:  # the totals grow as the read plans
                self.progress.begin(opened[i].name, 0, planning=True)
            # each target's own spool: what its sender has sent is released from it
            room = int(self.config.schedule.spool_max_mb * 1_000_000)
            outboxes = [
                Outbox(
                    Spool(),
                    partial(self.progress.planned, t.name),
                    streams=streams(t),
                    max_bytes=room,
                )
                for t in opened
            ]
            for outbox in outboxes:
                stack.callback(outbox.dispose)
            decided: list[Future[Plan]] = [Future() for _ in opened]
            pool = stack.enter_context(
                ThreadPoolExecutor(max(len(active), 1), thread_name_prefix="syncd-target")
            )
            # each thread starts from the caller's logging context (structlog contextvars)
            sending = {
                i: pool.submit(
                    contextvars.copy_context().run,
                    self._send_one,
                    opened[i],
                    outboxes[i],
                    decided[i].result,
                    started,
                    budget,
                )
                for i in active
            }
            try:
                plans, read = self._plan_all(opened, options, outboxes, budget, decided=decided)
            except BaseException as exc:
                # what the senders took still settles; nothing more goes out
                for outbox, future in zip(outboxes, decided, strict=True):
                    outbox.abort()
                    if not future.done():
                        future.set_exception(exc)
                for report in sending.values():
                    report.exception()  # waited for; the run's own error is the one raised
                raise
            reports = [
                sending[i].result()
                if i in sending
                else self._finished(opened[i], plans[i], started)
                for i in range(len(opened))
            ]
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
        self,
        opened: Sequence[OpenTarget],
        options: RunOptions,
        outboxes: Sequence[Outbox],
        budget: Budget,
        *,
        decided: Sequence[Future[Plan]] = (),
    ) -> tuple[list[Plan], SourceRead]:
        """Read the source once for every target still running, planning into each one's
        outbox as the read goes; then decide each one's plan, complete its outbox and hand
        the plan over (``decided``: to the target's sender)."""
        source = self._source or open_source(self.config.source, self.config.http)
        proof = DeleteProof(source, self.config.source)
        planners = [
            None
            if target.outcome is not None
            else TargetPlanner(
                target,
                outbox.spool,
                mapping_fingerprint(self.config.source, target.config),
                outbox,
            )
            for target, outbox in zip(opened, outboxes, strict=True)
        ]
        active = [planner for planner in planners if planner is not None]
        read = read_source(source, self.config.source, active, budget) if active else SourceRead()
        plans: list[Plan] = []
        for i, (target, planner) in enumerate(zip(opened, planners, strict=True)):
            plan = (
                not_planned(target)
                if planner is None
                else decide(
                    target, planner.planned(), read, options, proof, self.store, outboxes[i]
                )
            )
            outboxes[i].close()
            if decided:
                decided[i].set_result(plan)
            plans.append(plan)
        return plans, read

    def _send_one(
        self,
        opened: OpenTarget,
        outbox: Outbox,
        decided: Callable[[], Plan],
        started: float,
        budget: Budget,
    ) -> TargetReport:
        """Send the target's requests as they are planned, then finish its run."""
        structlog.contextvars.bind_contextvars(target=opened.name, run_id=opened.run_id)
        try:
            plan, sent = send(
                opened,
                outbox,
                decided,
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
            outbox.halt()  # however sending ended (an exception too): the read never waits
            structlog.contextvars.unbind_contextvars("target", "run_id")

    def _finished(self, opened: OpenTarget, plan: Plan, started: float) -> TargetReport:
        """The report of a target whose run ended before reading (locked, unreachable)."""
        structlog.contextvars.bind_contextvars(target=opened.name, run_id=opened.run_id)
        try:
            return finish(
                opened,
                plan,
                Execution(),
                store=self.store,
                started=started,
                outcome=opened.outcome or "failed",
                error=opened.error,
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
