"""A list kept on disk: what a run plans (changes, then requests), a chunk at a time.

``SpilledList`` pickles each chunk appended into the run's ``Spool`` and keeps only where
the chunk is and how many items it holds, so a first sync's million changes cost a few
bytes of memory per chunk instead of ~500 bytes per product and target. Reading it back
(``iter``) unpickles one chunk at a time; a spooled payload inside a chunk points back into
the same spool.
"""

from __future__ import annotations

import bisect
import io
import pickle
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar, overload

from syncd.model import Spool, Spooled

T = TypeVar("T")


class Packing(Protocol[T]):
    """How a ``SpilledList`` turns a chunk of items into plain data that pickles fast (and
    back), see ``syncd.stages.packing``; without one, the items are pickled as they are."""

    def pack(self, items: list[T], spool: Spool) -> Any: ...

    def unpack(self, data: Any, spool: Spool) -> list[T]: ...

    def lowest(self, data: Any) -> int | None:
        """The lowest offset in the list's spool that ``data`` (packed) points at, if any:
        a chunk needs the spool from there on (``SpilledList.low``)."""
        ...


class SpilledList(Sequence[T], Generic[T]):
    """A sequence appended to a chunk at a time (``extend``), stored pickled in a spool.

    Indexing finds the chunk by a bisection over the chunks' running counts; iterating reads
    each chunk once. Compares equal to any sequence with the same items (``plan.operations
    == ()``), as the tuple it replaces did.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self, spool: Spool, items: Iterable[T] = (), packing: Packing[T] | None = None
    ) -> None:
        self._spool = spool
        self._packing = packing
        self._chunks: list[Spooled] = []
        self._ends: list[int] = []
        """Items up to and including each chunk (running counts)."""
        self._lows: list[int] = []
        """The lowest spool offset each chunk needs (its own, or a payload's before it)."""
        self.extend(items)

    def extend(self, items: Iterable[T]) -> None:
        """Append ``items`` as one chunk (nothing for none)."""
        chunk = list(items)
        if not chunk:
            return
        where, low = self._store(chunk)
        self._chunks.append(where)
        self._lows.append(low)
        self._ends.append(len(self) + len(chunk))

    def _store(self, chunk: list[T]) -> tuple[Spooled, int]:
        """The chunk put in the spool: where, and the lowest offset it needs."""
        low = self._spool.size  # what the packing puts (payloads) comes after it
        if self._packing is None:
            data: Any = chunk
        else:
            data = self._packing.pack(chunk, self._spool)
            earlier = self._packing.lowest(data)
            if earlier is not None:
                low = min(low, earlier)
        return self._spool.put(_dumps(data, memo=self._packing is None)), low

    def low(self, number: int) -> int:
        """The lowest offset of the spool the ``number``-th chunk needs: once every chunk
        that will be read again is above an offset, the spool may ``release`` below it."""
        return self._lows[number]

    @property
    def spool(self) -> Spool:
        return self._spool

    def chunks(self) -> Iterator[list[T]]:
        """The chunks as appended, each read back from disk."""
        for where in self._chunks:
            yield self._load(where)

    @property
    def chunk_count(self) -> int:
        return len(self._chunks)

    def chunk(self, number: int) -> list[T]:
        """The ``number``-th chunk appended, read back from disk."""
        loaded: list[T] = self._load(self._chunks[number])
        return loaded

    def replace_chunk(self, number: int, items: Iterable[T]) -> None:
        """Put ``items`` in place of the ``number``-th chunk (fewer, or none: the running
        counts after it move)."""
        chunk = list(items)
        self._chunks[number], low = self._store(chunk)
        self._lows[number] = min(self._lows[number], low)
        start = self._ends[number - 1] if number else 0
        shift = start + len(chunk) - self._ends[number]
        for later in range(number, len(self._ends)):
            self._ends[later] += shift

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self) -> Iterator[T]:
        for chunk in self.chunks():
            yield from chunk

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return tuple(self)[index]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("SpilledList index out of range")
        number = bisect.bisect_right(self._ends, index)
        start = self._ends[number - 1] if number else 0
        chunk: list[T] = self._load(self._chunks[number])
        return chunk[index - start]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"SpilledList({len(self)} items in {len(self._chunks)} chunks)"

    def _load(self, where: Spooled) -> Any:
        data = pickle.loads(where.read())  # noqa: S301 (bytes this run wrote itself)
        return data if self._packing is None else self._packing.unpack(data, self._spool)


def _dumps(data: Any, *, memo: bool) -> bytes:
    """``data`` pickled; without ``memo`` (a packing's plain columns, where no object is met
    twice but a few strings, and none holds itself), pickle keeps no table of the objects it
    wrote: a chunk's keys and hashes cost half as much (~0.25 against ~0.5 µs a change)."""
    if memo:
        return pickle.dumps(data, pickle.HIGHEST_PROTOCOL)
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo (the C pickler's own switch)
    pickler.dump(data)
    return buffer.getvalue()
