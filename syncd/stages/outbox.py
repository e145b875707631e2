"""One target's requests as they are planned, on disk, taken by its sender as they come.

Planning puts a group of requests at a time (``put``) while the source is still being
read; the target's sender takes them a group at a time (``take``) on its own thread, so a
first sync's first requests go out seconds after the read starts instead of after the
whole plan, and a slow target's backlog waits on disk, not in memory, while the read goes
on for the others. ``close`` says the plan is complete (``take`` then ends).

The spool stays bounded: once every request of a group is over (``finished``), the disk
the group's requests and payloads took is released (``Spool.release``), so the outbox
holds what is planned and not sent yet, not the whole plan. What the run needs of a sent
group afterwards is kept small: each change taken is journaled as its key, kind and the
version it replaces (``SentCopy``: nothing of the new payload; for a create, the key
alone; the replaced versions up to ``spool_max_mb`` of journal a run, dropped when the
read ends), and the sender keeps the changes of the requests refused or in doubt.

Some decisions need the whole read: a key found twice is pushed in neither copy. When the
read ends, ``cancel`` removes such keys from every group the sender has not begun and
hands back, from the journal, the copies it has (they went out, or are going: the run
restores them afterwards, see ``syncd.stages.sending``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal

import structlog

from syncd.diff import Change, ChangeKind, Operation, SentCopy, Tally
from syncd.model import Spool
from syncd.stages.packing import OperationPacking, SentCopyPacking
from syncd.stages.spill import SpilledList

log = structlog.get_logger("syncd.run")

_RESTORABLE = (ChangeKind.CREATE, ChangeKind.UPDATE)
"""The changes a key found twice is restored from (``cancel``)."""


class Outbox:
    """A target's planned requests: appended by planning, taken by sending, both at once."""

    def __init__(
        self,
        spool: Spool,
        on_planned: Callable[[int], None] | None = None,
        *,
        streams: bool = True,
        max_bytes: int | None = None,
        hollow: bool = False,
    ) -> None:
        self.spool = spool
        """Where the requests and their payloads are (the target's own, when sending)."""
        self.hollow = hollow
        """The requests are kept without their payloads: a plan only counted and shown."""
        self.operations: SpilledList[Operation] = SpilledList(
            spool, packing=OperationPacking(hollow=hollow)
        )
        """Every request planned, in order (the plan's ``operations``): a group once
        finished can't be read back (its disk is released). ``hollow``: kept without their
        payloads (a plan only counted and shown, never sent)."""
        self.tally = Tally()
        """The requests counted as they were planned (less what ``cancel`` removed)."""
        self._on_planned = on_planned
        """Called with the products of each group put (the progress's growing total)."""
        self._streams = streams
        """Groups are put while the read goes on (planning holds the payloads of the ones
        to come in memory); else (a mirrored full refresh) the planned changes wait in the
        spool for the read's end, and nothing is released before the plan is complete."""
        self._ready = threading.Condition()
        self._begun = 0
        """Groups the sender has taken (begun sending)."""
        self._begun_tally = Tally()
        """The requests of the groups begun: ``cancel`` leaves them as they are."""
        self._journal: SpilledList[SentCopy] | None = None
        """Every create and update of the groups begun, as a ``SentCopy`` (in a spool of
        its own): a refresh re-sent what the target held, a delete is never planned
        before the read ends."""
        self._finished: set[int] = set()
        self._settled = 0
        """Groups before this one are all finished."""
        self._max_bytes = max_bytes
        """``put`` waits while the spool holds more than this and a group is not finished
        (None: never), until the sender catches up or ``halt``s."""
        self._halted = False
        self._waited = False
        """``put`` has waited for room (logged the first time only)."""
        self._unstored = Tally()
        """The requests put after ``halt`` (counted, never stored): ``cancel`` keeps them
        counted (a key found twice among them stays counted: they are all not sent)."""
        self._closed = False
        self._aborted = False

    def put(self, operations: Sequence[Operation]) -> None:
        """Append one group of requests (none: nothing)."""
        if not operations:
            return
        with self._ready:
            if not self._halted:  # else never taken: counted (as not sent), not kept
                self.operations.extend(operations)
            else:
                self._unstored.add(operations)
            self.tally.add(operations)
            self._ready.notify_all()
        if self._on_planned is not None:
            self._on_planned(sum(len(operation.changes) for operation in operations))
        self._wait_for_room()

    def _wait_for_room(self) -> None:
        """While the spool is over ``max_bytes`` and the sender has groups to finish, wait
        (the read holds still; the target is that far behind)."""
        limit = self._max_bytes
        if limit is None:
            return
        with self._ready:
            if not self._waiting_for_room(limit):
                return
            if not self._waited:  # once a run: behind once, it waits on nearly every put
                self._waited = True
                log.info(
                    "syncd.run.waiting_for_target",
                    spool_bytes=self.spool.live,
                    groups=self.operations.chunk_count - self._settled,
                    reason="the target's requests waiting to be sent reached spool_max_mb: "
                    "the read waits for it",
                )
            self._ready.wait_for(lambda: not self._waiting_for_room(limit))

    def _waiting_for_room(self, limit: int) -> bool:
        # not streamed (a mirrored full refresh): the whole plan is on disk already and
        # nothing is released before ``close``, so waiting would free nothing
        return (
            self._streams
            and self.spool.live > limit
            and self._settled < self.operations.chunk_count
            and not (self._halted or self._aborted)
        )

    def halt(self) -> None:
        """The sender takes nothing more (its run is over, stopped or failed): ``put``
        never waits for it any more."""
        with self._ready:
            self._halted = True
            self._ready.notify_all()

    def close(self) -> None:
        """The plan is complete: ``take`` ends once the sender has every group."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            self._release()
            if self._journal is not None:  # the read is over: no copy turns up any more
                self._journal.spool.close()
                self._journal = None

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

    def take(self) -> tuple[int, list[Operation]] | None | Literal[False]:
        """The next group to send and its number; ``False`` when none is planned yet (the
        read goes on: ask again, ``wait`` first); ``None`` when the plan is complete and
        sent. Each change taken is journaled (``cancel`` finds it there)."""
        with self._ready:
            if self._aborted:
                return None
            if self._begun < self.operations.chunk_count:
                number = self._begun
                group = self.operations.chunk(number)
                if not self._closed:  # the read goes on: a copy may still turn up
                    self._journal_group(group)
                self._begun_tally.add(group)
                self._begun += 1
                return number, group
            return None if self._closed else False

    def _journal_group(self, group: Sequence[Operation]) -> None:
        """Journal the creates and updates of ``group`` (the lock held). The versions
        updates replace are kept up to ``max_bytes`` of journal; past that, an update is
        journaled without it (``SentCopy.kept`` false: it can't be restored)."""
        if self._journal is None:
            self._journal = SpilledList(Spool(self.spool.directory), packing=SentCopyPacking())
        room = self._max_bytes is None or self._journal.spool.size < self._max_bytes
        self._journal.extend(
            # a create replaced nothing: restorable (removed) whatever the bound
            SentCopy(
                change.key,
                change.kind,
                change.previous if room else None,
                room or change.kind is ChangeKind.CREATE,
            )
            for operation in group
            for change in operation.changes
            if change.kind in _RESTORABLE
        )

    def untaken_group(self, number: int) -> list[Operation] | None:
        """Group ``number`` read back from disk, when the sender has not taken it yet
        (None: it has, and its disk may be released)."""
        with self._ready:
            return None if number < self._begun else self.operations.chunk(number)

    @property
    def backlog(self) -> int:
        """Groups put and not finished yet (taken or not)."""
        with self._ready:
            return self.operations.chunk_count - self._settled - len(self._finished)

    def finished(self, number: int) -> None:
        """Every request of group ``number`` is over (acknowledged, refused, failed or
        dropped): nothing reads it again, and the spool below the groups still needed
        is released."""
        with self._ready:
            self._finished.add(number)
            while self._settled in self._finished:
                self._finished.discard(self._settled)
                self._settled += 1
            self._release()
            self._ready.notify_all()  # ``put`` may be waiting for room

    def _release(self) -> None:
        """Release the spool below what the groups not finished need (the lock held).
        Only once a sender takes from the outbox: a plan that is not sent (``syncd plan``)
        reads its requests back after the run, and its outboxes may share a spool."""
        if not self._begun or not (self._streams or self._closed) or self._aborted:
            return
        needed = [
            self.operations.low(number)
            for number in range(self._settled, self.operations.chunk_count)
            if number not in self._finished
        ]
        # streaming, what planning puts next is written above what is in the spool now
        self.spool.release(min(needed, default=self.spool.size))

    def dispose(self) -> None:
        """Delete the spools' files (the run is over)."""
        self.spool.close()
        with self._ready:
            if self._journal is not None:
                self._journal.spool.close()

    def wait(self, timeout: float) -> None:
        """Until a group is put, the plan completes, or ``timeout`` seconds pass."""
        with self._ready:
            if self._begun >= self.operations.chunk_count and not self._closed:
                self._ready.wait(timeout)

    def wait_closed(self) -> None:
        """Until the plan is complete (or aborted)."""
        with self._ready:
            self._ready.wait_for(lambda: self._closed)

    def cancel(self, keys: frozenset[str] | set[str]) -> list[SentCopy]:
        """Remove ``keys`` from every group the sender has not begun (the tally too), and
        return their copies the sender has begun: those may have reached the target."""
        if not keys:
            return []
        with self._ready:  # the sender takes nothing meanwhile
            begun = self._begun
            sent = [copy for copy in self._journal or () if copy.key in keys]
            tally = self._begun_tally.copy()
            for number in range(begun, self.operations.chunk_count):
                group = self.operations.chunk(number)
                kept, carried = _without(group, keys)
                sent += [
                    SentCopy(change.key, change.kind, change.previous, True)
                    for change in carried
                    if change.kind in _RESTORABLE
                ]
                if kept != group:
                    self.operations.replace_chunk(number, kept)
                tally.add(kept)
            self.tally = tally.merge(self._unstored)
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
