"""A target's raw-row fingerprints, held sorted in memory for one run.

Looking up a million fingerprints one SQL probe at a time costs 4 to 5 µs each (random
pages of a large index). Here they are two sorted arrays of 64-bit halves, and a chunk
of rows is looked up at once with NumPy. Fingerprints are uniform (BLAKE2b), so their
first bits say where to look: a directory of bucket starts, one bucket per fingerprint
or so, takes a lookup to its place in one or two probes, where a binary search
(``searchsorted``) takes twenty, most of them cache misses. The index costs 21 bytes a
product (the two halves, a 32-bit bucket start, a seen flag). When fingerprints bunch
up (not BLAKE2b's: a test's), lookups fall back to the binary search.

Fingerprints are 16 bytes, compared as unsigned big-endian integers; they come and go
as ``bytes``, a chunk of them concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

_WORDS = np.dtype(">u8")
"""A fingerprint is two of these: its big-endian halves."""

Halves = npt.NDArray[np.uint64]


def _halves(fingerprints: bytes) -> tuple[Halves, Halves]:
    """The first and second halves of concatenated 16-byte fingerprints, as native
    integers (so they compare in the fingerprints' byte order)."""
    if len(fingerprints) % 16:
        raise ValueError("fingerprints must be 16 bytes each")
    words = np.frombuffer(fingerprints, dtype=_WORDS).astype(np.uint64)
    return words[0::2], words[1::2]


BUCKET_LIMIT = 64
"""Most fingerprints one bucket of the directory may hold; past it, binary search."""
DIRECTORY_BITS = 24
"""Most first bits a bucket is chosen by: 16M buckets, 64 MB (from 8M fingerprints on,
buckets hold more than one)."""


def _directory(high: Halves) -> tuple[np.uint64, npt.NDArray[np.int32] | None]:
    """The shift that takes a first half to its bucket (about one fingerprint a bucket),
    and where each bucket starts in ``high`` (sorted), one past the end last; None when
    some bucket holds over ``BUCKET_LIMIT``, or the index is too large for 32 bits."""
    size = len(high)
    bits = min(max(1, size.bit_length()), DIRECTORY_BITS)
    shift = np.uint64(64 - bits)
    if size == 0 or size >= 2**31:
        return shift, None
    counts = np.bincount((high >> shift).astype(np.intp), minlength=1 << bits)
    if int(counts.max()) > BUCKET_LIMIT:
        return shift, None
    starts = np.zeros((1 << bits) + 1, dtype=np.int32)
    np.cumsum(counts, out=starts[1:])
    return shift, starts


class FingerprintIndex:
    """Sorted 16-byte fingerprints with a seen flag each.

    Built from the ``source_hash`` values of a target's products, one by one or a batch
    concatenated at a time, in any order (the store reads them in index order, so
    sorting is then only a check).
    """

    def __init__(self, fingerprints: Iterable[bytes]) -> None:
        high, low = _halves(b"".join(fingerprints))
        rising = (high[:-1] < high[1:]) | ((high[:-1] == high[1:]) & (low[:-1] <= low[1:]))
        if not bool(np.all(rising)):
            order = np.lexsort((low, high))
            high, low = high[order], low[order]
        self._high: Halves = np.ascontiguousarray(high)
        self._low: Halves = np.ascontiguousarray(low)
        self._seen = np.zeros(len(high), dtype=bool)
        self._shared_halves = len(high) > 1 and bool(np.any(high[:-1] == high[1:]))
        """Whether two fingerprints share their first half (about 2**-64 a pair)."""
        self._shift, self._starts = _directory(self._high)
        self.matched = 0
        """How many distinct fingerprints were seen."""

    def __len__(self) -> int:
        return len(self._seen)

    def _positions(
        self, high: Halves, low: Halves
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Where each (high, low) is in the index, and whether it is there at all."""
        size = len(self._high)
        if size == 0:
            return np.zeros(len(high), dtype=np.intp), np.zeros(len(high), dtype=bool)
        if self._starts is None:
            return self._searched(high, low)
        bucket = (high >> self._shift).astype(np.intp)
        position = self._starts[bucket].astype(np.intp)
        end = self._starts[bucket + 1]
        found = np.zeros(len(high), dtype=bool)
        pending = np.flatnonzero(position < end)  # rows whose bucket is not empty
        while pending.size:  # a bucket's next entry, for the rows not found yet
            at = position[pending]
            hit = (self._high[at] == high[pending]) & (self._low[at] == low[pending])
            found[pending[hit]] = True
            at += 1
            more = ~hit & (at < end[pending])
            pending = pending[more]
            position[pending] = at[more]
        return np.minimum(position, size - 1), found

    def _searched(
        self, high: Halves, low: Halves
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """``_positions`` by binary search, for fingerprints that bunch up."""
        size = len(self._high)
        at = np.minimum(np.searchsorted(self._high, high), size - 1)
        same_high = self._high[at] == high
        found = same_high & (self._low[at] == low)
        if self._shared_halves:
            # the first of several equal first halves may not be the one: look further
            for i in np.flatnonzero(same_high & ~found):
                position = int(at[i]) + 1
                while position < size and self._high[position] == high[i]:
                    if self._low[position] == low[i]:
                        at[i], found[i] = position, True
                        break
                    position += 1
        return at, found

    def find(self, fingerprint: bytes) -> int:
        """The position of a fingerprint, or -1 when absent."""
        at, found = self._positions(*_halves(fingerprint))
        return int(at[0]) if found[0] else -1

    def see(self, fingerprints: bytes) -> tuple[list[bool], list[bytes]]:
        """Mark these fingerprints (concatenated) seen; return whether each is present,
        and those seen before (earlier in this run, or earlier in the chunk)."""
        at, found = self._positions(*_halves(fingerprints))
        rows = np.flatnonzero(found)
        positions = at[rows]
        first = np.zeros(len(positions), dtype=bool)
        first[np.unique(positions, return_index=True)[1]] = True
        repeated = rows[self._seen[positions] | ~first]
        self.matched += int(np.count_nonzero(first & ~self._seen[positions]))
        self._seen[positions] = True
        return found.tolist(), [fingerprints[16 * i : 16 * i + 16] for i in repeated.tolist()]

    def were_seen(self, fingerprints: bytes) -> list[bool]:
        """Whether each of these fingerprints (concatenated) is present and was seen."""
        at, found = self._positions(*_halves(fingerprints))
        hits: list[bool] = (found & self._seen[at]).tolist() if len(self._seen) else found.tolist()
        return hits

    def was_seen(self, fingerprint: bytes) -> bool:
        return self.were_seen(fingerprint)[0]

    def unseen(self) -> list[bytes]:
        """The fingerprints never seen, in order."""
        if self.matched == len(self._seen):
            return []
        missing = np.flatnonzero(~self._seen)
        words = np.empty((len(missing), 2), dtype=_WORDS)
        words[:, 0], words[:, 1] = self._high[missing], self._low[missing]
        joined = words.tobytes()
        return [joined[i : i + 16] for i in range(0, len(joined), 16)]
