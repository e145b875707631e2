"""A target's raw-row fingerprints, held sorted in memory for one run.

Looking up a million fingerprints one SQL probe at a time costs 4 to 5 µs each (random
pages of a large index). Here the sorted fingerprints are cut into buckets by their
leading bits (fingerprints are uniform, so a bucket holds one or two), and a lookup
reads one bucket: a few tenths of a µs. The index costs at most 21 bytes a product
(the two 64-bit halves, a bucket start, a seen flag).
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from collections.abc import Iterable
from itertools import accumulate, islice, repeat
from operator import le, rshift

_MASK = (1 << 64) - 1


class FingerprintIndex:
    """Sorted 16-byte fingerprints with a seen flag each.

    Lookups take a fingerprint as the integer of its bytes read big-endian (the
    caller computes them as integers: no conversion per lookup).

    Built from the ``source_hash`` values of a target's products, one by one or a batch
    concatenated at a time, in any order (the store reads them in index order, so
    sorting is then only a check).
    """

    def __init__(self, fingerprints: Iterable[bytes]) -> None:
        words = array("Q")
        for chunk in fingerprints:  # a batch of them concatenated, or one
            if len(chunk) % 16:
                raise ValueError("fingerprints must be 16 bytes each")
            words.frombytes(chunk)
        if sys.byteorder == "little":
            words.byteswap()  # big-endian halves: numeric order is byte order
        high, low = words[0::2], words[1::2]
        del words
        if not all(map(le, high, islice(high, 1, None))):
            pairs = sorted(zip(high, low, strict=True))
            high = array("Q", (first for first, _ in pairs))
            low = array("Q", (second for _, second in pairs))
        self._high, self._low = high, low
        self._seen = bytearray(len(high))
        # 2**bits buckets, at most one per fingerprint; bucket b spans starts[b]:starts[b+1]
        bits = max(0, len(high).bit_length() - 1)
        self._shift = 64 - bits
        counts = array("I", bytes(4 << bits))
        for bucket, count in Counter(map(rshift, high, repeat(self._shift))).items():
            counts[bucket] = count
        self._starts = array("I", accumulate(counts, initial=0))
        self.matched = 0
        """How many distinct fingerprints were seen."""

    def __len__(self) -> int:
        return len(self._seen)

    def find(self, value: int) -> int:
        """The position of a fingerprint, or -1 when absent."""
        high, low = value >> 64, value & _MASK
        bucket = high >> self._shift
        highs, lows = self._high, self._low
        for position in range(self._starts[bucket], self._starts[bucket + 1]):
            if highs[position] == high and lows[position] == low:
                return position
        return -1

    def see(self, fingerprints: Iterable[int]) -> tuple[list[bool], list[int]]:
        """Mark these fingerprints (as big-endian integers) seen; return whether each is
        present, and those seen before (earlier in this run, or twice in the batch)."""
        present: list[bool] = []
        repeated: list[int] = []
        # ``find``, inlined: this runs once per source row and target
        highs, lows, starts, seen = self._high, self._low, self._starts, self._seen
        shift = 64 + self._shift
        for value in fingerprints:
            bucket = value >> shift
            position, end = starts[bucket], starts[bucket + 1]
            high, low = value >> 64, value & _MASK
            while position < end:
                if highs[position] == high and lows[position] == low:
                    break
                position += 1
            else:
                present.append(False)
                continue
            present.append(True)
            if seen[position]:
                repeated.append(value)
            else:
                seen[position] = 1
                self.matched += 1
        return present, repeated

    def was_seen(self, value: int) -> bool:
        position = self.find(value)
        return position >= 0 and bool(self._seen[position])

    def unseen(self) -> list[bytes]:
        """The fingerprints never seen, in order."""
        if self.matched == len(self._seen):
            return []
        return [
            ((self._high[i] << 64) | self._low[i]).to_bytes(16, "big")
            for i, seen in enumerate(self._seen)
            if not seen
        ]
