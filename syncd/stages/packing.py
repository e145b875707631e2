"""Planned changes and requests as columns of plain values, the form ``SpilledList`` pickles.

Pickling a ``Change`` whole calls a Python ``__reduce__`` for it, its document and its
spooled payload, and unpickling runs three dataclass constructors through pickle's
machinery: ~5 µs per product and target, on every first sync. Columns of strings and bytes
pickle in C (~0.1 µs), and a chunk's payloads go to the spool with one write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syncd.diff import Change, ChangeKind, Operation, SentCopy
from syncd.model import Acked, Document, Spool, Spooled

ChangeColumns = tuple[list[Any], list[str], list[Any], list[Any], list[Any], list[Any], list[Any]]
"""A chunk's changes as columns, one item a change: ``(kinds, keys, document keys, wheres,
hashes, source hashes, previous)``. A change without a document has None in the four
document columns; ``where`` is ``(offset, length)`` in the list's spool, a ``Spooled`` of
another spool, or None (hollow); the previous entry is ``(key, hash, canonical)`` or None.

Columns, not a tuple a change (or two, with the document's): pickle writes a list of
strings or bytes in C and keeps no memo entry for tuples it never sees (~0.2 against
~0.4 µs a change packed and pickled)."""


def _where(body: bytes | Spooled, spool: Spool, offset: int) -> tuple[Any, int]:
    """Where a payload is (or goes, at ``offset`` in ``spool``) and the next new offset."""
    if isinstance(body, bytes):
        return (offset, len(body)), offset + len(body)
    if body.spool is spool:
        return (body.offset, body.length), offset
    return body, offset  # another spool's: pickled as it is


def pack_changes(changes: Sequence[Change], spool: Spool, *, hollow: bool = False) -> ChangeColumns:
    """``changes`` as columns; the payloads not yet in ``spool`` are put there, in one write
    (what ``Document.spooled`` does one payload at a time), and the decoded dicts dropped.
    ``hollow``: no payload is kept at all (a plan that is only counted and shown)."""
    documents = [change.document for change in changes]
    wheres: list[Any] = [None] * len(documents)
    if not hollow:
        new = [d.body for d in documents if d is not None and isinstance(d.body, bytes)]
        offset = spool.put_all(new) if new else 0
        for number, d in enumerate(documents):
            if d is not None:
                wheres[number], offset = _where(d.body, spool, offset)
    return (
        [change.kind for change in changes],
        [change.key for change in changes],
        [None if d is None else d.key for d in documents],
        wheres,
        [None if d is None else d.hash for d in documents],
        [None if d is None else d.source_hash for d in documents],
        [
            None
            if (p := change.previous) is None
            else (p.key, p.hash, b"" if hollow else p.canonical)
            for change in changes
        ],
    )


def lowest_offset(columns: ChangeColumns) -> int | None:
    """The lowest offset of the list's spool a payload of ``columns`` is at (None: none is)."""
    return min((where[0] for where in columns[3] if where.__class__ is tuple), default=None)


def unpack_changes(columns: ChangeColumns, spool: Spool) -> list[Change]:
    """The changes ``pack_changes`` made ``columns`` of, their payloads read from ``spool``."""
    out: list[Change] = []
    for kind, key, doc_key, where, digest, source_hash, previous in zip(*columns, strict=True):
        d = None
        if doc_key is not None:
            body = (
                Spooled(spool, *where)
                if where.__class__ is tuple
                else b""  # hollow
                if where is None
                else where
            )
            d = Document(doc_key, body, digest, source_hash)
        p = None if previous is None else Acked(*previous)
        out.append(Change(kind, key, d, p))
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
        changes = [change for operation in items for change in operation.changes]
        heads = [
            (o.endpoint, o.mode, o.reason, len(o.changes), o.body, o.path, o.removes_unlisted)
            for o in items
        ]
        return heads, pack_changes(changes, spool, hollow=self.hollow)

    @staticmethod
    def unpack(data: Any, spool: Spool) -> list[Operation]:
        heads, columns = data
        changes = unpack_changes(columns, spool)
        out: list[Operation] = []
        start = 0
        for endpoint, mode, reason, count, body, path, removes_unlisted in heads:
            end = start + count
            part = tuple(changes[start:end])
            out.append(Operation(endpoint, mode, reason, part, body, path, removes_unlisted))
            start = end
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
