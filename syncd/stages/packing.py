"""Planned changes and requests as columns of plain values, the form ``SpilledList`` pickles.

Pickling a ``Change`` whole calls a Python ``__reduce__`` for it, its document and its
spooled payload, and unpickling runs three dataclass constructors through pickle's
machinery: ~5 µs per product and target, on every first sync. Columns of strings and bytes
pickle in C (~0.1 µs), and a chunk's payloads go to the spool with one write.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby, repeat
from operator import is_
from typing import Any, cast

from syncd.diff import Change, ChangeKind, Operation, SentCopy
from syncd.model import Acked, Document, Spool, Spooled, quick_new

ChangeColumns = tuple[str, list[str], list[Any] | None, list[Any] | None, list[Any], Any, Any]
"""A chunk's changes as columns: ``(kinds, keys, document keys, wheres, hashes, source
hashes, previous)``. ``kinds`` are the kinds' values joined by NUL; a change without a
document has None in the four document columns; ``where`` is ``(offset, length)`` in the
list's spool, a ``Spooled`` of another spool, or None (hollow); the previous entry is
``(key, hash, canonical)`` or None. A column of the same value for every change (the
document keys the keys, no payload kept, no fingerprint, nothing previous: a first sync)
is None (``_SAME``), not a list of them.

Columns, not a tuple a change (or two, with the document's), pickled without a memo (see
``syncd.stages.spill``): pickle writes a list of strings or bytes in C and keeps no memo
entry for what it never sees twice (~0.2 against ~0.4 µs a change packed and pickled)."""

_KINDS = {kind.value: kind for kind in ChangeKind}
_NEW_SPOOLED, _NEW_DOCUMENT, _NEW_ACKED = quick_new(Spooled), quick_new(Document), quick_new(Acked)
_NEW_CHANGE, _NEW_OPERATION = quick_new(Change), quick_new(Operation)
"""Their ``cls(...)`` for unpacking: a few objects a change read back (see ``quick_new``)."""
_SAME = None
"""A column packed as None: every change has the same value (see ``ChangeColumns``)."""


def _where(body: bytes | Spooled, spool: Spool, offset: int) -> tuple[Any, int]:
    """Where a payload is (or goes, at ``offset`` in ``spool``) and the next new offset."""
    if isinstance(body, bytes):
        return (offset, len(body)), offset + len(body)
    if body.spool is spool:
        return (body.offset, body.length), offset
    return body, offset  # another spool's: pickled as it is


def _column(values: list[Any], same: Any) -> list[Any] | None:
    """``values``, or None when each is ``same`` (compared in C, by identity)."""
    return _SAME if all(map(is_, values, repeat(same))) else values


def pack_changes(changes: Sequence[Change], spool: Spool, *, hollow: bool = False) -> ChangeColumns:
    """``changes`` as columns; the payloads not yet in ``spool`` are put there, in one write
    (what ``Document.spooled`` does one payload at a time), and the decoded dicts dropped.
    ``hollow``: no payload is kept at all (a plan that is only counted and shown)."""
    documents = [change.document for change in changes]
    keys = [change.key for change in changes]
    wheres: list[Any] | None = _SAME
    if not hollow:
        wheres = [None] * len(documents)
        new = [d.body for d in documents if d is not None and isinstance(d.body, bytes)]
        offset = spool.put_all(new) if new else 0
        for number, d in enumerate(documents):
            if d is not None:
                wheres[number], offset = _where(d.body, spool, offset)
    doc_keys: list[Any]
    hashes: list[Any]
    sources: list[Any]
    if not any(map(is_, documents, repeat(None))):  # each has its document
        whole = cast("list[Document]", documents)
        doc_keys = [d.key for d in whole]
        hashes = [d.hash for d in whole]
        sources = [d.source_hash for d in whole]
    else:
        doc_keys = [None if d is None else d.key for d in documents]
        hashes = [None if d is None else d.hash for d in documents]
        sources = [None if d is None else d.source_hash for d in documents]
    previous = [change.previous for change in changes]
    return (
        "\0".join([change.kind for change in changes]),  # a StrEnum's join as their values
        keys,
        _SAME if doc_keys == keys else doc_keys,
        wheres,
        hashes,
        _column(sources, None),
        _SAME
        if _column(previous, None) is _SAME
        else [
            None if p is None else (p.key, p.hash, b"" if hollow else p.canonical) for p in previous
        ],
    )


def lowest_offset(columns: ChangeColumns) -> int | None:
    """The lowest offset of the list's spool a payload of ``columns`` is at (None: none is)."""
    wheres = columns[3] or ()
    return min((where[0] for where in wheres if where.__class__ is tuple), default=None)


def unpack_changes(columns: ChangeColumns, spool: Spool) -> list[Change]:
    """The changes ``pack_changes`` made ``columns`` of, their payloads read from ``spool``."""
    kinds, keys, doc_keys, wheres, digests, source_hashes, previous = columns
    out: list[Change] = []
    if not keys:
        return out
    new_spooled, new_document, new_acked, new_change = (
        _NEW_SPOOLED,
        _NEW_DOCUMENT,
        _NEW_ACKED,
        _NEW_CHANGE,
    )
    for kind, key, doc_key, where, digest, source_hash, before in zip(
        map(_KINDS.__getitem__, kinds.split("\0")),
        keys,
        keys if doc_keys is _SAME else doc_keys,
        repeat(None) if wheres is _SAME else wheres,
        digests,
        repeat(None) if source_hashes is _SAME else source_hashes,
        repeat(None) if previous is _SAME else previous,
        strict=False,  # a column packed as None repeats None; the lists are as long
    ):
        d = None
        if doc_key is not None:
            body = (
                new_spooled(Spooled, spool, *where)
                if where.__class__ is tuple
                else b""  # hollow
                if where is None
                else where
            )
            d = new_document(Document, doc_key, body, digest, source_hash)
        p = None if before is None else new_acked(Acked, *before)
        out.append(new_change(Change, kind, key, d, p))
    return out


class ChangePacking:
    """``SpilledList``'s packing of ``Change`` items. ``hollow``: without their payloads
    (documents read back with empty bodies), for the changes of a plan only counted and
    shown, as ``OperationPacking``'s."""

    def __init__(self, *, hollow: bool = False) -> None:
        self.hollow = hollow

    def pack(self, items: list[Change], spool: Spool) -> Any:
        return pack_changes(items, spool, hollow=self.hollow)

    @staticmethod
    def unpack(data: Any, spool: Spool) -> list[Change]:
        return unpack_changes(data, spool)

    def lowest(self, data: Any) -> int | None:
        return None if self.hollow else lowest_offset(data)  # hollow: no payload spooled


class OperationPacking:
    """``SpilledList``'s packing of ``Operation`` items: their fields, and all their
    changes as one set of columns (``pack_changes``) each operation takes a slice of.
    ``hollow``: without their payloads (documents read back with empty bodies), for a plan
    that is only counted and shown (``syncd plan``): its spool holds keys and hashes."""

    def __init__(self, *, hollow: bool = False) -> None:
        self.hollow = hollow

    def pack(self, items: list[Operation], spool: Spool) -> Any:
        # the requests' fields but the body as runs of requests alike (a first sync's
        # UserFlux group is one run of 2000: pickled once, see ``syncd.stages.spill``)
        heads = [
            (*head, len(list(run)))
            for head, run in groupby(
                [(o.endpoint, o.mode, o.reason, o.path, o.removes_unlisted) for o in items]
            )
        ]
        bodies = _column([operation.body for operation in items], None)
        counts = [len(operation.changes) for operation in items]
        changes = [change for operation in items for change in operation.changes]
        return (heads, counts, bodies), pack_changes(changes, spool, hollow=self.hollow)

    @staticmethod
    def unpack(data: Any, spool: Spool) -> list[Operation]:
        (heads, counts, bodies), columns = data
        changes = unpack_changes(columns, spool)
        out: list[Operation] = []
        start = 0
        number = 0
        new = _NEW_OPERATION
        for endpoint, mode, reason, path, removes_unlisted, alike in heads:
            for _ in range(alike):
                end = start + counts[number]
                body = None if bodies is _SAME else bodies[number]
                part = tuple(changes[start:end])
                out.append(
                    new(Operation, endpoint, mode, reason, part, body, path, removes_unlisted)
                )
                start = end
                number += 1
        return out

    def lowest(self, data: Any) -> int | None:
        return None if self.hollow else lowest_offset(data[1])  # hollow: no payload spooled


class SentCopyPacking:
    """``SpilledList``'s packing of ``SentCopy`` items (an outbox's journal), as compact as
    a first sync needs: the keys joined by NUL (about a key's length a product), the
    markers (``c`` a create, ``u`` an update whose replaced version was kept, ``n`` one
    whose was not), and the replaced versions (hash, canonical) of the kept updates."""

    @staticmethod
    def pack(items: list[SentCopy], spool: Spool) -> Any:
        marks = "".join("n" if not c.kept else "c" if c.previous is None else "u" for c in items)
        replaced = [(p.hash, p.canonical) for c in items if c.kept and (p := c.previous)]
        keys: str | list[str] = "\0".join(c.key for c in items)
        if keys.count("\0") != len(items) - 1:  # a key with a NUL in it: as a list
            keys = [c.key for c in items]
        return keys, marks, replaced

    @staticmethod
    def unpack(data: Any, spool: Spool) -> list[SentCopy]:
        keys, marks, replaced = data
        versions = iter(replaced)
        out: list[SentCopy] = []
        for key, mark in zip(
            keys.split("\0") if isinstance(keys, str) else keys, marks, strict=True
        ):
            if mark == "c":
                out.append(SentCopy(key, ChangeKind.CREATE, None))
            elif mark == "u":
                out.append(SentCopy(key, ChangeKind.UPDATE, Acked(key, *next(versions))))
            else:
                out.append(SentCopy(key, ChangeKind.UPDATE, None, False))
        return out

    @staticmethod
    def lowest(data: Any) -> int | None:
        return None
