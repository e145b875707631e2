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


def spilled(blocks: Iterator[tuple[list[Any], list[Any]]]) -> Iterator[tuple[list[Any], list[Any]]]:
    """``blocks`` read to their end into a temporary file first, then read back one at a
    time (memory holds one block; the file ~ key and hash bytes per row)."""
    with tempfile.TemporaryFile(prefix="syncd-fingerprints-") as spill:
        count = 0
        for block in blocks:
            pickle.dump(block, spill, protocol=pickle.HIGHEST_PROTOCOL)
            count += 1
        spill.seek(0)
        for _ in range(count):
            # our own file, written just above: not untrusted input
            yield pickle.load(spill)  # noqa: S301
