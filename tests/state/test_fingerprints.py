"""The in-memory index of a target's fingerprints."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.state import fingerprints as module
from syncd.state.fingerprints import FingerprintIndex


def digest(i: int) -> bytes:
    return hashlib.blake2b(str(i).encode(), digest_size=16).digest()


def test_every_fingerprint_is_found_and_no_other_whatever_the_input_order() -> None:
    stored = [digest(i) for i in range(1000)]
    for fingerprints in (sorted(stored), stored, [b"".join(stored[:500]), *stored[500:]]):
        index = FingerprintIndex(fingerprints)
        assert len(index) == 1000
        assert all(index.find(f) >= 0 for f in stored)
        assert all(index.find(digest(i)) == -1 for i in range(1000, 2000))


def test_fingerprints_sharing_their_first_half_are_told_apart() -> None:
    high = b"\x01" * 8
    index = FingerprintIndex([high + b"\x03" * 8, high + b"\x01" * 8, b"\x00" * 16])
    assert index.find(high + b"\x01" * 8) >= 0
    assert index.find(high + b"\x03" * 8) >= 0
    assert index.find(high + b"\x02" * 8) == -1
    assert index.find(b"\xff" * 16) == -1
    assert index.see(high + b"\x03" * 8 + high + b"\x02" * 8) == ([True, False], [])
    assert index.unseen() == [b"\x00" * 16, high + b"\x01" * 8]


def test_seeing_marks_fingerprints_and_reports_second_sightings() -> None:
    a, b, c, absent = digest(1), digest(2), digest(3), digest(4)
    index = FingerprintIndex([a, b, c])

    assert index.see(a + absent + a) == ([True, False, True], [a])
    assert index.see(a) == ([True], [a])
    assert index.matched == 1
    assert index.was_seen(a) and not index.was_seen(b)
    assert not index.was_seen(absent)
    assert index.unseen() == sorted([b, c])
    assert index.see(c + b) == ([True, True], [])
    assert index.unseen() == []


def test_fingerprints_of_another_length_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        FingerprintIndex([b"short"])
    with pytest.raises(ValueError, match="16 bytes"):
        FingerprintIndex([digest(1)]).see(b"short")


def test_an_empty_index_finds_nothing() -> None:
    index = FingerprintIndex([])
    assert index.find(digest(1)) == -1
    assert index.see(digest(1)) == ([False], [])
    assert index.see(b"") == ([], [])
    assert index.unseen() == []


# few distinct bytes, so fingerprints often share their first half (or all of it)
halves = st.sampled_from([b"\x00" * 8, b"\x7f" * 8, b"\xff" * 8])
fingerprint = st.builds(bytes.__add__, halves, st.binary(min_size=8, max_size=8)) | st.builds(
    bytes, st.lists(st.sampled_from([0, 1, 255]), min_size=16, max_size=16)
)


@given(
    stored=st.lists(fingerprint, unique=True, max_size=40),
    chunks=st.lists(st.lists(fingerprint, max_size=12), max_size=6),
)
def test_the_index_behaves_like_a_set_with_seen_flags(stored, chunks) -> None:
    index = FingerprintIndex(stored)
    known, seen = set(stored), set()
    for chunk in chunks:
        expected_repeated = []
        for f in chunk:
            if f in known and f in seen:
                expected_repeated.append(f)
            seen.update({f} & known)
        assert index.see(b"".join(chunk)) == ([f in known for f in chunk], expected_repeated)
        assert index.matched == len(seen)
    assert index.unseen() == sorted(known - seen)
    assert all(index.was_seen(f) == (f in seen) for f in stored)
    probes = stored + [f for chunk in chunks for f in chunk]
    assert index.were_seen(b"".join(probes)) == [f in seen for f in probes]


def test_fingerprints_that_bunch_up_are_looked_up_by_binary_search(monkeypatch) -> None:
    monkeypatch.setattr(module, "BUCKET_LIMIT", 1)
    stored = [b"\x00" * 8 + digest(i)[:8] for i in range(5)] + [digest(i) for i in range(5)]
    index = FingerprintIndex(stored)
    assert index._starts is None  # every first half 0: one bucket holds five
    assert all(index.find(f) >= 0 for f in stored)
    assert index.see(b"".join([stored[3], digest(99), stored[7]])) == ([True, False, True], [])
    assert index.unseen() == sorted(set(stored) - {stored[3], stored[7]})


@given(stored=st.lists(st.binary(min_size=16, max_size=16), unique=True, min_size=1, max_size=300))
def test_the_bucket_directory_finds_what_binary_search_finds(stored) -> None:
    index = FingerprintIndex(stored)
    probes = stored + [bytes(16), b"\xff" * 16] + [digest(i) for i in range(50)]
    high, low = module._halves(b"".join(probes))
    at, found = index._positions(high, low)
    at_searched, found_searched = index._searched(high, low)
    assert found.tolist() == found_searched.tolist() == [f in set(stored) for f in probes]
    assert at[found].tolist() == at_searched[found_searched].tolist()
