"""Finishing one target's run: its rejections recorded, one ``TargetReport`` built, and
everything else about the run's figures derived from it (the ``runs`` row via
``run_record``, the ``syncd.run.finished`` line via ``TargetReport.figures``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import structlog

from syncd.diff import Plan
from syncd.executor import Execution
from syncd.logs import scrub
from syncd.model import Rejection, RunRecord
from syncd.runs import TargetReport
from syncd.stages.opening import OpenTarget
from syncd.state.base import StateStore

log = structlog.get_logger("syncd.run")

LOGGED_REJECTIONS = 20
"""Rejections logged one by one per run and target; the rest are counted."""


def finish(
    opened: OpenTarget,
    plan: Plan,
    execution: Execution,
    *,
    store: StateStore,
    started: float,
    outcome: str,
    error: str | None,
    doubted: int = 0,
) -> TargetReport:
    """Record the target's rejections and its run in state, log the run's canonical line,
    and return its report."""
    name = opened.name
    now = time.time()
    error = scrub(error) if error else error
    rejections = [
        replace(r, reason=scrub(r.reason)) for r in (*plan.rejected, *execution.rejections)
    ]
    log_rejections(name, rejections)
    if opened.run_id is not None:
        if rejections:
            store.record_rejections(name, rejections, now)
        # only a run that read and planned this target knows which rejections still
        # hold (not one refused the lease, failed at the start, or resending a few keys)
        planned = opened.staging is not None and plan.error is None
        if planned and plan.source_complete and outcome != "locked" and not opened.only:
            keep = {r.key for r in rejections} | set(opened.held_rejections)
            store.prune_rejections(name, keep)
    report = target_report(
        opened,
        plan,
        execution,
        rejected=len(rejections) + plan.held_rejected,
        duration_ms=int((time.monotonic() - started) * 1000),
        outcome=outcome,
        error=error,
        doubted=doubted,
    )
    if opened.run_id is not None:
        store.finish_run(run_record(report, plan, finished_at=now, holder=opened.holder))
    level = (
        "info"
        if outcome in ("ok", "locked", "incomplete")
        else "warning"
        if outcome in ("partial", "blocked", "interrupted")
        else "error"
    )
    getattr(log, level)("syncd.run.finished", **report.figures())
    return report


def target_report(
    opened: OpenTarget,
    plan: Plan,
    execution: Execution,
    *,
    rejected: int,
    duration_ms: int,
    outcome: str,
    error: str | None,
    doubted: int,
) -> TargetReport:
    """The one record of a target's run figures (the others are derived from it)."""
    acked = execution.acked
    stopped = outcome in ("interrupted", "incomplete")  # what was not sent was not tried
    return TargetReport(
        target=opened.name,
        kind=opened.target.kind,
        run_id=opened.run_id,
        mode=opened.mode,
        mode_reason=opened.mode_reason,
        outcome=outcome,
        created=acked["create"],
        updated=acked["update"],
        refreshed=acked["refresh"],
        deleted=acked["delete"],
        unchanged=plan.unchanged,
        rejected=rejected,
        # an interrupted run says what it never sent rather than calling it failed; a
        # run that gave up (retry budget, fatal answer) counts it as still failing
        failed=execution.failed + (0 if stopped else execution.not_sent),
        not_attempted=execution.not_sent if stopped else 0,
        held=len(plan.held),
        requests=execution.requests,
        retries=execution.retries,
        duration_ms=duration_ms,
        drift=opened.drift,
        in_doubt=doubted + opened.doubts[1],
        error=error,
        plan=plan.summary(),
    )


def run_record(
    report: TargetReport, plan: Plan, *, finished_at: float, holder: str = ""
) -> RunRecord:
    """The ``runs`` row of a target's run, from its report (a refresh counts as an update
    there) plus what only the run row keeps: the read, the holder, the plan's details."""
    if report.run_id is None:
        raise ValueError(f"target {report.target!r}: a run without an id has no runs row")
    return RunRecord(
        id=report.run_id,
        target=report.target,
        started_at=finished_at - report.duration_ms / 1000,
        finished_at=finished_at,
        mode=report.mode,
        mode_reason=report.mode_reason,
        outcome=report.outcome,
        created=report.created,
        updated=report.updated + report.refreshed,
        deleted=report.deleted,
        unchanged=report.unchanged,
        rejected=report.rejected,
        failed=report.failed,
        held=report.held,
        requests=report.requests,
        retries=report.retries,
        source_count=plan.source_count,
        source_complete=plan.source_complete,
        drift=report.drift,
        error=report.error,
        holder=holder,
        details=plan_details(plan),
    )


def plan_details(plan: Plan) -> dict[str, Any]:
    """The part of a plan kept with the run: requests per endpoint and mode, and why."""
    summary = plan.summary(sample=0)
    return {
        "requests": {
            name: {"requests": entry["requests"], "products": entry["products"]}
            for name, entry in summary["requests"].items()
        },
        "notes": summary["notes"],
        "guard": summary["guard"],
    }


def log_rejections(target: str, rejections: Sequence[Rejection]) -> None:
    """One ``syncd.product.rejected`` line per refused product (its key, and every failing
    field in the reason), the first ``LOGGED_REJECTIONS`` of them; then how many more."""
    for rejection in rejections[:LOGGED_REJECTIONS]:
        log.warning(
            "syncd.product.rejected",
            target=target,
            key=rejection.key,
            reason=rejection.reason,
            by_target=rejection.by_target,
        )
    if len(rejections) > LOGGED_REJECTIONS:
        log.warning(
            "syncd.product.rejected_more",
            target=target,
            more=len(rejections) - LOGGED_REJECTIONS,
            command=f"syncd rejections --target {target}",
        )
