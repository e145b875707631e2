"""What a run is asked to do (``RunOptions``) and how it ended (``TargetReport``, ``RunReport``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from syncd import model


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What one run is asked to do."""

    full: bool = False
    """Full refresh: re-send everything in the mode that makes each target exactly right."""
    full_reason: str = "full refresh requested (--full)"
    targets: tuple[str, ...] = ()
    """Only these targets (by name); empty: every enabled target."""
    allow_deletes: bool = False
    """Let deletes through a tripped size guard, once."""
    keys: tuple[str, ...] = ()
    """Only these products (``syncd resend``): re-sent whole whatever state says; the
    rest of the catalog is read but neither sent nor deleted. Empty: every product."""
    feed: FeedRun | None = None
    """A targeted sync of ``keys`` a change feed named (``syncd.feeds``): only the diff is
    sent, and a key the targeted read confirms gone is deleted (mode ``feed``)."""
    max_run_s: float | None = None
    """The run's time budget in seconds (None: ``schedule.max_run_s``): when it runs out,
    no request starts any more and the run ends ``incomplete``; the next run carries on."""


@dataclass(frozen=True, slots=True)
class FeedRun:
    """What a feed's targeted sync needs beyond its keys."""

    recent_deletes: Mapping[str, int] = field(default_factory=dict)
    """Per target, the deletes feed runs sent within ``feed_sync.delete_window_s``: this
    run's deletes count against the target's delete guards with them."""
    window_s: float = 3600.0


@dataclass(frozen=True)
class TargetReport:
    """How one target's run ended."""

    target: str
    kind: str
    run_id: int | None
    mode: str
    mode_reason: str
    outcome: str
    created: int = 0
    updated: int = 0
    refreshed: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: int = 0
    failed: int = 0
    """Products still failing after retries."""
    not_attempted: int = 0
    """Products an interrupted run never sent (SIGTERM, a lost lease stopped it first): not
    failed, just not tried; the next run sends them. (A run that gives up on a failing
    target counts what it did not send as ``failed``.)"""
    held: int = 0
    requests: int = 0
    retries: int = 0
    duration_ms: int = 0
    drift: int | None = None
    in_doubt: int = 0
    """Products whose write is in doubt after this run (a late write may land): re-sent
    whole by the first run after the target's ``in_doubt_window_s``."""
    error: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def figures(self) -> dict[str, Any]:
        """Every field but the plan: the fields of the canonical ``syncd.run.finished`` line."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "plan"}


@dataclass(frozen=True)
class RunReport:
    """How a whole run ended: one report per target."""

    targets: tuple[TargetReport, ...]
    source_count: int
    source_complete: bool
    source_error: str | None = None

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.targets)

    @property
    def exit_code(self) -> int:
        """0 when every target is ok, or stopped by its time budget (``incomplete``: planned,
        the next run carries on); 1 otherwise."""
        done = all(report.outcome in ("ok", "incomplete") for report in self.targets)
        return 0 if done else 1


RESEND_MODE = "resend"
"""The ``mode`` a ``syncd resend`` run is recorded with."""
FEED_MODE = model.FEED_MODE
"""The ``mode`` a change feed's targeted sync is recorded with."""
TELLING_OUTCOMES = ("ok", "partial", "blocked", "failed")
"""Outcomes that say how the target is (``locked``, ``running``, ``interrupted`` and
``incomplete`` don't)."""
_RESEND_REASON = "resend of "
"""How a resend's ``mode_reason`` begins (runs recorded before resends had a mode)."""


def is_resend(mode: str, mode_reason: str = "") -> bool:
    """Whether a run was a ``syncd resend``: a few named keys sent whole. It is never the
    night's run, never a full refresh, and says nothing about the target's health."""
    return mode == RESEND_MODE or mode_reason.startswith(_RESEND_REASON)


def names_keys(mode: str, mode_reason: str = "") -> bool:
    """Whether a run covered only named keys (a resend, a feed's targeted sync): it is never
    the night's run nor a full refresh, and says nothing about the target's health."""
    return mode == FEED_MODE or is_resend(mode, mode_reason)


def tells(outcome: str, mode: str, mode_reason: str = "") -> bool:
    """Whether a run says how its target is: a telling outcome of a run over the whole
    catalog (not a resend, not a feed's targeted sync)."""
    return outcome in TELLING_OUTCOMES and not names_keys(mode, mode_reason)
