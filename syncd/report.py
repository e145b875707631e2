"""Plain-text rendering of plans and run reports for the terminal (JSON is left to callers)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from syncd.diff import Plan
from syncd.runs import TargetReport, is_resend


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A left-aligned text table."""
    cells = [[str(h) for h in headers]] + [
        ["" if v is None else str(v) for v in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_plan(plan: Plan, sample: int = 5) -> str:
    """What one target's plan would send, and why."""
    summary = plan.summary(sample)
    out = [
        f"target {plan.target} ({plan.kind}): {plan.mode} — {plan.mode_reason}",
        f"  source: {plan.source_count} records"
        + ("" if plan.source_complete else " (read INCOMPLETE)")
        + f"; state: {plan.state_count} products; unchanged: {plan.unchanged}",
    ]
    if plan.error is not None:
        out.append(f"  FAILED: {plan.error}")
        out.append("  requests: unknown — the target could not be inspected, nothing was planned")
    elif summary["requests"]:
        out.append("  requests:")
        for name, entry in summary["requests"].items():
            out.append(f"    {name}: {entry['requests']} requests, {entry['products']} products")
            for item in entry["samples"]:
                out.append(f"      {item['key']}: {item['reason']}")
        least = plan.min_duration_s
        if least is not None:
            out.append(
                f"  time: at least {_duration(least)} ({plan.request_count} requests at "
                f"rate_limit_per_s={plan.rate_limit_per_s:g}; the target's latency adds to it)"
            )
    elif plan.problems:
        out.append("  requests: none, yet the target is NOT known to match the source (see status)")
    else:
        out.append("  requests: none — the target is in line with the source")
    for note in plan.notes:
        out.append(f"  note: {note}")
    if plan.rejected:
        out.append(f"  rejected: {len(plan.rejected)} products")
        for rejection in plan.rejected[:sample]:
            out.append(f"    {rejection.key}: {rejection.reason}")
    if plan.held:
        out.append(f"  HELD: {len(plan.held)} deletes not sent")
    if plan.held_rejected:
        out.append(
            f"  held: {plan.held_rejected} products the target refused before, unchanged since"
        )
    for reason in plan.guard.reasons:
        prefix = "guard overridden" if plan.guard.overridden else "guard"
        out.append(f"  {prefix}: {reason}")
    problems = plan.problems
    out.append(f"  status: {plan.status.upper() if problems else plan.status}")
    out.extend(f"    - {problem}" for problem in problems)
    return "\n".join(out)


def not_attempted_note(report: TargetReport) -> str | None:
    """What to do about the products an interrupted run never sent. An incremental run
    sends them next time; a full refresh's unchanged products are re-sent only by another
    full refresh (the daemon's catch-up redoes a scheduled one); a resend, by resending."""
    if not report.not_attempted:
        return None
    head = f"{report.target}: {report.not_attempted} products not attempted (the run stopped first)"
    if is_resend(report.mode, report.mode_reason):
        return f"{head}: run the resend again to send them"
    if report.mode == "full":
        return (
            f"{head}: the next incremental run does not re-send the unchanged ones; re-run "
            f"`syncd sync --full --target {report.target}` (the daemon's catch-up redoes a "
            "missed scheduled full refresh)"
        )
    return f"{head}: the next run sends them"


def _duration(seconds: float) -> str:
    """``2h05m``, ``3m10s`` or ``0.4s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
