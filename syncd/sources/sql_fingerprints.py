"""Row fingerprints a SQL database computes itself, so a run fetches whole rows only when
some target does not know them.

A first pass reads each row's key and a hash of the whole row computed by the database
(PostgreSQL: ``md5`` of the row's text, ``md5(syncd_row::text)``; MariaDB/MySQL: ``MD5``
of every column's length-prefixed text, a ``FLOAT`` as the double it is), prefixed
with a digest of the result's shape (column names, types, precision and scale, in order).
The rows a target does not know are then fetched whole, by key, a batch at a time, and
matched to the first pass by their hash: both passes run in one REPEATABLE READ
transaction, so they see one snapshot of the database, and a row that would come back
different (a volatile query: ``now()``, ``random()``) fails the read. PostgreSQL serves the
fetches while the first pass's server-side cursor is open; MariaDB can't run a statement
while a streamed result is pending, so its first pass is spilled to a temporary file.

SQLite has no hash function: its rows are read whole, in one statement, fingerprinted
here by the ``repr`` of the driver's tuple, and made records only when some target does
not know them (``SqlRowBlock``). A read that will ask for every row (a first sync, a full
refresh: ``whole``) reads them whole in its one pass, beside the database's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.errors import SourceError
from syncd.model import Record
from syncd.sources.base import FingerprintBlock

ROW = "syncd_row"
"""The alias of the configured query (or table) inside the statements made here."""
FINGERPRINT = "syncd_row_fingerprint"
"""The column the fetch adds (first) for the hash of the row it returns."""
FETCH_BATCH = 1000
"""Keys fetched whole per statement."""
FORMAT = "syncd-sql-fingerprint-1"
"""Mixed into every shape digest: a change of the hash's definition changes it."""
_MYSQL_FLOAT = 4
"""PyMySQL's FIELD_TYPE.FLOAT: its text keeps 6 digits; as a DOUBLE every bit (a
DOUBLE's text is the shortest that reads back the same number)."""

DIALECTS = frozenset({"postgresql", "mysql", "mariadb", "sqlite"})
"""The databases read by fingerprint (SQLite's rows are fingerprinted here: no hash
function in SQL)."""


def shape_digest(dialect: str, description: Sequence[Sequence[Any]]) -> bytes:
    """A digest of a result's columns as a DB-API ``cursor.description`` gives them:
    name, type code, internal size, precision and scale, in order (a renamed, reordered
    or retyped column changes every row's fingerprint)."""
    columns = [
        [str(column[0]), str(column[1]), str(column[3]), str(column[4]), str(column[5])]
        for column in description
    ]
    text = json.dumps([FORMAT, dialect, columns], separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def row_hash_sql(
    dialect: str, description: Sequence[Sequence[Any]], quote: Callable[[str], str]
) -> str:
    """The SQL expression hashing a row of ``syncd_row`` (see the module docstring)."""
    if dialect == "postgresql":
        return f"md5({ROW}::text)"
    parts = []
    for column in description:
        name = f"{ROW}.{quote(str(column[0]))}"
        if column[1] == _MYSQL_FLOAT:
            name = f"CAST({name} AS DOUBLE)"
        parts.append(f"IFNULL(CONCAT(LENGTH({name}), ':', {name}), '-')")
    joined = ", ".join(parts) or "''"
    return f"MD5(CONCAT({joined}))"


def fingerprint_bytes(shape: bytes, value: object) -> bytes:
    """A row's fingerprint: the shape digest and the database's hash of the row. A row
    the database could not hash (NULL: MariaDB's ``CONCAT`` past ``max_allowed_packet``)
    gets random bytes, so it is never found unchanged."""
    if isinstance(value, str):
        return shape + value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return shape + bytes(value)
    return os.urandom(16)


class SqlFingerprintBlock:
    """Consecutive rows of a SQL source by fingerprint; ``records`` fetches rows whole."""

    __slots__ = ("_fetch", "_hashes", "_keys", "fingerprints")

    def __init__(
        self,
        keys: list[Any],
        hashes: list[Any],
        shape: bytes,
        fetch: Callable[[list[Any], list[Any]], Iterator[dict[str, Any]]],
    ) -> None:
        self._keys = keys
        self._hashes = hashes
        self._fetch = fetch
        self.fingerprints = [fingerprint_bytes(shape, value) for value in hashes]

    def records(self, indexes: Sequence[int]) -> Iterator[dict[str, Any]]:
        """The records of rows ``indexes``, in that order, fetched whole by key."""
        return self._fetch([self._keys[i] for i in indexes], [self._hashes[i] for i in indexes])


class SqlRowBlock:
    """Consecutive rows of a SQL source read whole with their fingerprints (SQLite, or a
    read that will ask for every row); only the rows asked for become records."""

    __slots__ = ("_names", "_plain", "_rows", "_start", "fingerprints")

    def __init__(
        self,
        rows: list[Sequence[Any]],
        names: list[str],
        fingerprints: list[bytes],
        plain: Callable[[Any], Any],
        *,
        start: int = 0,
    ) -> None:
        self._rows = rows
        self._names = names
        """The names of each row's values from ``start`` on."""
        self._plain = plain
        """A database value as the record holds it (``sql.plain_value``)."""
        self._start = start
        self.fingerprints = fingerprints

    def records(self, indexes: Sequence[int]) -> Iterator[dict[str, Any]]:
        """The records of rows ``indexes``, in that order."""
        names, plain, start = self._names, self._plain, self._start
        for i in indexes:
            values = self._rows[i][start:]
            yield {name: plain(v) for name, v in zip(names, values, strict=True)}


def repr_fingerprints(shape: bytes, rows: Sequence[Sequence[Any]]) -> list[bytes]:
    """Fingerprints of rows SQLite returned (it has no hash function): the ``repr`` of the
    driver's tuple tells ``None``, ``''`` and ``'None'``, ``1``, ``1.0`` and ``'1'`` apart,
    and prints floats exactly."""
    return [shape + repr(row).encode() for row in rows]


class SqlFingerprintReader:
    """One read of a SQL source by fingerprint, on a connection in the read's read-only
    transaction (``SqlSource.read_fingerprints``)."""

    def __init__(
        self,
        conn: Connection,
        *,
        query: str,
        driver_query: str | None,
        key: str,
        fetch_size: int,
        plain: Callable[[Any], Any],
        failure: Callable[[str], SourceError],
        translate: Callable[[sa.exc.SQLAlchemyError], SourceError],
        key_types: set[type],
    ) -> None:
        self._conn = conn
        self._query = query
        """The query (or ``SELECT *`` of the table) as ``text()`` takes it."""
        self._driver_query = driver_query
        """The configured query as written, for the driver's own cursor (None: a table)."""
        self._key = key
        self._fetch_size = fetch_size
        self._plain = plain
        """A database value as the record holds it (``sql.plain_value``)."""
        self._failure = failure
        """The read's error for a message (naming the source)."""
        self._translate = translate
        self._key_types = key_types
        """The types of the keys read, as records hold them (``confirm_absent``)."""

    def blocks(self, whole: bool) -> Iterator[FingerprintBlock]:
        """Every row's fingerprint in blocks (``whole``: read whole in the same pass)."""
        conn = self._conn
        # a subquery: a trailing ";" dropped, ")" on a line of its own (after a "-- note")
        inner = self._query.rstrip().rstrip(";").rstrip() + "\n"
        quote = conn.dialect.identifier_preparer.quote
        dialect = conn.dialect.name
        if dialect == "sqlite":
            yield from self._sqlite_blocks()
            return
        probe = conn.execute(sa.text(f"SELECT * FROM ({inner}) AS {ROW} LIMIT 0"))
        description = list(probe.cursor.description or ())
        probe.close()
        names = [str(column[0]) for column in description]
        self._check_columns(names)
        shape = shape_digest(dialect, description)
        row_hash = row_hash_sql(dialect, description, quote)
        key = f"{ROW}.{quote(self._key)}"
        source = f"FROM ({inner}) AS {ROW}"
        first = sa.text(f"SELECT {key}, {row_hash} {source}")
        hashed = f"SELECT {row_hash} AS {FINGERPRINT}, {ROW}.* {source}"
        by_key = sa.text(f"{hashed} WHERE {key} IN :keys").bindparams(
            sa.bindparam("keys", expanding=True)
        )
        null_key = sa.text(f"{hashed} WHERE {key} IS NULL")

        def fetch(keys: list[Any], hashes: list[Any]) -> Iterator[Record]:
            return self._fetch_whole(by_key, null_key, keys, hashes)

        streaming = conn.execution_options(stream_results=True, yield_per=self._fetch_size)
        if whole:  # every row is needed: read whole beside its hash, one pass
            at = names.index(self._key) + 1
            every = streaming.execute(sa.text(hashed))
            for rows in every.partitions(self._fetch_size):
                self._note_key_types([row[at] for row in rows])
                fingerprints = [fingerprint_bytes(shape, row[0]) for row in rows]
                yield SqlRowBlock(list(rows), names, fingerprints, self._plain, start=1)
            return
        result = streaming.execute(first)
        parts = result.partitions(self._fetch_size)
        blocks: Iterator[tuple[list[Any], list[Any]]] = (
            ([row[0] for row in part], [row[1] for row in part]) for part in parts
        )
        if dialect != "postgresql":
            # a pending streamed result takes the connection: read it all first
            blocks = spilled(blocks, self._failure)
        for keys, hashes in blocks:
            self._note_key_types(keys)
            yield SqlFingerprintBlock(keys, hashes, shape, fetch)

    def _sqlite_blocks(self) -> Iterator[SqlRowBlock]:
        """SQLite has no hash function: whole rows, straight from the driver's cursor (one
        statement, one snapshot), fingerprinted by their ``repr``, converted to records
        only when asked for."""
        conn = self._conn
        driver = conn.connection.driver_connection
        assert driver is not None
        error: type[Exception] = conn.dialect.loaded_dbapi.Error
        # the driver's own cursor: the query as written (no text() escapes)
        sql = self._driver_query if self._driver_query is not None else self._query
        cursor = driver.cursor()
        try:
            cursor.execute(sql)
            description = list(cursor.description or ())
            names = [str(column[0]) for column in description]
            self._check_columns(names)
            shape = shape_digest("sqlite", description)
            key = names.index(self._key)
            while rows := cursor.fetchmany(self._fetch_size):
                self._note_key_types([row[key] for row in rows])
                yield SqlRowBlock(rows, names, repr_fingerprints(shape, rows), self._plain)
        except error as exc:
            raise self._translate(sa.exc.DBAPIError.instance(sql, None, exc, error)) from exc
        finally:
            cursor.close()

    def _check_columns(self, names: list[str]) -> None:
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise self._failure(
                f"the query returns column {duplicated[0]!r} more than once; "
                "give each column its own name (AS ...)"
            )
        if self._key not in names:
            raise self._failure(
                f"the query returns no column {self._key!r} (source.key); its columns: "
                + ", ".join(names)
            )

    def _note_key_types(self, keys: list[Any]) -> None:
        for kind in {type(key) for key in keys}:
            if kind in (str, int):
                self._key_types.add(kind)
            else:
                self._key_types.update(type(self._plain(key)) for key in keys if type(key) is kind)

    def _fetch_whole(
        self,
        by_key: sa.TextClause,
        null_key: sa.TextClause,
        keys: list[Any],
        hashes: list[Any],
    ) -> Iterator[Record]:
        """The records of rows (``keys``, ``hashes``), in that order: fetched by key,
        ``FETCH_BATCH`` keys a statement, and matched by hash (a key may name more rows)."""
        conn = self._conn
        wanted = set(hashes)
        found: dict[Any, list[Record]] = {}

        def collect(result: sa.CursorResult[Any]) -> None:
            names = list(result.keys())[1:]
            for row in result:
                if row[0] in wanted:
                    values: Sequence[Any] = row[1:]
                    record = {n: self._plain(v) for n, v in zip(names, values, strict=True)}
                    found.setdefault(row[0], []).append(record)

        distinct = list(dict.fromkeys(key for key in keys if key is not None))
        try:
            for start in range(0, len(distinct), FETCH_BATCH):
                collect(conn.execute(by_key, {"keys": distinct[start : start + FETCH_BATCH]}))
            if len(distinct) < len(keys) and any(key is None for key in keys):
                collect(conn.execute(null_key))
        except sa.exc.SQLAlchemyError as exc:
            # called by the reader of the blocks, outside ``SqlSource._transaction``'s
            # translation: a failed fetch fails the read like any (no deletes)
            raise self._translate(exc) from exc
        for key, row_hash in zip(keys, hashes, strict=True):
            rows = found.get(row_hash)
            if not rows:
                raise self._failure(
                    f"the row of key {key!r} came back different when "
                    "fetched whole in the same snapshot: the query is not deterministic "
                    "(now(), random(), ...); set source.fingerprint_rows = false"
                )
            yield rows.pop()


def spilled(
    blocks: Iterator[tuple[list[Any], list[Any]]],
    failure: Callable[[str], SourceError] = SourceError,
) -> Iterator[tuple[list[Any], list[Any]]]:
    """``blocks`` read to their end into a temporary file first, then read back one at a
    time (memory holds one block; the file ~ key and hash bytes per row). The file failing
    (a full disk) is ``failure``'s error: it fails the read, like a database error."""
    try:
        with tempfile.TemporaryFile(prefix="syncd-fingerprints-") as spill:
            count = 0
            for block in blocks:
                pickle.dump(block, spill, protocol=pickle.HIGHEST_PROTOCOL)
                count += 1
            spill.seek(0)
            for _ in range(count):
                # our own file, written just above: not untrusted input
                yield pickle.load(spill)  # noqa: S301
    except OSError as exc:
        where = tempfile.gettempdir()
        raise failure(f"the fingerprints' spill file (in {where}): {exc.strerror or exc}") from exc
