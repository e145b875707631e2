"""The staging table's SQLite fast path (``_stage_packed``) against executemany."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.state.db import STAGED_COLUMNS
from syncd.state.schema import staging_table
from syncd.state.staging import _stage, _stage_packed

_hashes = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))
_entries = st.lists(st.tuples(st.text(max_size=8), _hashes), min_size=1, max_size=8)
_sources = st.none() | st.lists(st.none() | _hashes, min_size=8, max_size=8)


def _staged(table: sa.Table, conn: sa.Connection) -> list[tuple[object, ...]]:
    query = sa.select(table, sa.func.typeof(table.c.key)).order_by(table.c.seq)
    return [tuple(row) for row in conn.execute(query)]


@settings(max_examples=300, deadline=None)
@given(entries=_entries, sources=_sources, first=st.integers(1, 10**6))
def test_packed_staging_writes_the_rows_executemany_writes_or_none(entries, sources, first) -> None:
    if sources is not None:
        sources = sources[: len(entries)] + [None] * (len(entries) - len(sources))
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        packed = staging_table("packed", conn.dialect)
        reference = staging_table("reference", conn.dialect)
        packed.create(conn)
        reference.create(conn)
        fingerprints = sources if sources is not None else [None] * len(entries)
        rows = [
            (seq, key, hash_, source)
            for seq, ((key, hash_), source) in enumerate(
                zip(entries, fingerprints, strict=True), start=first
            )
        ]
        _stage(conn, reference, STAGED_COLUMNS, rows)
        if _stage_packed(conn, packed, first, entries, sources):
            assert _staged(packed, conn) == _staged(reference, conn)
        else:  # declined: nothing staged, and only for what it can't stage exactly
            assert _staged(packed, conn) == []
            assert (
                any(len(hash_) != 16 or "\0" in key for key, hash_ in entries)
                or any(source is not None and len(source) != 16 for source in fingerprints)
                or (None in fingerprints and any(fingerprints))
            )


def test_packed_staging_takes_a_chunk_of_plain_keys() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        table = staging_table("packed", conn.dialect)
        table.create(conn)
        entries = [(f"SKU-{i}", bytes([i % 256]) * 16) for i in range(2000)]
        assert _stage_packed(conn, table, 7, entries, [b"f" * 16] * 2000)
        assert _staged(table, conn)[-1] == (
            2006,
            "SKU-1999",
            bytes([1999 % 256]) * 16,
            b"f" * 16,
            "text",
        )


def test_packed_staging_declines_a_key_utf8_cannot_hold_and_stages_nothing() -> None:
    # a lone surrogate: executemany then fails to bind it, as it always did
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        table = staging_table("packed", conn.dialect)
        table.create(conn)
        entries = [("SKU-1", b"a" * 16), ("SKU-\ud800", b"b" * 16)]
        assert not _stage_packed(conn, table, 1, entries, None)
        assert _staged(table, conn) == []
