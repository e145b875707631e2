"""The SQL source: one query (or table) read through SQLAlchemy, streamed, read-only.

Rows stream from a server-side cursor (psycopg named cursor, PyMySQL ``SSCursor``;
SQLite steps its cursor lazily) inside a read-only transaction with a statement
timeout where the database has one (PostgreSQL, MariaDB/MySQL; SQLite has none and
is opened read-only with ``query_only`` instead). One engine per read, disposed after.
The transaction is always rolled back, never committed: whatever the query did (a
function with side effects, ``lo_create``) is undone.

Values become JSON-friendly, so every database yields the same record for the same
data: ``Decimal`` → ``int`` when it has no fractional digits (``NUMERIC(10,0)`` keys),
else ``float`` when the float prints back as the same number (``19.90`` → ``19.9``),
else ``str`` (precision beyond a double is kept, the mapping's ``number`` type parses
it); NaN/infinite numbers → ``None``; datetimes, dates and times → ISO 8601 strings
(naive ones stay naive); ``timedelta`` → seconds (float); ``bytes`` → lowercase hex
(binary UUID keys stay usable); ``UUID`` and other unknown types → ``str``. JSON columns
parsed by the driver (PostgreSQL json/jsonb, arrays) stay nested; MariaDB returns JSON
columns as text, and ``TINYINT(1)`` as 0/1.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

from syncd.config import SqlSourceConfig, resolve_secret
from syncd.errors import SourceError
from syncd.model import Record, SourceItem
from syncd.sources.base import FingerprintBlock, KeyedRead, filter_records, group_records
from syncd.sources.sql_fingerprints import DIALECTS, SqlFingerprintReader

CONFIRM_BATCH = 500
"""Keys looked up per statement by ``SqlSource.confirm_absent``."""
_PG_INTEGER_OIDS = frozenset({20, 21, 23})
"""PostgreSQL ``bigint``, ``smallint``, ``integer``."""
_MYSQL_INTEGER_CODES = frozenset({1, 2, 3, 8, 9})
"""MySQL/MariaDB ``TINYINT``, ``SMALLINT``, ``INT``, ``BIGINT``, ``MEDIUMINT``."""
_INTEGER_KEY = re.compile(r"-?[0-9]+")
_INT64 = 2**63
_TRIMMED = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "\ufeff"
"""What the full read strips around a text key (``values.key_text``): whitespace, a BOM."""
_PG_QUERY_CANCELED = "57014"
_MYSQL_TIMEOUT_CODES = frozenset({1969, 3024})
"""MariaDB ``max_statement_time`` exceeded; MySQL ``max_execution_time`` exceeded."""


def plain_value(value: Any) -> Any:
    """A database value as a JSON-friendly one (see the module docstring)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return _plain_decimal(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    return str(value)


def _plain_decimal(value: decimal.Decimal) -> Any:
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(value)
    as_float = float(value)
    if decimal.Decimal(repr(as_float)) == value:
        return as_float
    return str(value)


class SqlSource:
    """Reads the catalog from a SQL query or table."""

    def __init__(
        self, config: SqlSourceConfig, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self._environ = environ
        self._key_types: set[type] = set()
        """The types of the key values the last read saw (``confirm_absent`` needs them
        to be text or integers, which compare exactly as text in every database)."""
        self._integer_key: bool | None = None
        """Whether the query's key column is an integer column (looked up once, from the
        result's column types): keys are then compared as integers, so its index serves."""

    # ----------------------------------------------------------------------------------
    # The URL, with its secrets

    def _secret(self, env_name: str, what: str) -> str:
        value = resolve_secret(env_name, self._environ)
        if value is None:
            raise SourceError(f"{what}: environment variable {env_name} is not set")
        return value

    def _url(self) -> URL:
        config = self.config
        if config.url_env is not None:
            raw = self._secret(config.url_env, "source.url_env")
            where = f"the URL in {config.url_env}"
        else:
            raw = config.url or ""
            where = "source.url"
        try:
            url = sa.make_url(raw)
        except (sa.exc.ArgumentError, ValueError):
            # The library's message repeats the URL, password included: not chained.
            raise SourceError(f"{where} is not a valid SQLAlchemy URL") from None
        if config.password_env is not None:
            url = url.set(password=self._secret(config.password_env, "source.password_env"))
        return url

    def _password(self) -> str | None:
        try:
            password = self._url().password
        except SourceError:
            return None
        return None if password is None else str(password)

    def describe(self) -> str:
        what = f"table {self.config.table}" if self.config.table else "query"
        try:
            url = self._url().render_as_string(hide_password=True)
        except SourceError:
            url = f"(URL from ${self.config.url_env})" if self.config.url_env else "(bad URL)"
        return f"sql {url} {what}"

    # ----------------------------------------------------------------------------------
    # Reading

    @property
    def can_prove_complete(self) -> bool:
        """Always: one query in one transaction; a lost connection fails the read."""
        return True

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        """The keys the configured query (or table) no longer returns, looked up in
        batches (``SELECT * FROM (<query>) q WHERE q.<key> IN (...)``, see ``_rows_of``) in
        a read-only transaction that is rolled back. ``group_by`` and ``where`` are
        applied to the rows found, as in the read: a row left out by ``where`` is gone.

        None (no second look) when the key is a dotted path (inside a JSON column), or
        when the last read saw keys that are not text or integers (a decimal or a date
        may print differently in SQL than here: a miss would not prove a key gone).
        """
        key = self.config.key
        if "." in key or not self._key_types or not self._key_types <= {str, int}:
            return None
        gone: set[str] = set()
        with self._transaction() as conn:
            for start in range(0, len(keys), CONFIRM_BATCH):
                batch = [str(k) for k in keys[start : start + CONFIRM_BATCH]]
                gone |= set(batch) - self._present(conn, batch)
        return gone

    def read_keys(self, keys: Sequence[str]) -> KeyedRead:
        """The rows of the configured query (or table) whose key is one of ``keys``
        (``SELECT * FROM (<query>) q WHERE q.<key> IN (...)``, see ``_rows_of``; bound
        parameters, ``CONFIRM_BATCH`` keys a statement) in one read-only transaction,
        REPEATABLE READ on PostgreSQL so every statement sees one snapshot; rolled back.
        ``SourceError`` when the database can't be read (then no key is known)."""
        if "." in self.config.key:
            raise SourceError(
                f"source.key {self.config.key!r} is a path inside a column: no targeted read"
            )
        rows: list[SourceItem] = []
        with self._transaction(snapshot=True) as conn:
            for start in range(0, len(keys), CONFIRM_BATCH):
                batch = [str(k) for k in keys[start : start + CONFIRM_BATCH]]
                rows.extend(self._rows_of(conn, batch))
        return KeyedRead(tuple(rows))

    def _rows_of(self, conn: Connection, batch: list[str]) -> Iterator[Record]:
        """The query's rows whose key is one of ``batch``: compared as integers when the
        key column is an integer one (``q.<key> IN (1, 2)``: its index serves; a key that
        is not an integer's canonical text can't be one of its rows), else as text the
        way the full read normalises a key (``values.key_text``): surrounding whitespace
        and a BOM trimmed in SQL, each key looked up as written, stripped, and decomposed
        (NFD), so a row stored decomposed is found by its composed (NFC) key. The caller
        compares the keys of the rows found (a superset) with what it asked for."""
        key = self.config.key
        column: sa.ColumnClause[Any] = sa.literal_column(
            "q." + conn.dialect.identifier_preparer.quote(key)
        )
        rows = self._statement(conn).columns().subquery("q")
        if self._key_is_integer(conn, column, rows):
            numbers = sorted({int(k.strip()) for k in batch if _integer_text(k.strip())})
            if not numbers:
                return
            where = column.in_(sa.bindparam("keys", numbers, expanding=True, type_=sa.BigInteger))
        else:
            texts = {v for k in batch for v in (k, k.strip(), unicodedata.normalize("NFD", k))}
            where = _trimmed(conn, sa.cast(column, sa.String)).in_(sorted(texts))
        result = conn.execute(sa.select(sa.text("*")).select_from(rows).where(where))
        names = list(result.keys())
        for row in result:
            yield {name: plain_value(value) for name, value in zip(names, row, strict=True)}

    def _key_is_integer(
        self, conn: Connection, column: sa.ColumnClause[Any], rows: sa.Subquery
    ) -> bool:
        """Whether the key column is an integer column, by the type the database gives
        the query's result (PostgreSQL, MySQL/MariaDB; no row is read); False elsewhere
        (SQLite: its columns have no fixed type)."""
        if self._integer_key is None:
            dialect = conn.dialect.name
            integer = False
            if dialect in ("postgresql", "mysql", "mariadb"):
                result = conn.execute(sa.select(column).select_from(rows).limit(0))
                described = result.cursor.description if result.cursor is not None else None
                result.close()
                code = described[0][1] if described else None
                kinds = _PG_INTEGER_OIDS if dialect == "postgresql" else _MYSQL_INTEGER_CODES
                integer = code in kinds
            self._integer_key = integer
        return self._integer_key

    def _present(self, conn: Connection, batch: list[str]) -> set[str]:
        key = self.config.key
        items: Iterable[SourceItem] = self._rows_of(conn, batch)
        if self.config.group_by:
            items = group_records(items, self.config.group_by, self.config.group_into)
        if self.config.where:
            items = filter_records(items, self.config.where)
        found = {str(item.get(key)).strip() for item in items if isinstance(item, dict)}
        return {k for k in batch if k.strip() in found}

    @contextmanager
    def _transaction(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A connection in a read-only transaction, rolled back (never committed) and its
        engine disposed after; database errors become ``SourceError``. ``snapshot``: every
        statement sees the same snapshot (REPEATABLE READ where the database needs it)."""
        engine = self._engine()
        try:
            with engine.connect() as conn:
                transaction = conn.begin()
                try:
                    if snapshot and conn.dialect.name == "postgresql":
                        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    _start_read_only(conn, self.config.statement_timeout_s)
                    yield conn
                finally:
                    transaction.rollback()
        except sa.exc.SQLAlchemyError as exc:
            raise self._translate(exc) from exc
        finally:
            engine.dispose()

    def _engine(self) -> Engine:
        url = self._url()
        try:
            return _create_engine(url, self.config)
        except sa.exc.NoSuchModuleError as exc:
            raise SourceError(
                f"{self.describe()}: no database driver for {url.drivername}"
            ) from exc
        except (sa.exc.ArgumentError, TypeError, ValueError) as exc:
            raise SourceError(
                f"{self.describe()}: unusable URL ({exc.__class__.__name__})"
            ) from None

    def read(self) -> Iterator[Record]:
        """Stream the rows as records; every failure is raised while iterating."""
        self._key_types = set()
        with self._transaction() as conn:
            yield from self._rows(conn)

    def _statement(self, conn: Connection) -> sa.TextClause:
        return sa.text(self._sql(conn))

    def _sql(self, conn: Connection) -> str:
        """The configured query as ``text()`` takes it, or ``SELECT *`` of the table."""
        if self.config.query is not None:
            # Sent as written: colons escaped so text() binds no ``:name``, and text()
            # escapes ``%`` for the drivers that use it as a placeholder.
            return self.config.query.replace(":", "\\:")
        preparer = conn.dialect.identifier_preparer
        assert self.config.table is not None
        name = ".".join(preparer.quote(part) for part in self.config.table.split("."))
        return f"SELECT * FROM {name}"

    # ----------------------------------------------------------------------------------
    # Reading by fingerprint (see syncd.sources.sql_fingerprints)

    def can_fingerprint(self) -> bool:
        """Whether rows are read by fingerprint: ``source.fingerprint_rows`` on, the key a
        column (not a path into a JSON one), rows not grouped."""
        config = self.config
        if not config.fingerprint_rows or "." in config.key or config.group_by:
            return False
        if config.variant is not None:
            return False
        try:
            backend = self._url().get_backend_name()
        except SourceError:
            return False  # read() says why
        return backend in DIALECTS

    def read_fingerprints(self, whole: bool = False) -> Iterator[FingerprintBlock]:
        """Every row's key and fingerprint, a block of ``fetch_size`` rows at a time, in one
        read-only REPEATABLE READ transaction that the blocks' ``records`` fetch whole
        rows in (the same snapshot); rolled back at the end. ``whole``: every row will be
        asked for, so rows are read whole in the same pass. Fails like ``read``."""
        self._key_types = set()
        with self._transaction() as conn:
            reader = SqlFingerprintReader(
                conn,
                query=self._sql(conn),
                driver_query=self.config.query,
                key=self.config.key,
                fetch_size=self.config.fetch_size,
                plain=plain_value,
                failure=lambda message: SourceError(f"{self.describe()}: {message}"),
                translate=self._translate,
                key_types=self._key_types,
            )
            yield from reader.blocks(whole)

    def _rows(self, conn: Connection) -> Iterator[Record]:
        streaming = conn.execution_options(stream_results=True, yield_per=self.config.fetch_size)
        result = streaming.execute(self._statement(conn))
        keys = list(result.keys())
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        if duplicated:
            result.close()
            raise SourceError(
                f"{self.describe()}: the query returns column {duplicated[0]!r} more than once; "
                "give each column its own name (AS ...)"
            )
        key, types = self.config.key, self._key_types
        for row in result:
            record = {name: plain_value(value) for name, value in zip(keys, row, strict=True)}
            types.add(type(record.get(key)))
            yield record

    def _translate(self, exc: sa.exc.SQLAlchemyError) -> SourceError:
        where = self.describe()
        orig = getattr(exc, "orig", None)
        if orig is not None and _is_timeout(orig):
            return SourceError(
                f"{where}: statement timeout exceeded: a statement ran longer than "
                f"{self.config.statement_timeout_s:g} s (source.statement_timeout_s)"
            )
        cause = orig if orig is not None else exc
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        password = self._password()
        if password:
            message = message.replace(password, "***")
        return SourceError(f"{where}: {cause.__class__.__name__}: {message}")


def _is_timeout(orig: BaseException) -> bool:
    if getattr(orig, "sqlstate", None) == _PG_QUERY_CANCELED:
        return True
    args: tuple[Any, ...] = orig.args
    return bool(args) and args[0] in _MYSQL_TIMEOUT_CODES


def _create_engine(url: URL, config: SqlSourceConfig) -> Engine:
    connect_args: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "sqlite":
        url = _sqlite_read_only(url)
    elif backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in url.query:
        # libpq takes whole seconds (at least 2); PyMySQL takes at least 1.
        connect_args["connect_timeout"] = max(2, math.ceil(config.connect_timeout_s))
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _sqlite_read_only(url: URL) -> URL:
    """A file database opened read-only through a SQLite URI (no empty file is created)."""
    database = url.database
    if (
        not database
        or database == ":memory:"
        or url.query.get("uri")
        or database.startswith("file:")
    ):
        return url
    path = quote(str(Path(database).absolute()))
    return url.set(database=f"file:{path}", query={**url.query, "mode": "ro", "uri": "true"})


def _start_read_only(conn: Connection, timeout_s: float) -> None:
    """Make the transaction read-only and bound each statement's time, per database."""
    dialect = conn.dialect
    if dialect.name == "postgresql":
        # REPEATABLE READ: every statement of the read sees one snapshot
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}")
    elif dialect.name in ("mysql", "mariadb"):
        if getattr(dialect, "is_mariadb", False):
            conn.exec_driver_sql(f"SET SESSION max_statement_time = {timeout_s:.3f}")
        else:
            ms = max(1, round(timeout_s * 1000))
            conn.exec_driver_sql(f"SET SESSION max_execution_time = {ms}")
        conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
        conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    elif dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")


def _integer_text(key: str) -> bool:
    """Whether ``key`` is how the full read writes an integer key (``7``, not ``007``,
    ``+7`` or ``7.0``), within a 64-bit column's range."""
    return (
        _INTEGER_KEY.fullmatch(key) is not None
        and str(int(key)) == key
        and -_INT64 <= int(key) < _INT64
    )


def _trimmed(conn: Connection, text: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``text`` with what the full read strips around a key trimmed: whitespace and a
    BOM (PostgreSQL ``btrim``, SQLite ``trim`` with those characters; MySQL/MariaDB,
    whose ``TRIM`` takes one string, not a set: ``REGEXP_REPLACE``); elsewhere ``TRIM``
    (spaces)."""
    if conn.dialect.name == "postgresql":
        return sa.func.btrim(text, sa.literal(_TRIMMED, sa.String))
    if conn.dialect.name == "sqlite":
        return sa.func.trim(text, sa.literal(_TRIMMED, sa.String))
    if conn.dialect.name in ("mysql", "mariadb"):
        pattern = f"^[{_TRIMMED}]+|[{_TRIMMED}]+$"
        return sa.func.regexp_replace(text, sa.literal(pattern, sa.String), "")
    return sa.func.trim(text)
