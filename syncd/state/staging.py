"""The staging of a run's keys and hashes: the bounded-memory half of the diff.

A temporary table on a dedicated connection; SQL finds what changed, chunk by chunk,
and what is gone, so Python never holds more than a chunk and the changes (plus, when
rows are skipped by fingerprint, the target's fingerprints: at most 21 bytes a product).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from array import array
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from syncd.errors import StateError
from syncd.model import SEEN_ONLY, Acked
from syncd.state.db import (
    FINGERPRINT_COLUMNS,
    READ_BATCH,
    STAGED_COLUMNS,
    acked_from_row,
    chunks,
    executemany,
)
from syncd.state.schema import (
    fingerprint_table,
    key_table,
    products,
    staging_table,
)

if TYPE_CHECKING:
    # NumPy (~60 ms to import): loaded only by a run that looks fingerprints up
    from syncd.state.fingerprints import FingerprintIndex
    from syncd.state.sql import SqlStateStore

# -- staging -------------------------------------------------------------------


class SqlStaging:
    """A run's (key, hash) pairs in a temporary table on a dedicated connection.

    Rows carry a sequence number, so ``compare`` joins only the chunk just staged
    against ``products``. Nothing is written to the real tables: a crash leaves
    nothing behind, the temporary table dies with the connection.
    """

    def __init__(self, store: SqlStateStore, target: str) -> None:
        self._store = store
        self._target = target
        self._staged = 0
        self._indexed = False
        self._unique = False
        """The staged keys were indexed unique (``_index``): no key was staged twice."""
        self._conn: Connection | None = None
        self._fingerprints: FingerprintIndex | None = None
        """The target's fingerprints (``known``), read on first use."""
        self._repeated: list[bytes] = []
        """Fingerprints ``known`` found more than once: the same row twice."""
        self._prior_seqs = array("q")
        self._prior_fingerprints = bytearray()
        """Of the rows ``compare`` found changed, the staged seq and the fingerprint their
        product had then (16 bytes each): a sync acknowledges changes while the read goes
        on, replacing ``products.source_hash``, so ``duplicates`` can't find the key of a
        skipped old copy through ``products`` any more (24 bytes a changed row)."""
        self._candidate_table: sa.Table | None = None
        self._candidate_count = 0
        """Rows of ``_candidate_table`` (at least 1 when some may be there)."""
        self._temporary: list[sa.Table] = []
        """Temporary tables made besides the staging table, dropped on close."""
        with store.translated("begin staging"):
            conn = store.engine.connect()
            try:
                self._table = staging_table(f"syncd_staged_{uuid.uuid4().hex[:16]}", conn.dialect)
                self._table.create(conn)
                if conn.dialect.name == "postgresql":
                    # Fresh statistics, so the planner probes products by key (see
                    # _transaction); a large first load may not be analyzed yet.
                    conn.exec_driver_sql("ANALYZE products")
                conn.commit()
            except BaseException:
                conn.invalidate()
                conn.close()
                raise
        self._conn = conn
        s, p = self._table.c, products.c
        self._changed = (
            sa.select(s.key, p.hash, p.payload, s.seq, s.hash, p.source_hash)
            .select_from(
                self._table.outerjoin(products, sa.and_(p.target == target, p.key == s.key))
            )
            .where(
                s.seq.between(sa.bindparam("first"), sa.bindparam("last")),
                sa.or_(p.hash.is_(None), p.hash != s.hash),
            )
        )
        """The staged rows of seq ``first`` to ``last`` whose product differs (or is
        unknown), with what state has: built once, not for every chunk (~0.1 ms a chunk)."""
        self._any_product = sa.select(sa.exists().where(p.target == target))
        self._blob: type[bytes] | type[bytearray] = (
            bytearray if conn.dialect.name == "sqlite" else bytes
        )
        """How a hash is handed to the driver: Python's sqlite3 binds a ``bytearray``
        directly but tries adapters on ``bytes`` first (an ``AttributeError`` built and
        dropped for each: 2.3 against 1.6 µs a staged row); the same BLOB is stored."""

    def __enter__(self) -> SqlStaging:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[Connection]:
        """One short transaction on the staging connection, errors translated.

        On PostgreSQL, joins are forced to index probes: the temp table has no
        statistics, and a hash or merge join would read every product of the target
        for each chunk.
        """
        if self._conn is None:
            raise StateError("staging is closed")
        conn = self._conn
        with self._store.translated(what):
            try:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
                    conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def compare(
        self,
        entries: Sequence[tuple[str, bytes]],
        sources: Sequence[bytes | None] | None = None,
    ) -> dict[str, Acked | None]:
        if not entries:
            return {}
        first = self._staged + 1
        with self._transaction("stage keys") as conn:
            if not (
                conn.dialect.name == "sqlite"
                and _SQLITE_JSON_EACH
                and _stage_packed(conn, self._table, first, entries, sources)
            ):
                _stage(conn, self._table, STAGED_COLUMNS, self._rows(first, entries, sources))
            # A target with no product yet (a first sync's plan, its first chunks) finds
            # every key new without the join building a row for each (~1 µs a key). Exact:
            # the join would read the same products, one probe later; what another process
            # writes after either read, neither sees.
            found = (
                conn.execute(
                    self._changed, {"first": first, "last": first + len(entries) - 1}
                ).all()
                if conn.execute(self._any_product).scalar()
                else None
            )
        self._staged += len(entries)
        if found is None:
            return dict.fromkeys(map(_FIRST, entries))
        if self._fingerprints is not None:  # skipping: a skipped row may be an old copy
            for row in found:
                if row[5] is not None and bytes(row[4]) != SEEN_ONLY:
                    self._prior_seqs.append(row[3])
                    self._prior_fingerprints += bytes(row[5])
        return {row[0]: None if row[1] is None else acked_from_row(row[:3]) for row in found}

    def _rows(
        self,
        first: int,
        entries: Sequence[tuple[str, bytes]],
        sources: Sequence[bytes | None] | None,
    ) -> list[tuple[int, str, bytes | bytearray, bytes | bytearray | None]]:
        """``entries`` as the staging table's rows (``STAGED_COLUMNS``), numbered from
        ``first``."""
        fingerprints = sources if sources is not None else [None] * len(entries)
        blob = self._blob
        return [
            (seq, key, blob(hash_), source and blob(source))
            for seq, ((key, hash_), source) in enumerate(
                zip(entries, fingerprints, strict=True), start=first
            )
        ]

    def known(self, fingerprints: bytes) -> list[bool]:
        if not fingerprints:
            return []
        found, repeated = self._fingerprint_index().see(fingerprints)
        self._repeated.extend(repeated)  # the same row twice: a duplicate key
        return found

    def _fingerprint_index(self) -> FingerprintIndex:
        """The target's fingerprints, read once (in index order) on first use.

        On SQLite, a page of fingerprints comes as one row of hex that SQL concatenated
        (``_sqlite_fingerprints``): building a row object for each of a million 16-byte
        values would cost more than the read. Elsewhere through a server-side cursor, a
        batch at a time.
        """
        if self._fingerprints is None:
            from syncd.state.fingerprints import FingerprintIndex  # NumPy: see the imports

            p = products.c
            query = (
                sa.select(p.source_hash)
                .where(p.target == self._target, p.source_hash.is_not(None))
                .order_by(p.source_hash)
            )
            with self._transaction("read fingerprints") as conn:
                if conn.dialect.name == "sqlite":
                    driver = conn.connection.driver_connection
                    assert driver is not None
                    self._fingerprints = FingerprintIndex(
                        _sqlite_fingerprints(driver.cursor(), self._target)
                    )
                else:
                    batches = conn.execute(query.execution_options(yield_per=10_000)).partitions()
                    self._fingerprints = FingerprintIndex(
                        b"".join([row[0] for row in batch]) for batch in batches
                    )
        return self._fingerprints

    def remember(self, entries: Sequence[tuple[str, bytes, bytes]]) -> None:
        if not entries:
            return
        p = products.c
        stmt = (
            products.update()
            .where(
                p.target == sa.bindparam("b_target"),
                p.key == sa.bindparam("b_key"),
                p.hash == sa.bindparam("b_hash"),
            )
            .values(source_hash=sa.bindparam("b_source"))
        )
        rows = [(self._target, key, hash_, source) for key, hash_, source in entries]
        with self._transaction("remember fingerprints") as conn:
            executemany(conn, stmt, ("b_target", "b_key", "b_hash", "b_source"), rows)

    def staged_count(self) -> int:
        return self._staged

    def duplicates(self) -> list[str]:
        s, p = self._table.c, products.c
        self._index()
        real = s.hash != SEEN_ONLY  # a key staged only as seen duplicates nothing
        twice = sa.select(s.key).where(real).group_by(s.key).having(sa.func.count() > 1)
        with self._transaction("find duplicate keys") as conn:
            keys: set[str] = set() if self._unique else set(conn.execute(twice).scalars())
            index = self._fingerprints
            if index is not None and index.matched and self._staged:
                # a parsed row whose product a skipped row's fingerprint also found
                product = sa.and_(p.target == self._target, p.key == s.key)
                found = (
                    sa.select(s.key, p.source_hash)
                    .select_from(self._table.join(products, product))
                    .where(p.source_hash.is_not(None), real)
                    .execution_options(yield_per=READ_BATCH)
                )
                # looked up a batch at a time: one NumPy search per batch, not per key
                batches: Iterator[Sequence[tuple[str, bytes]]] = conn.execute(found).partitions()
                for batch in batches:
                    seen = index.were_seen(b"".join(bytes(value) for _, value in batch))
                    keys.update(key for (key, _), hit in zip(batch, seen, strict=True) if hit)
            if index is not None and index.matched and self._prior_seqs:
                # a changed row whose product's fingerprint (when compared, before this
                # run's acks replaced it) a skipped row found: the same key twice
                seen = index.were_seen(bytes(self._prior_fingerprints))
                hits = [seq for seq, hit in zip(self._prior_seqs, seen, strict=True) if hit]
                for seqs in chunks(hits):
                    keys.update(conn.execute(sa.select(s.key).where(s.seq.in_(seqs))).scalars())
            for chunk in chunks(self._repeated):
                named = sa.select(p.key).where(p.target == self._target, p.source_hash.in_(chunk))
                keys.update(conn.execute(named).scalars())
        return sorted(keys)

    def unseen(self) -> Iterator[Acked]:
        """Stream the deletes in key order, one short query per batch (keyset paging).

        When rows were skipped by fingerprint, only the products that no skipped row
        found are candidates (those without a fingerprint, or whose fingerprint wasn't
        seen), so a run that skipped everything reads no products at all. A product
        written by another process during the run with a fingerprint this run did not
        load is not a candidate: a sync holds the target's lease, so only a ``plan``
        racing a sync can miss such a delete, and only in its preview.
        """
        self._index()
        s, p = self._table.c, products.c
        index = self._fingerprints
        query: sa.Select[Any]
        if index is None or not index.matched:
            query = sa.select(p.key, p.hash, p.payload).where(
                p.target == self._target, ~sa.exists().where(s.key == p.key)
            )
            position = p.key
        else:
            candidates = self._candidates(index)
            if candidates is None:
                return  # every product was found by a skipped row: none is gone
            c = candidates.c
            query = (
                sa.select(p.key, p.hash, p.payload)
                .select_from(
                    candidates.join(products, sa.and_(p.target == self._target, p.key == c.key))
                )
                .where(~sa.exists().where(s.key == c.key))
            )
            position = c.key
        query = query.order_by(position).limit(READ_BATCH)
        last: str | None = None
        while True:
            page = query if last is None else query.where(position > last)
            with self._transaction("find unseen keys") as conn:
                batch = conn.execute(page).all()
            for row in batch:
                yield acked_from_row(row)
            if len(batch) < READ_BATCH:
                return
            last = batch[-1][0]

    def _candidates(self, index: FingerprintIndex) -> sa.Table | None:
        """A temporary table of the keys of the products no skipped row found; None when
        there are none (a join against an empty table would still scan products)."""
        if self._candidate_table is not None:
            return self._candidate_table if self._candidate_count else None
        p = products.c
        suffix = uuid.uuid4().hex[:16]
        with self._transaction("find products no row was found for") as conn:
            unmatched = fingerprint_table(f"syncd_fp_{suffix}", conn.dialect)
            unmatched.create(conn)
            self._temporary.append(unmatched)
            candidates = key_table(f"syncd_keys_{suffix}", conn.dialect)
            candidates.create(conn)
            self._temporary.append(candidates)
            missing = index.unseen()
            _stage(conn, unmatched, FINGERPRINT_COLUMNS, list(enumerate(missing)))
            without = sa.select(p.key).where(p.target == self._target, p.source_hash.is_(None))
            count = _inserted(conn.execute(candidates.insert().from_select(["key"], without)))
            if missing:
                # driven by the unmatched fingerprints: one index probe of products each
                unmatched_fingerprints = sa.select(unmatched.c.source_hash)
                by_fingerprint = sa.select(p.key).where(
                    p.target == self._target, p.source_hash.in_(unmatched_fingerprints)
                )
                count += _inserted(
                    conn.execute(candidates.insert().from_select(["key"], by_fingerprint))
                )
            sa.Index(f"{candidates.name}_key", candidates.c.key).create(conn)
        self._candidate_table = candidates
        self._candidate_count = count
        return candidates if count else None

    def _index(self) -> None:
        """Index the staged keys once, before the set operations that need it.

        On SQLite the index is first built unique: when that succeeds, no key was staged
        twice and ``duplicates`` needs no ``GROUP BY`` over every staged row (~0.4 µs a
        row); when a key was (a duplicate, or a key only seen besides a real row), the
        failed build leaves nothing and the plain index is built instead. Nothing is
        staged after it (``duplicates`` and ``unseen`` come once the read is over).
        """
        if self._indexed:
            return
        name, key = f"{self._table.name}_key", self._table.c.key
        with self._transaction("index staged keys") as conn:
            if conn.dialect.name == "sqlite":
                # outside a transaction (DDL opens none here) or undone alone (a statement)
                with contextlib.suppress(IntegrityError):
                    sa.Index(name, key, unique=True).create(conn)
                    self._unique = True
            if not self._unique:
                sa.Index(name, key).create(conn)
            if conn.dialect.name in ("postgresql", "sqlite"):
                conn.exec_driver_sql(f"ANALYZE {self._table.name}")
        self._indexed = True

    def close(self) -> None:
        """Drop the staged entries and give the connection back; never raises."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback()
            for table in (self._table, *self._temporary):
                table.drop(conn)
            conn.commit()
        except SQLAlchemyError:
            # The temporary tables die with their session: discard the connection.
            conn.invalidate()
        finally:
            conn.close()


_SQLITE_FINGERPRINTS = """
SELECT group_concat(hex(source_hash), '') FROM products
WHERE target = ? AND source_hash >= ? AND source_hash < ?
"""
"""The fingerprints of a target that begin with one byte, as one row of hex; an index
range scan of (target, source_hash, key)."""


def _sqlite_fingerprints(cursor: Any, target: str) -> Iterator[bytes]:
    """A target's fingerprints from SQLite, a page (concatenated) for each first byte:
    fingerprints are uniform, so a page holds about 1/256 of them."""
    for first in range(256):
        # b"\xff" * 17 sorts after every 16 bytes (a shorter prefix sorts first)
        high = bytes([first + 1]) if first < 255 else b"\xff" * 17
        (page,) = cursor.execute(_SQLITE_FINGERPRINTS, (target, bytes([first]), high)).fetchone()
        if page:
            yield bytes.fromhex(page)


def _inserted(result: sa.CursorResult[Any]) -> int:
    """Rows an INSERT ... SELECT wrote; 1 when the driver can't tell (some may be there)."""
    return result.rowcount if result.rowcount >= 0 else 1


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
"""An entry's key and hash, taken in C (``map``) over a chunk."""
_SQLITE_JSON_EACH = sqlite3.sqlite_version_info >= (3, 38)
"""Whether the SQLite Python links has ``json_each`` for ``_stage_packed``: built in from
3.38; an older one may have been built without it (``executemany`` then, as before)."""
_PACKED_HASH_BYTES = 16
"""The width ``_stage_packed`` cuts the joined hashes at (a payload's BLAKE2b-128, a raw
row's fingerprint)."""


def _stage_packed(
    conn: Connection,
    table: sa.Table,
    first: int,
    entries: Sequence[tuple[str, bytes]],
    sources: Sequence[bytes | None] | None,
) -> bool:
    """Stage ``entries`` (numbered from ``first``) on SQLite with one statement: the keys
    as one JSON array that ``json_each`` walks, the hashes and fingerprints as one blob
    each, cut by the element's index. ~0.5 µs a row against ~1.2 µs through executemany,
    which binds four values, steps the statement and builds a row tuple for each.

    Exact when every hash (and every fingerprint, or none) is 16 bytes and no key holds a
    NUL (SQLite's JSON strings end at one): the rows are then those ``_stage`` writes.
    Otherwise stages nothing and returns False (the caller uses ``_stage``).
    """
    keys = list(map(_FIRST, entries))
    hashes = list(map(_SECOND, entries))
    width = _PACKED_HASH_BYTES
    if set(map(len, hashes)) != {width}:
        return False
    fingerprints: bytes | None = None
    if sources is not None and sources.count(None) != len(sources):  # some, so all
        if None in sources:
            return False
        present = cast("Sequence[bytes]", sources)
        if set(map(len, present)) != {width}:
            return False
        fingerprints = b"".join(present)
    # orjson, not json.dumps (~0.1 µs a key): non-ASCII written as UTF-8, the same strings
    # once json_each parses them; a key it can't encode to UTF-8 (a lone surrogate) is
    # staged through executemany, which fails to bind it as before; a NUL is escaped, so
    # the test is exact
    try:
        keys_json = orjson.dumps(keys).decode()
    except orjson.JSONEncodeError:
        return False
    if "\\u0000" in keys_json:
        return False
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} (seq, key, hash, source_hash) "
        f"SELECT ? + item.key, item.value, substr(?, {width} * item.key + 1, {width}), "
        f"substr(?, {width} * item.key + 1, {width}) FROM json_each(?) AS item",
        (first, b"".join(hashes), fingerprints, keys_json),
    )
    return True


def _stage(
    conn: Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[object, ...]],
) -> None:
    """Append rows to a staging table: COPY on PostgreSQL, else executemany."""
    if conn.dialect.name != "postgresql":
        executemany(conn, table.insert(), columns, rows)
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    copy_sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(copy_sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc
