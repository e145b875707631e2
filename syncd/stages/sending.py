"""Sending one target's plan: acknowledgements into state, refused writes restored, late
withdrawals, writes left in doubt, and the outcome the run ends with (``Sent``)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import structlog

from syncd.diff import Change, ChangeKind, Operation, Plan
from syncd.executor import NOT_YET, Clock, Events, Execution, Executor
from syncd.model import UNACKNOWLEDGED, Document, Spool
from syncd.progress import RunProgress
from syncd.stages.budget import Budget
from syncd.stages.deciding import undo_requests
from syncd.stages.opening import OpenTarget
from syncd.stages.outbox import Outbox
from syncd.stages.packing import ChangePacking
from syncd.stages.spill import SpilledList
from syncd.state.base import StateStore

log = structlog.get_logger("syncd.run")


@dataclass(frozen=True)
class Sent:
    """How sending one target's plan went."""

    execution: Execution
    outcome: str
    error: str | None
    doubted: int = 0
    """Products whose write this run left in doubt."""


def send(
    opened: OpenTarget,
    outbox: Outbox,
    decided: Callable[[], Plan],
    *,
    store: StateStore,
    budget: Budget,
    clock: Clock,
    events: Events | None,
    progress: RunProgress,
    grace_s: float,
) -> tuple[Plan, Sent]:
    """Send the target's requests as planning puts them in ``outbox`` (while the read goes
    on), recording each acknowledgement in state as it comes; then, with the plan complete
    (``decided``: waits for the read's end), what needs it: restoring refused writes,
    undoing copies of keys found twice, late withdrawals; and say how the run ended."""
    config = opened.config
    name = config.name
    upserts: list[tuple[str, bytes, bytes, bytes | None]] = []
    deletes: list[str] = []

    def on_ack(operation: Operation) -> None:
        progress.advance(name, len(operation.changes))
        for change in operation.changes:
            if change.kind is ChangeKind.DELETE:
                deletes.append(change.key)
            elif change.document is not None:
                document = change.document
                upserts.append(
                    (document.key, document.hash, document.canonical, document.source_hash)
                )

    def flush() -> None:
        if upserts or deletes:
            store.apply_acks(name, upserts, deletes)
            upserts.clear()
            deletes.clear()

    deadline = (
        None
        if budget.deadline is None
        # the rest of the budget, on the executor's clock
        else clock.monotonic() + max(0.0, budget.deadline - time.monotonic())
    )
    executor = Executor(
        opened.target,
        concurrency=config.concurrency,
        rate_limit_per_s=config.rate_limit_per_s,
        retry=config.retry,
        clock=clock,
        events=events,
        stop=budget.stop,
        grace_s=grace_s,
        deadline=deadline,
    )
    with _Kept(outbox.spool.directory) as kept:
        marked = _Marked(outbox, store, name, kept)
        execution = executor.run(marked, on_ack, flush, marked.settled)
        plan = decided()
        progress.planned_all(name)
        read_out_of_time = not plan.source_complete and budget.out_of_time()
        out_of_time = execution.out_of_time or read_out_of_time
        # the run failed in another stage after this plan was complete (another target's
        # decide raised): what the sender had not taken was never sent, and nothing more goes
        aborted = outbox.aborted
        stopped = execution.fatal or budget.stop.is_set() or out_of_time or aborted
        # every undo request, refused copies or not: a key the target refused one copy of
        # may have taken another (kept, it would stay there with state forgetting it, see
        # ``_restore_refused``, so the undo is planned from state before it); when every
        # copy was refused, the restore re-sends what the target holds or deletes what it
        # never created: one harmless request, in a rare case
        undo = () if stopped else undo_requests(opened, plan.undo, store)
        _restore_refused(opened, kept, execution, store)
        too_many = too_many_rejected(opened, plan, execution)
        late: tuple[Operation, ...] = ()
        held: str | None = None
        if too_many is None and not out_of_time and not aborted:
            late, held = _late_withdrawals(opened, plan, kept, execution, store, budget)
        late = undo + late
        if late:
            progress.planned(name, sum(len(operation.changes) for operation in late))
            marked = _Marked(late, store, name, kept)
            execution = combined(execution, executor.run(marked, on_ack, flush, marked.settled))
        doubted = _record_doubts(opened, kept, execution, store)
    outcome, error = _outcome(plan, execution, budget, out_of_time, too_many, held)
    if aborted and execution.not_sent:
        outcome, error = (
            "failed",
            (
                f"the run failed in another stage before this target's plan was sent: "
                f"{execution.not_sent} products not sent; they are re-sent next run"
            ),
        )
    return plan, Sent(execution, outcome, error, doubted)


def _outcome(
    plan: Plan,
    execution: Execution,
    budget: Budget,
    out_of_time: bool,
    too_many: str | None,
    held: str | None,
) -> tuple[str, str | None]:
    """How the target's run ended, and why when not ``ok``."""
    if execution.fatal:
        return "failed", execution.fatal
    if budget.stop.is_set() and (execution.interrupted or not plan.source_complete):
        return "interrupted", "stopped (signal or lost lease) before the end"
    if out_of_time:
        left = execution.not_sent + execution.failed
        return (
            "incomplete",
            (
                f"the run's time budget (max_run_s={budget.budget_s:g}) ran out: {left} "
                "products not sent yet"
                + ("" if plan.source_complete else ", and the read did not complete (no deletes)")
                + "; the next run carries on"
            ),
        )
    if not plan.source_complete:
        return "failed", "; ".join(plan.guard.reasons)
    if not plan.guard.allowed:
        return "blocked", "; ".join(plan.guard.reasons)
    if too_many is not None:
        return "blocked", too_many
    if held is not None:
        return "blocked", held
    if execution.failed:
        return (
            # nothing acknowledged: the target took none of it, the run failed
            "failed" if sum(execution.acked.values()) == 0 else "partial",
            (
                f"{execution.failed} products still failing after retries "
                f"(last: {execution.last_error}); they are re-sent next run"
            ),
        )
    return "ok", None


class _Kept:
    """The changes of the requests the target refused for good or may have applied
    unseen (in doubt), kept as their requests settle (``settled``): what the run does
    after sending needs them (restoring refused writes, withdrawing, recording doubts)
    once the groups they came in are released from the spool. Their payloads are copied
    to a spool of their own a few thousand at a time; memory holds the last few."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._spilled: SpilledList[Change] | None = None
        self._part: list[Change] = []

    def settled(self, operation: Operation, _: tuple[Operation, ...], troubled: bool) -> None:
        if not troubled:
            return
        for change in operation.changes:
            document = change.document
            if document is not None and not isinstance(document.body, bytes):
                document = Document(
                    document.key, document.canonical, document.hash, document.source_hash
                )
            self._part.append(Change(change.kind, change.key, document, change.previous))
        if len(self._part) >= KEPT_IN_MEMORY:
            if self._spilled is None:
                self._spilled = SpilledList(Spool(self._directory), packing=ChangePacking())
            self._spilled.extend(self._part)
            self._part = []

    def __iter__(self) -> Iterator[Change]:
        if self._spilled is not None:
            yield from self._spilled
        yield from self._part

    def __enter__(self) -> _Kept:
        return self

    def __exit__(self, *_: object) -> None:
        if self._spilled is not None:
            self._spilled.spool.close()


KEPT_IN_MEMORY = 2000
"""Changes of refused or doubted requests ``_Kept`` holds in memory before spilling."""


class _Marked:
    """The operations, each chunk's writes marked in flight in state (``writes_in``) before
    the chunk's first operation goes to the executor: a plan on disk is read once. From an
    ``Outbox``, the chunks come as planning puts them (``NOT_YET`` while none is ready),
    and each is ``finished`` once all its operations are over (its disk is released).
    What the executor never takes (stopped, halted, out of time) is counted by
    ``remaining`` without being marked: state claims nothing the target never saw."""

    def __init__(
        self,
        operations: Outbox | tuple[Operation, ...],
        store: StateStore,
        name: str,
        kept: _Kept,
    ) -> None:
        self._outbox = operations if isinstance(operations, Outbox) else None
        self._chunks: Iterator[Sequence[Operation]] = iter(())
        self._products = 0
        """Products in the operations (a tuple's; an outbox's tally says)."""
        if not isinstance(operations, Outbox):
            self._chunks = iter((operations,))
            self._products = sum(len(operation.changes) for operation in operations)
        self._store = store
        self._name = name
        self._kept = kept
        self._chunk: Iterator[Operation] = iter(())
        self._left = 0
        """Operations of the current chunk not taken yet."""
        self._taken = 0
        """Products in the operations taken."""
        self._group_of: dict[int, int] = {}
        """The group (outbox chunk) of each operation taken and not over, by ``id``."""
        self._open: dict[int, int] = {}
        """Of each group begun, its operations not over yet."""

    def __iter__(self) -> _Marked:
        return self

    def __next__(self) -> Operation:
        while not self._left:
            taken = self._next_chunk()
            if taken is False:
                return NOT_YET
            if taken is None:
                raise StopIteration  # the plan is sent
            number, chunk = taken
            self._store.mark_unacknowledged(self._name, writes_in(chunk))
            if number is not None:
                self._track(number, chunk)
            self._chunk, self._left = iter(chunk), len(chunk)
        self._left -= 1
        operation = next(self._chunk)
        self._taken += len(operation.changes)
        return operation

    def _track(self, number: int, chunk: Sequence[Operation]) -> None:
        assert self._outbox is not None
        if not chunk:  # emptied by ``cancel``
            self._outbox.finished(number)
            return
        self._open[number] = len(chunk)
        for operation in chunk:
            self._group_of[id(operation)] = number

    def settled(
        self, operation: Operation, replaced_by: tuple[Operation, ...], troubled: bool
    ) -> None:
        """``operation`` is over (``syncd.executor.Settled``): when it was its group's
        last, the group is ``finished``."""
        self._kept.settled(operation, replaced_by, troubled)
        number = self._group_of.pop(id(operation), None)
        if number is None:
            return
        for half in replaced_by:
            self._group_of[id(half)] = number
        left = self._open[number] - 1 + len(replaced_by)
        if left:
            self._open[number] = left
            return
        del self._open[number]
        assert self._outbox is not None
        self._outbox.finished(number)

    def _next_chunk(self) -> tuple[int | None, Sequence[Operation]] | None | Literal[False]:
        if self._outbox is not None:
            return self._outbox.take()
        chunk = next(self._chunks, None)
        return None if chunk is None else (None, chunk)

    def wait(self, timeout: float) -> None:
        """Until planning puts more (an outbox's), or ``timeout`` seconds."""
        if self._outbox is not None:
            self._outbox.wait(timeout)

    def remaining(self) -> int:
        """Products in the operations not taken (the rest of the current chunk, which is
        marked, and the chunks after it, which are not), from the plan's tally: a stopped
        run does not read the rest of its plan from disk to count it. From an outbox, once
        the plan is complete (the read and the decisions over)."""
        self._chunks, self._chunk, self._left = iter(()), iter(()), 0
        total = self._products
        if self._outbox is not None:
            self._outbox.halt()  # the read must not wait for this sender any more
            self._outbox.wait_closed()
            total = sum(self._outbox.tally.counts.values())
        return max(total - self._taken, 0)


def writes_in(operations: Iterable[Operation]) -> Iterator[tuple[str, bytes]]:
    """(key, canonical payload) of every create, update and delete a plan sends.

    A full refresh's unchanged products are left out: re-sending the same payload
    can't leave the target different from what state says.
    """
    for operation in operations:
        for change in operation.changes:
            if change.kind is ChangeKind.REFRESH:
                continue
            document = change.document
            yield change.key, document.canonical if document else b"{}"


def _restore_refused(
    opened: OpenTarget, kept: Iterable[Change], execution: Execution, store: StateStore
) -> None:
    """A write the target refused was not applied: state goes back to what the target
    holds, its last acknowledged version (a refused create: nothing), instead of
    staying marked in flight (``kept``: the changes of the requests refused or in doubt)."""
    refused = {r.key for r in execution.rejections if r.by_target}
    if not refused:
        return
    restore: list[tuple[str, bytes, bytes, bytes | None]] = []
    forget: list[str] = []
    for change in kept:
        if change.key not in refused or change.kind in (
            ChangeKind.DELETE,
            ChangeKind.REFRESH,  # never marked in flight: state is as it was
        ):
            continue
        previous = change.previous
        if previous is None:
            forget.append(change.key)
        elif previous.hash != UNACKNOWLEDGED:
            restore.append((change.key, previous.hash, previous.canonical, None))
    store.apply_acks(opened.name, restore, forget)


def _late_withdrawals(
    opened: OpenTarget,
    plan: Plan,
    kept: Iterable[Change],
    execution: Execution,
    store: StateStore,
    budget: Budget,
) -> tuple[tuple[Operation, ...], str | None]:
    """Deletes of the products the target refused this run whose older version it still
    holds, when they are to be withdrawn and nothing held deletes back; or why the
    delete guards hold them (with the run's own deletes, over a limit)."""
    if (
        opened.config.rejected != "withdraw"
        or not plan.source_complete
        or not plan.guard.allowed
        or execution.fatal
        or budget.stop.is_set()
    ):
        return (), None
    refused = {r.key for r in execution.rejections if r.by_target}
    if not refused:
        return (), None
    # only where the target held a version before (a refused create left nothing there)
    had = [change.key for change in kept if change.key in refused and change.previous is not None]
    acked = store.acked_of(opened.name, had) if had else []
    if not acked:
        return (), None
    guards = opened.config.guards
    deleting = plan.counts()["delete"] + len(acked)
    if deleting > guards.max_delete_fraction * max(opened.state_count, 1) or (
        guards.max_delete_count is not None and deleting > guards.max_delete_count
    ):
        return (), (
            f"{len(acked)} products the target refused this run are not withdrawn: with "
            f"this run's deletes that makes {deleting} of the target's {opened.state_count} "
            f"products, over targets[{opened.index}].guards (max_delete_fraction="
            f"{guards.max_delete_fraction:.0%}, max_delete_count={guards.max_delete_count}); "
            "they keep their older version until a run withdraws them"
        )
    log.info(
        "syncd.run.withdrawing",
        target=opened.name,
        products=len(acked),
        reason="refused by the target this run; the older version must not stay there",
    )
    deletes = [Change(ChangeKind.DELETE, a.key, None, a) for a in acked]
    return opened.target.plan([], deletes, full=False, deletes_allowed=True).operations, None


def _record_doubts(
    opened: OpenTarget,
    kept: Iterable[Change],
    execution: Execution,
    store: StateStore,
) -> int:
    """Remember the products whose write the target may have applied after syncd gave
    up on it, to re-send them whole once ``in_doubt_window_s`` has passed; how many
    (``kept``: the changes of the requests refused or in doubt, in the order settled)."""
    doubted: set[str] = getattr(execution, "in_doubt", set())
    if not doubted:
        return 0
    payloads: dict[str, bytes | None] = {}
    for change in kept:
        if change.key in doubted:
            source = change.document or change.previous
            payloads[change.key] = source.canonical if source is not None else None
    until = time.time() + opened.config.in_doubt_window_s
    store.record_doubts(opened.name, list(payloads.items()), until)
    log.warning(
        "syncd.run.writes_in_doubt",
        target=opened.name,
        products=len(payloads),
        reassert_after_s=opened.config.in_doubt_window_s,
    )
    return len(payloads)


def combined(first: Execution, second: Execution) -> Execution:
    """Two executions of one run as one: counts added, errors kept, the later last."""
    merged = Execution()
    for name in (f.name for f in fields(Execution)):
        a, b = getattr(first, name), getattr(second, name)
        if isinstance(a, bool):
            value: Any = a or b
        elif isinstance(a, Counter | list | int):
            value = a + b
        elif isinstance(a, set):
            value = a | b
        else:  # the first fatal error, the last error seen
            value = (a or b) if name == "fatal" else (b or a)
        setattr(merged, name, value)
    return merged


def too_many_rejected(opened: OpenTarget, plan: Plan, execution: Execution) -> str | None:
    """Why the run is not ok when the target refused (with what was rejected before
    sending) more than ``max_reject_fraction`` of the records read."""
    refused = len(execution.rejections)
    if not refused:
        return None  # the plan's own rejections were weighed by the guards
    rejected = len(plan.rejected) + plan.held_rejected + refused
    read = max(plan.source_count, 1)
    limit = opened.config.guards.max_reject_fraction
    if rejected <= limit * read:
        return None
    return (
        f"{rejected} of the {plan.source_count} records read ({rejected / read:.0%}) were "
        f"rejected ({refused} by the target: {execution.rejections[0].reason}), over "
        f"max_reject_fraction={limit:.0%}; fix them or change "
        f"targets[{opened.index}].guards.max_reject_fraction"
    )
