"""One target's requests as they are planned, on disk, taken by its sender as they come.

Planning puts a group of requests at a time (``put``) while the source is still being
read; the target's sender takes them a group at a time (``take``) on its own thread, so a
first sync's first requests go out seconds after the read starts instead of after the
whole plan, and a slow target's backlog waits on disk, not in memory, while the read goes
on for the others. ``close`` says the plan is complete (``take`` then ends).

Some decisions need the whole read: a key found twice is pushed in neither copy. When the
read ends, ``cancel`` removes such keys from every group the sender has not begun and
hands back the changes of the groups it has (they went out, or are going: the run
restores them afterwards, see ``syncd.stages.deciding``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

from syncd.diff import Change, Operation, Tally
from syncd.model import Spool
from syncd.stages.packing import OperationPacking
from syncd.stages.spill import SpilledList


class Outbox:
    """A target's planned requests: appended by planning, taken by sending, both at once."""

    def __init__(self, spool: Spool, on_planned: Callable[[int], None] | None = None) -> None:
        self.operations: SpilledList[Operation] = SpilledList(spool, packing=OperationPacking())
        """Every request planned, in order (the plan's ``operations``)."""
        self.tally = Tally()
        """The requests counted as they were planned (less what ``cancel`` removed)."""
        self._on_planned = on_planned
        """Called with the products of each group put (the progress's growing total)."""
        self._ready = threading.Condition()
        self._begun = 0
        """Groups the sender has taken (begun sending)."""
        self._closed = False
        self._aborted = False

    def put(self, operations: Sequence[Operation]) -> None:
        """Append one group of requests (none: nothing)."""
        if not operations:
            return
        products = sum(len(operation.changes) for operation in operations)
        with self._ready:
            self.operations.extend(operations)
            self.tally.add(operations)
            self._ready.notify_all()
        if self._on_planned is not None:
            self._on_planned(products)

    def close(self) -> None:
        """The plan is complete: ``take`` ends once the sender has every group."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def abort(self) -> None:
        """The run failed before its plan was complete: ``take`` ends now (what the sender
        has begun still settles; nothing else goes out)."""
        with self._ready:
            self._closed = self._aborted = True
            self._ready.notify_all()

    @property
    def aborted(self) -> bool:
        """The run failed (``abort``): what was not taken was never sent."""
        return self._aborted

    def take(self) -> list[Operation] | None | Literal[False]:
        """The next group to send; ``False`` when none is planned yet (the read goes on:
        ask again, ``wait`` first); ``None`` when the plan is complete and sent."""
        with self._ready:
            if self._aborted:
                return None
            if self._begun < self.operations.chunk_count:
                number = self._begun
                self._begun += 1
                return self.operations.chunk(number)
            return None if self._closed else False

    def wait(self, timeout: float) -> None:
        """Until a group is put, the plan completes, or ``timeout`` seconds pass."""
        with self._ready:
            if self._begun >= self.operations.chunk_count and not self._closed:
                self._ready.wait(timeout)

    def wait_closed(self) -> None:
        """Until the plan is complete (or aborted)."""
        with self._ready:
            self._ready.wait_for(lambda: self._closed)

    def cancel(self, keys: frozenset[str] | set[str]) -> list[Change]:
        """Remove ``keys`` from every group the sender has not begun (the tally too), and
        return their changes in the groups it has: those may have reached the target."""
        if not keys:
            return []
        with self._ready:  # the sender takes nothing meanwhile
            begun = self._begun
            sent = [
                change
                for group in self.operations.chunks(stop=begun)
                for operation in group
                for change in operation.changes
                if change.key in keys
            ]
            for number in range(begun, self.operations.chunk_count):
                group = self.operations.chunk(number)
                kept, carried = _without(group, keys)
                sent += carried
                if kept != group:
                    self.operations.replace_chunk(number, kept)
            self.tally = Tally().add(self.operations)
            return sent


def _without(
    group: Sequence[Operation], keys: frozenset[str] | set[str]
) -> tuple[list[Operation], list[Change]]:
    """The group's requests without the changes of ``keys`` (a batch loses them: its body
    is built when sent; a request left with no change is dropped), and the changes of
    ``keys`` a request must still carry (its body was planned with them)."""
    kept: list[Operation] = []
    carried: list[Change] = []
    for operation in group:
        changes = tuple(change for change in operation.changes if change.key not in keys)
        if len(changes) == len(operation.changes):
            kept.append(operation)
        elif not changes:
            continue
        elif operation.body is None:
            kept.append(replace(operation, changes=changes))
        else:
            kept.append(operation)
            carried += [change for change in operation.changes if change.key in keys]
    return kept, carried
