"""The staging of a run's keys and hashes: the bounded-memory half of the diff.

A temporary table on a dedicated connection; SQL finds what changed, chunk by chunk,
and what is gone, so Python never holds more than a chunk and the changes.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from syncd.errors import StateError
from syncd.model import Acked
from syncd.state.db import (
    FINGERPRINT_COLUMNS,
    READ_BATCH,
    STAGED_COLUMNS,
    acked_from_row,
    executemany,
)
from syncd.state.schema import (
    fingerprint_table,
    products,
    skipped_table,
    staging_table,
)

if TYPE_CHECKING:
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
        self._fingerprinted = 0
        self._indexed = False
        self._conn: Connection | None = None
        self._fingerprints: sa.Table | None = None
        """The raw rows' fingerprints (``known``), created on first use."""
        self._skipped: sa.Table | None = None
        """The keys of the products whose fingerprint ``known`` found: seen, unchanged."""
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
        fingerprints = sources if sources is not None else [None] * len(entries)
        rows = [
            (seq, key, hash_, source)
            for seq, ((key, hash_), source) in enumerate(
                zip(entries, fingerprints, strict=True), start=first
            )
        ]
        s, p = self._table.c, products.c
        changed = (
            sa.select(s.key, p.hash, p.payload)
            .select_from(
                self._table.outerjoin(products, sa.and_(p.target == self._target, p.key == s.key))
            )
            .where(
                s.seq.between(first, first + len(rows) - 1),
                sa.or_(p.hash.is_(None), p.hash != s.hash),
            )
        )
        with self._transaction("stage keys") as conn:
            _stage(conn, self._table, STAGED_COLUMNS, rows)
            found = conn.execute(changed).all()
        self._staged += len(rows)
        return {row[0]: None if row[1] is None else acked_from_row(row) for row in found}

    def known(self, fingerprints: Sequence[bytes]) -> set[bytes]:
        if not fingerprints:
            return set()
        first = self._fingerprinted + 1
        rows = list(enumerate(fingerprints, start=first))
        with self._transaction("stage fingerprints") as conn:
            if self._fingerprints is None or self._skipped is None:
                suffix = uuid.uuid4().hex[:16]
                self._fingerprints = fingerprint_table(f"syncd_fp_{suffix}", conn.dialect)
                self._fingerprints.create(conn)
                self._skipped = skipped_table(f"syncd_skipped_{suffix}", conn.dialect)
                self._skipped.create(conn)
            f, p = self._fingerprints.c, products.c
            # one index probe per staged row (a join could scan the target's products)
            product = (
                sa.select(p.key)
                .where(p.target == self._target, p.source_hash == f.source_hash)
                .limit(1)
                .scalar_subquery()
            )
            matched = sa.select(product, f.source_hash).where(
                f.seq.between(first, first + len(rows) - 1)
            )
            _stage(conn, self._fingerprints, FINGERPRINT_COLUMNS, rows)
            found = [row for row in conn.execute(matched).all() if row[0] is not None]
            # the products of known rows are seen: their keys join the run's keys
            _stage(conn, self._skipped, ("key",), [(row[0],) for row in found])
        self._fingerprinted += len(rows)
        return {bytes(row[1]) for row in found}

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
        s = self._table.c
        self._index()
        keys = sa.select(s.key)
        every = (
            keys.subquery()
            if self._skipped is None
            else sa.union_all(keys, sa.select(self._skipped.c.key)).subquery()
        )
        query = (
            sa.select(every.c.key)
            .group_by(every.c.key)
            .having(sa.func.count() > 1)
            .order_by(every.c.key)
        )
        with self._transaction("find duplicate keys") as conn:
            return list(conn.execute(query).scalars())

    def unseen(self) -> Iterator[Acked]:
        """Stream the deletes in key order, one short query per batch (keyset paging)."""
        self._index()
        s, p = self._table.c, products.c
        seen: sa.ColumnElement[bool] = sa.exists().where(s.key == p.key)
        if self._skipped is not None:
            seen = sa.or_(seen, sa.exists().where(self._skipped.c.key == p.key))
        query = (
            sa.select(p.key, p.hash, p.payload)
            .where(p.target == self._target, ~seen)
            .order_by(p.key)
            .limit(READ_BATCH)
        )
        last: str | None = None
        while True:
            page = query if last is None else query.where(p.key > last)
            with self._transaction("find unseen keys") as conn:
                batch = conn.execute(page).all()
            for row in batch:
                yield acked_from_row(row)
            if len(batch) < READ_BATCH:
                return
            last = batch[-1][0]

    def _index(self) -> None:
        """Index the staged keys once, before the set operations that need it."""
        if self._indexed:
            return
        with self._transaction("index staged keys") as conn:
            sa.Index(f"{self._table.name}_key", self._table.c.key).create(conn)
            if self._skipped is not None:
                name = self._skipped.name
                sa.Index(f"{name}_key", self._skipped.c.key).create(conn)
            if conn.dialect.name in ("postgresql", "sqlite"):
                conn.exec_driver_sql(f"ANALYZE {self._table.name}")
                if self._skipped is not None:
                    conn.exec_driver_sql(f"ANALYZE {self._skipped.name}")
        self._indexed = True

    def close(self) -> None:
        """Drop the staged entries and give the connection back; never raises."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback()
            self._table.drop(conn)
            for table in (self._fingerprints, self._skipped):
                if table is not None:
                    table.drop(conn)
            conn.commit()
        except SQLAlchemyError:
            # The temporary table dies with its session: discard the connection.
            conn.invalidate()
        finally:
            conn.close()


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
