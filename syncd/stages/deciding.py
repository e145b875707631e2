"""Deciding what needs the whole read: duplicates, deletes and their proof, products that
can't be pushed any more, and the guards. Returns the target's ``Plan``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any

from syncd.diff import (
    Change,
    ChangeKind,
    GuardVerdict,
    Operation,
    Plan,
    SentCopy,
    deletes_of,
)
from syncd.guards import GuardInput, check_feed_guards, check_guards
from syncd.model import UNACKNOWLEDGED, Acked, Document, Rejection
from syncd.proof import DeleteProof
from syncd.runs import FEED_MODE, RunOptions
from syncd.stages.opening import OpenTarget
from syncd.stages.outbox import Outbox
from syncd.stages.planning import Planned, group_size
from syncd.stages.reading import SourceRead
from syncd.state.base import StateStore
from syncd.targets.base import PlannedRequests

NOT_IN_SOURCE = "named products not in the source"
"""How a resend's note about keys the read did not find begins."""
MIRROR_MAX_PRODUCTS = 50_000
"""The most products a whole-block upsert carries: one request holds them all in memory
(changes, and its body when sent). A mirrored full refresh of more sends create batches
and the proven deletes instead, and its plan says why."""
LEFT_OUT_BY = "left out by"
"""How notes name products a target's ``where`` leaves out (``left out by targets[1].where``)."""


@dataclass(frozen=True)
class _Proven:
    """The deletes a complete read may send, and what holds the others back."""

    ready: list[Change]
    unproven: frozenset[str]
    """Missing, not proven gone: no request may remove them."""
    awaiting: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Unpushable:
    """What becomes of the products that can't be pushed any more: deletes (withdrawn) and,
    for a mirrored block's upsert, their last acknowledged version (kept)."""

    changes: list[Change]
    keep: frozenset[str]
    """Keys no request may remove from the target."""
    notes: tuple[str, ...]


_by_key = attrgetter("key")
"""Orders acknowledged entries by product key."""


def not_planned(opened: OpenTarget) -> Plan:
    """The plan of a target whose run ended before reading: unknown, with its error."""
    return Plan(
        opened.name,
        opened.target.kind,
        opened.mode,
        opened.mode_reason,
        (),
        0,
        error=opened.error,
    )


def decide(
    opened: OpenTarget,
    planned: Planned,
    read: SourceRead,
    options: RunOptions,
    proof: DeleteProof,
    store: StateStore,
    outbox: Outbox,
) -> Plan:
    """The target's plan once the read is over: its changes, the deletes a complete read
    proves, what becomes of unpushable products, all weighed by the guards.

    The requests planned while the read went on are in ``outbox`` already (perhaps sent);
    the rest are put after them, a group at a time (``syncd.stages.planning.GROUP``), so
    a first sync's plan is flat in memory whatever the catalog's size. Keys found twice
    are taken out of what was not sent, and what was is restored (``Plan.undo``).
    """
    staging = opened.staging
    if opened.outcome is not None or staging is None:
        return not_planned(opened)
    notes = list(opened.notes)
    rejections = list(planned.rejections)
    unsendable = set(planned.unsendable)
    duplicates = frozenset(staging.duplicates())
    dropped = 0
    undo: tuple[SentCopy, ...] = ()
    if duplicates:
        unsendable |= duplicates
        # a key found twice, whichever chunks its copies were in: neither copy is pushed
        dropped = sum(1 for change in planned.changes if change.key in duplicates)
        rejections.extend(
            Rejection(key, f"duplicate key {key!r} in the source: neither copy is pushed")
            for key in sorted(duplicates)
        )
        undo = tuple(outbox.cancel(duplicates))
        notes += _undo_notes(undo)
    deletes: list[Change] = []
    unproven: frozenset[str] = frozenset()
    awaiting = 0
    feed = opened.mode == FEED_MODE
    if read.error is None and not opened.only:  # a resend saw only its keys: no deletes
        proven = _proven_deletes(opened, planned, deletes_of(staging.unseen()), proof, store)
        deletes, unproven, awaiting = proven.ready, proven.unproven, proven.awaiting
        notes += proven.notes
    elif read.error is None and feed:
        deletes, unproven, feed_notes = _feed_deletes(opened, planned, proof, store)
        notes += feed_notes
    if opened.only and not feed:
        notes += _resend_notes(opened, planned)
    if left := [change.key for change in deletes if change.key in planned.left_out]:
        notes.append(
            f"{len(left)} deletes are products {LEFT_OUT_BY} targets[{opened.index}].where "
            f"(absent from this target), not gone from the source; first: {left[0]!r}"
        )
    unpushable = _unpushable(opened, unsendable, duplicates, store)
    notes += unpushable.notes
    keep = unpushable.keep | unproven  # a whole-block upsert would delete them without proof
    extra = [c for c in unpushable.changes if c.kind is not ChangeKind.DELETE]
    deletes += [c for c in unpushable.changes if c.kind is ChangeKind.DELETE]
    total = len(planned.changes) - dropped + len(extra)
    rejected = len(rejections) + planned.held_rejected
    deleting, population = len(deletes), opened.state_count
    mirroring = opened.full and getattr(opened.config, "mirror_block", False) and not opened.only
    upsert_refused = (
        f"{total} products are over the {MIRROR_MAX_PRODUCTS} one upsert may carry (a single "
        "request holds them all in memory); proven deletes are sent instead"
        if mirroring and total > MIRROR_MAX_PRODUCTS
        else None
    )
    if mirroring and upsert_refused is None and opened.target_count and not keep:
        # a whole-block upsert (never sent while keys must be kept) also removes what
        # state never knew (drift, lost state)
        deleting = max(deleting, opened.target_count - total)
        population = max(population, opened.target_count)
    verdict = (
        check_feed_guards(
            deletes=deleting,
            recent=options.feed.recent_deletes.get(opened.name, 0),
            window_s=options.feed.window_s,
            state_count=population,
            config=opened.config.guards,
            target_path=f"targets[{opened.index}]",
        )
        if feed and options.feed is not None
        else check_guards(
            GuardInput(
                source_complete=read.error is None,
                source_error=read.error,
                source_count=read.count,
                last_source_count=store.last_complete_source_count(opened.name),
                state_count=population,
                deletes=deleting,
                keyless=len(planned.keyless),
                keyless_example=planned.keyless[0] if planned.keyless else None,
                rejected=rejected,
                rejected_example=rejections[0].reason if rejections else None,
            ),
            opened.config.guards,
            target_path=f"targets[{opened.index}]",
            allow_deletes=options.allow_deletes,
        )
    )

    def sendable() -> Iterator[Change]:
        """The changes to send, read back from disk: the read's, then the kept ones'."""
        for change in planned.changes:
            if change.key not in duplicates:
                yield change
        yield from extra

    target_plan = _requests(
        opened,
        sendable(),
        total,
        deletes,
        outbox,
        # a resend never sends a whole-block upsert (it would drop every other product)
        deletes_allowed=verdict.allowed and (feed or not opened.only),
        keep=keep,
        upsert_refused=upsert_refused,
        whole=mirroring and upsert_refused is None,
    )
    if read.error is not None and opened.full:
        notes.append("source read incomplete: full refresh limited to what was read")
    return Plan(
        target=opened.name,
        kind=opened.target.kind,
        mode=opened.mode,
        mode_reason=opened.mode_reason,
        operations=target_plan.operations,
        unchanged=planned.unchanged,
        rejected=tuple(rejections),
        held=target_plan.held,
        guard=verdict
        if (target_plan.held or not verdict.allowed or verdict.overridden)
        else GuardVerdict(True),
        source_count=read.count,
        source_complete=read.error is None,
        state_count=opened.state_count,
        notes=tuple(notes) + tuple(dict.fromkeys(planned.notes + target_plan.notes)),
        source_error=read.error,
        held_rejected=planned.held_rejected,
        drift=opened.drift,
        in_doubt=opened.doubts[1] if opened.remember else sum(opened.doubts),
        awaiting_delete=awaiting,
        rate_limit_per_s=opened.config.rate_limit_per_s,
        tally=outbox.tally,
        undo=undo,
    )


def _feed_deletes(
    opened: OpenTarget, planned: Planned, proof: DeleteProof, store: StateStore
) -> tuple[list[Change], frozenset[str], list[str]]:
    """A feed's deletes: the named keys state holds that the targeted read confirmed gone
    (``proof``, from the read itself), or that the target's ``where`` leaves out; and the
    keys the read did not find but could not confirm gone (unreachable: never deleted)."""
    missing = sorted(opened.only - planned.found)
    acked = store.acked_of(opened.name, missing) if missing else []
    if not acked:
        return [], frozenset(), []
    keys = [a.key for a in acked]
    confirmed = (proof.confirm(keys) or set()) | (planned.left_out & set(keys))
    deletes = [Change(ChangeKind.DELETE, a.key, None, a) for a in acked if a.key in confirmed]
    unproven = frozenset(keys) - confirmed
    notes = (
        [
            f"{len(unproven)} named products were not found but not confirmed gone (the "
            f"targeted read could not reach them): not deleted; first: {min(unproven)!r}"
        ]
        if unproven
        else []
    )
    return deletes, unproven, notes


@dataclass(frozen=True)
class _Requests:
    """The target's requests for a run (in the outbox, or a tuple for a plan of one
    group), held deletes, notes."""

    operations: Sequence[Operation]
    held: tuple[Change, ...]
    notes: tuple[str, ...]


def _requests(
    opened: OpenTarget,
    changes: Iterator[Change],
    total: int,
    deletes: list[Change],
    outbox: Outbox,
    *,
    deletes_allowed: bool,
    keep: frozenset[str],
    upsert_refused: str | None,
    whole: bool,
) -> _Requests:
    """The rest of the target's requests, put in ``outbox`` after those planned during the
    read: in one call when the changes fit a group (or a whole-block upsert carries them
    all), else a group at a time with the deletes last, each group's notes said once."""
    group = group_size(opened)
    target = opened.target
    options: dict[str, Any] = {"upsert_refused": upsert_refused} if upsert_refused else {}
    notes: dict[str, None] = {}
    put: list[Sequence[Operation]] = []

    def plan(part: Sequence[Change], gone: Sequence[Change]) -> PlannedRequests:
        planned = target.plan(
            part,
            gone,
            full=opened.full,
            deletes_allowed=deletes_allowed,
            full_reason=opened.mode_reason,
            keep=keep,
            **options,
        )
        outbox.put(planned.operations)
        if planned.operations:
            put.append(planned.operations)
        notes.update(dict.fromkeys(planned.notes))
        return planned

    earlier = outbox.operations.chunk_count
    if not (total <= group or whole):
        part: list[Change] = []
        for change in changes:
            part.append(change)
            if len(part) == group:
                plan(part, ())
                part = []
        changes = iter(part)
    last = plan(list(changes), deletes)
    operations = outbox.operations
    # a plan of one group is a tuple, as it always was, read back from disk (its payloads
    # spooled), or when the sender has already taken it, the one just planned
    if not operations:
        return _Requests((), last.held, tuple(notes))
    if earlier == 0 and len(put) == 1:
        only = outbox.untaken_group(0) or put[0]
        return _Requests(tuple(only), last.held, tuple(notes))
    return _Requests(operations, last.held, tuple(notes))


def _first_copies(sent: Sequence[SentCopy]) -> dict[str, SentCopy]:
    """The first copy sent of each key (what it replaced is what the target held)."""
    first: dict[str, SentCopy] = {}
    for copy in sent:
        first.setdefault(copy.key, copy)
    return first


def _undo_notes(sent: Sequence[SentCopy]) -> list[str]:
    """What the plan says of the copies ``undo_requests`` restores."""
    first = _first_copies(sent)
    lost = sorted(key for key, copy in first.items() if not copy.kept)
    restored = sorted(key for key, copy in first.items() if copy.kept)
    notes = []
    if restored:
        removes = sum(1 for key in restored if first[key].previous is None)
        notes.append(
            f"{len(restored)} products with a duplicate key had a copy sent before the second "
            f"was read: restored after the run's other requests ({removes} removed, new this "
            f"run); first: {restored[0]!r}"
        )
    if lost:
        notes.append(
            f"{len(lost)} products with a duplicate key had an update sent before the second "
            "copy was read, and the version it replaced was not kept (the run keeps them up "
            "to schedule.spool_max_mb): the target keeps the copy sent (state says so) until "
            f"the source has one copy; first: {lost[0]!r}"
        )
    return notes


def undo_requests(
    opened: OpenTarget, sent: Sequence[SentCopy], store: StateStore
) -> tuple[Operation, ...]:
    """Requests restoring the products whose key the read found twice after a copy had
    gone to the target (``sent``: the copies, in the order planned; ``Plan.undo``): each
    back to what the target acknowledged before this run, or removed when it had nothing.

    Called once the run's other requests are over and before refused writes are restored:
    what the target may hold now is what state says of each key then (the copy it
    acknowledged, or the write marked in flight); a key state has no row for was never
    sent (its group was not begun)."""
    first = _first_copies(sent)
    if not first:
        return ()
    now = {acked.key: acked for acked in store.acked_of(opened.name, sorted(first))}
    restores: list[Change] = []
    removes: list[Change] = []
    for key, copy in first.items():
        landed = now.get(key)
        if landed is None or not copy.kept:
            continue  # never sent; or what it replaced is unknown: the copy stays
        before = copy.previous
        if before is None:
            removes.append(Change(ChangeKind.DELETE, key, None, landed))
        else:
            # copies in flight together land in any order (a retry, concurrency): which one
            # the target holds is uncertain, so the restore is whole (UserFlux: FULL_UPDATE,
            # as for any write not acknowledged), never a diff against the last one planned
            uncertain = Acked(key, UNACKNOWLEDGED, landed.canonical)
            restores.append(
                Change(
                    ChangeKind.UPDATE,
                    key,
                    Document(key, before.canonical, before.hash),
                    uncertain,
                )
            )
    planned = opened.target.plan(restores, removes, full=False, deletes_allowed=True)
    why = "duplicate key found after a copy was sent (planned while the read went on): "
    return tuple(
        replace(
            operation,
            reason=why
            + (
                "removed (new this run)"
                if all(change.kind is ChangeKind.DELETE for change in operation.changes)
                else "restored to the version acknowledged before this run"
            ),
        )
        for operation in planned.operations
    )


def _resend_notes(opened: OpenTarget, planned: Planned) -> list[str]:
    notes = [
        "resend: only the named products, sent whole; nothing deleted, never a whole-block upsert"
    ]
    missing = sorted(opened.only - planned.found - planned.left_out)
    if missing:
        notes.append(
            f"{NOT_IN_SOURCE}, not sent ({len(missing)}): "
            + ", ".join(repr(k) for k in missing[:10])
        )
    if left := sorted(opened.only & planned.left_out):
        notes.append(
            f"named products {LEFT_OUT_BY} targets[{opened.index}].where: absent from "
            f"this target, not sent ({len(left)}): " + ", ".join(repr(k) for k in left[:10])
        )
    return notes


def _proven_deletes(
    opened: OpenTarget,
    planned: Planned,
    candidates: list[Change],
    proof: DeleteProof,
    store: StateStore,
) -> _Proven:
    """The products gone from a complete read that may be deleted: those a second look
    confirms (where the source takes one), missing from enough consecutive reads; and
    the keys of the others (missing, not proven gone: no request may remove them)."""
    everything = frozenset(change.key for change in candidates)
    name = opened.name
    notes: list[str] = []
    awaiting = 0
    keys = [change.key for change in candidates]
    # a second look asks the source by its key: only for targets keyed by it
    keyed_by_source = getattr(getattr(opened.config, "mapping", None), "key", None) is None
    left_out = planned.left_out
    looked = [key for key in keys if key not in left_out]  # left out: seen, not gone
    confirmed = proof.confirm(looked) if keys and keyed_by_source else None
    if confirmed is not None:
        confirmed |= left_out.intersection(keys)
        found = len(keys) - len(confirmed)
        if found:
            why = f"it failed: {proof.failure}" if proof.failure else "found again"
            notes.append(
                f"{found} products missing from the read were not confirmed gone by a "
                f"second look at the source ({why}): not deleted"
            )
        awaiting += found
        candidates = [change for change in candidates if change.key in confirmed]
    needed, why = proof.runs_needed(confirmed is not None)
    previous = store.absences(name) if needed > 1 else {}
    missed = {change.key: previous.get(change.key, 0) + 1 for change in candidates}
    if opened.remember:
        store.record_absences(name, missed, time.time())
    waiting = [key for key, count in missed.items() if count < needed]
    awaiting += len(waiting)
    if waiting:
        notes.append(
            f"{len(waiting)} products missing from this read are deleted only once "
            f"missing from {needed} consecutive complete reads ({why}); "
            f"first: {waiting[0]!r}, missed {missed[waiting[0]]} so far"
        )
    ready = [change for change in candidates if missed[change.key] >= needed]
    return _Proven(ready, everything - {change.key for change in ready}, awaiting, tuple(notes))


def _unpushable(
    opened: OpenTarget,
    unsendable: set[str],
    ambiguous: frozenset[str],
    store: StateStore,
) -> _Unpushable:
    """What becomes of the products in state that can't be pushed
    any more (``rejected``): a delete each (withdraw), or nothing but a note, and for a
    mirrored block's upsert their last acknowledged version (keep). A duplicated key
    (``ambiguous``) is always kept: the source does hold that product. Also the keys no
    request may remove from the target."""
    changes: list[Change] = []
    # in key order (the store's is the database's: PostgreSQL's changes with its plan),
    # so the notes' "first" and the withdrawals' order are the same on every backend
    acked = (
        sorted(store.acked_of(opened.name, sorted(unsendable)), key=_by_key) if unsendable else []
    )
    if not acked:
        return _Unpushable(changes, frozenset(), ())
    notes: list[str] = []
    withdrawing = opened.config.rejected == "withdraw"
    withdrawn = [a for a in acked if withdrawing and a.key not in ambiguous]
    kept = [a for a in acked if not withdrawing or a.key in ambiguous]
    if withdrawn:
        notes.append(
            f"{len(withdrawn)} products on the target can't be pushed any more (rejected): "
            f'withdrawn from the target (rejected = "withdraw"); first: {withdrawn[0].key!r}'
        )
        changes += [Change(ChangeKind.DELETE, a.key, None, a) for a in withdrawn]
    if not kept:
        return _Unpushable(changes, frozenset(), tuple(notes))
    why = "their key is duplicated in the source" if withdrawing else 'rejected = "keep"'
    notes.append(
        f"{len(kept)} products on the target can't be pushed any more (rejected): they "
        f"keep their last acknowledged version and are stale ({why}); "
        f"first: {kept[0].key!r}"
    )
    known = [a for a in kept if a.hash != UNACKNOWLEDGED]
    if opened.full and getattr(opened.config, "mirror_block", False):
        # a whole-block upsert must carry their last good version, or it would drop them
        changes += [
            Change(ChangeKind.REFRESH, a.key, Document(a.key, a.canonical, a.hash), a)
            for a in known
        ]
    return _Unpushable(
        changes, frozenset({a.key for a in kept} - {a.key for a in known}), tuple(notes)
    )
