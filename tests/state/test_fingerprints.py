"""The in-memory index of a target's fingerprints."""

from __future__ import annotations

import hashlib

import pytest

from syncd.state.fingerprints import FingerprintIndex


def digest(i: int) -> bytes:
    return hashlib.blake2b(str(i).encode(), digest_size=16).digest()


def value(fingerprint: bytes) -> int:
    return int.from_bytes(fingerprint, "big")


def test_every_fingerprint_is_found_and_no_other_whatever_the_input_order() -> None:
    stored = [digest(i) for i in range(1000)]
    for fingerprints in (sorted(stored), stored):
        index = FingerprintIndex(fingerprints)
        assert len(index) == 1000
        assert all(index.find(value(f)) >= 0 for f in stored)
        assert all(index.find(value(digest(i))) == -1 for i in range(1000, 2000))


def test_fingerprints_sharing_their_first_half_are_told_apart() -> None:
    high = b"\x01" * 8
    index = FingerprintIndex([high + b"\x03" * 8, high + b"\x01" * 8, b"\x00" * 16])
    assert index.find(value(high + b"\x01" * 8)) >= 0
    assert index.find(value(high + b"\x03" * 8)) >= 0
    assert index.find(value(high + b"\x02" * 8)) == -1
    assert index.find(value(b"\xff" * 16)) == -1


def test_seeing_marks_fingerprints_and_reports_second_sightings() -> None:
    a, b, c, absent = digest(1), digest(2), digest(3), digest(4)
    index = FingerprintIndex([a, b, c])

    assert index.see(map(value, [a, absent, a])) == ([True, False, True], [value(a)])
    assert index.see([value(a)]) == ([True], [value(a)])
    assert index.matched == 1
    assert index.was_seen(value(a)) and not index.was_seen(value(b))
    assert not index.was_seen(value(absent))
    assert index.unseen() == sorted([b, c])
    assert index.see([value(c), value(b)]) == ([True, True], [])
    assert index.unseen() == []


def test_fingerprints_of_another_length_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        FingerprintIndex([b"short"])


def test_an_empty_index_finds_nothing() -> None:
    index = FingerprintIndex([])
    assert index.find(value(digest(1))) == -1
    assert index.see([value(digest(1))]) == ([False], [])
    assert index.unseen() == []
