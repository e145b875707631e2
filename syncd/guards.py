"""The guards: pure checks that hold deletes and full upserts back on a suspicious run.

A failed or short source read, or a plan deleting too much of a target, must never
reach the target. Each tripped guard gives a reason that says what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncd.config import GuardConfig
from syncd.diff import GuardVerdict


@dataclass(frozen=True, slots=True)
class GuardInput:
    """The figures a guard looks at."""

    source_complete: bool
    source_error: str | None
    source_count: int
    last_source_count: int | None
    state_count: int
    deletes: int
    keyless: int = 0
    """Records rejected without a usable key: their products would look deleted."""
    keyless_example: str | None = None
    rejected: int = 0
    """Records of this read that can't be sent to the target (rejected, duplicate keys)."""
    rejected_example: str | None = None


def check_guards(
    figures: GuardInput, config: GuardConfig, *, target_path: str, allow_deletes: bool = False
) -> GuardVerdict:
    """Whether deletes (and a whole-block upsert) may be sent.

    A read that did not complete is never overridable: nothing tells what is really gone;
    nor is a run rejecting more than ``max_reject_fraction`` of what it read.
    """
    if not figures.source_complete:
        why = figures.source_error or "the source read did not complete"
        return GuardVerdict(
            False,
            (
                f"source read incomplete ({why}): no deletes and no full upsert this run; "
                "fix the source and run again",
            ),
        )
    reasons: list[str] = []
    how = (
        "if this is intended, run `syncd sync --allow-deletes` once, "
        f"or change {target_path}.guards"
    )
    if figures.source_count < config.min_source_count:
        reasons.append(
            f"source returned {figures.source_count} records, fewer than "
            f"min_source_count={config.min_source_count}; {how}.min_source_count"
        )
    last = figures.last_source_count
    if last and figures.source_count < config.min_source_fraction * last:
        reasons.append(
            f"source returned {figures.source_count} records, under "
            f"{config.min_source_fraction:.0%} of the last complete read ({last}); "
            f"{how}.min_source_fraction"
        )
    if figures.deletes and figures.state_count:
        fraction = figures.deletes / figures.state_count
        if fraction > config.max_delete_fraction:
            reasons.append(
                f"{figures.deletes} deletes are {fraction:.1%} of the target's "
                f"{figures.state_count} products, over max_delete_fraction="
                f"{config.max_delete_fraction:.0%}; {how}.max_delete_fraction"
            )
    if figures.keyless and figures.deletes:
        reasons.append(
            f"{figures.keyless} records have no usable key (first: {figures.keyless_example}): "
            "their products can't be told from deleted ones; fix those records, or, "
            "if the deletes are intended, run `syncd sync --allow-deletes` once"
        )
    if config.max_delete_count is not None and figures.deletes > config.max_delete_count:
        reasons.append(
            f"{figures.deletes} deletes exceed max_delete_count={config.max_delete_count}; "
            f"{how}.max_delete_count"
        )
    rejected = figures.rejected
    if rejected and rejected > config.max_reject_fraction * max(figures.source_count, 1):
        # not overridable by --allow-deletes: a run rejecting most of the catalog is never ok
        share = rejected / max(figures.source_count, 1)
        return GuardVerdict(
            False,
            (
                *reasons,
                f"{rejected} of the {figures.source_count} records read ({share:.0%}) were "
                f"rejected, over max_reject_fraction={config.max_reject_fraction:.0%} "
                f"(first: {figures.rejected_example}); a broken mapping or a wrong constant "
                f"looks like this: fix it, or change {target_path}.guards.max_reject_fraction",
            ),
        )
    if not reasons:
        return GuardVerdict(True)
    if allow_deletes:
        return GuardVerdict(True, tuple(reasons), overridden=True)
    return GuardVerdict(False, tuple(reasons))


def check_feed_guards(
    *,
    deletes: int,
    recent: int,
    window_s: float,
    state_count: int,
    config: GuardConfig,
    target_path: str,
) -> GuardVerdict:
    """Whether a feed's targeted sync may send its ``deletes``: with the ``recent`` deletes
    feed runs sent within the sliding window (``window_s``), they must stay within the
    target's ``max_delete_fraction`` of its products and ``max_delete_count``. The source
    counts of a whole read don't apply (a targeted read returns only its keys)."""
    if not deletes:
        return GuardVerdict(True)
    total = deletes + recent
    reasons: list[str] = []
    window = f"within feed_sync.delete_window_s={window_s:g}"
    if state_count and total / state_count > config.max_delete_fraction:
        reasons.append(
            f"the feeds' {total} deletes {window} ({deletes} in this batch) are "
            f"{total / state_count:.1%} of the target's {state_count} products, over "
            f"max_delete_fraction={config.max_delete_fraction:.0%}"
        )
    if config.max_delete_count is not None and total > config.max_delete_count:
        reasons.append(
            f"the feeds' {total} deletes {window} ({deletes} in this batch) exceed "
            f"max_delete_count={config.max_delete_count}"
        )
    if not reasons:
        return GuardVerdict(True)
    return GuardVerdict(
        False,
        (
            *reasons,
            f"held for the scheduled run (its own guards weigh them); if a burst like this is "
            f"normal, change {target_path}.guards or feed_sync.delete_window_s",
        ),
    )
