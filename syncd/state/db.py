"""The state database's engine and plumbing, shared by the store and the staging.

Owns the engine (SQLite pragmas, an owner-only database file), the translation of
SQLAlchemy errors into ``StateError`` (never showing the password), the fast
statement helpers, and ``upgrade_database``/``current_revision`` for the CLI.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote_plus

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from syncd.errors import StateError
from syncd.logs import scrub_snippet
from syncd.model import Acked

T = TypeVar("T")

READ_BATCH = 2000
"""Rows fetched per round trip when streaming acknowledged entries or deletes."""
IN_BATCH = 500
"""Keys per ``IN (...)`` list when deleting by key."""
SQLITE_BUSY_TIMEOUT_MS = 30_000
ACK_COLUMNS = ("target", "key", "hash", "payload", "acked_at", "source_hash")
STAGED_COLUMNS = ("seq", "key", "hash", "source_hash")
FINGERPRINT_COLUMNS = ("seq", "source_hash")

_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_DRIVER_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


# -- engine and errors ---------------------------------------------------------


def normalize_url(url: str | URL) -> URL:
    """Parse a state URL, choosing psycopg 3 / PyMySQL when no driver is named."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StateError(f"invalid state database URL {safe_url(url)}: {exc}") from exc
    if parsed.drivername in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=_DEFAULT_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparsable URL>"


def describe_failure(what: str, url: URL, exc: BaseException) -> str:
    """A one-line message for a failed operation, scrubbed of the URL's password."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    detail = " ".join(f"{type(cause).__name__}: {cause}".split())
    if url.password:
        for secret in {str(url.password), quote_plus(str(url.password))}:
            detail = detail.replace(secret, "***")
    detail = scrub_snippet(detail, 400)
    return f"state database {safe_url(url)}: {what} failed: {detail}"


def _translated_errors() -> tuple[type[Exception], ...]:
    """The errors ``translated`` turns into ``StateError``: SQLAlchemy's, the OS's, and
    Alembic's ``CommandError`` once Alembic is loaded. Exact: no such error exists before
    its module is imported, and importing it here would load all of Alembic (~0.1 s) into
    commands that never migrate, such as ``plan``. (A module another thread is importing
    may not define it yet: then none of its errors was raised either.)"""
    command_error = getattr(sys.modules.get("alembic.util.exc"), "CommandError", None)
    migrating = () if command_error is None else (command_error,)
    return (SQLAlchemyError, OSError, *migrating)


@contextlib.contextmanager
def translated(what: str, url: URL) -> Iterator[None]:
    """Turn database and migration errors into ``StateError``, chained with ``from``."""
    try:
        yield
    except StateError:
        raise
    except _translated_errors() as exc:
        raise StateError(describe_failure(what, url, exc)) from exc


def _create_sqlite_file(url: URL) -> None:
    """Create the database file (and its folder) readable by its owner only."""
    database = url.database
    if (
        not database
        or database == ":memory:"
        or url.query.get("uri")
        or database.startswith("file:")
    ):
        return
    path = Path(database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def follow_python_temp_directory() -> None:
    """Make SQLite put its temporary files (spilled staging tables, sorts) where Python
    puts the payload spool: ``tempfile.gettempdir()`` (``TMPDIR``, ``TEMP``, ``TMP``,
    then ``/tmp``). SQLite alone reads only ``SQLITE_TMPDIR`` and ``TMPDIR``, and tries
    ``/var/tmp`` before ``/tmp``. An explicit ``SQLITE_TMPDIR`` is kept."""
    os.environ.setdefault("SQLITE_TMPDIR", tempfile.gettempdir())


def create_state_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for the state database; for SQLite, creates the file 0600 and sets WAL."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        follow_python_temp_directory()
        _create_sqlite_file(parsed)
        engine = sa.create_engine(
            parsed, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    try:
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    except ImportError as exc:
        extra = _DRIVER_EXTRAS.get(parsed.get_backend_name())
        hint = f": install syncd[{extra}]" if extra else ""
        raise StateError(
            f"state database {safe_url(parsed)} needs the {parsed.get_driver_name()} driver{hint}"
        ) from exc


def upgrade_database(url: str) -> str:
    """Bring the state database at ``url`` to the newest schema; return its revision."""
    from syncd.state import migrate  # Alembic (~0.1 s to load): only when migrating

    parsed = normalize_url(url)
    with translated("upgrade", parsed):
        engine = create_state_engine(parsed)
        try:
            return migrate.upgrade_engine(engine)
        finally:
            engine.dispose()


def current_revision(url: str) -> str | None:
    """The schema revision of the state database at ``url`` (None: never migrated)."""
    from syncd.state import migrate  # Alembic (~0.1 s to load): only for ``db`` commands

    parsed = normalize_url(url)
    with translated("read the schema revision", parsed):
        engine = create_state_engine(parsed)
        try:
            with engine.connect() as conn:
                return migrate.current_revision_of(conn)
        finally:
            engine.dispose()


def upsert(
    conn: Connection,
    table: sa.Table,
    keys: Sequence[str],
    updates: Callable[[Any], dict[str, Any]],
) -> sa.Insert:
    """``INSERT … ON CONFLICT/DUPLICATE KEY UPDATE`` for this connection's dialect.

    ``updates`` receives the row proposed for insertion (``excluded``/``inserted``).
    """
    name = conn.dialect.name
    if name == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(index_elements=keys, set_=updates(lite.excluded))
    # The server dialects are loaded only for a server's state (~30 ms for PostgreSQL).
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(index_elements=keys, set_=updates(pg.excluded))
    if name in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        my = mysql.insert(table)
        return my.on_duplicate_key_update(updates(my.inserted))
    raise StateError(f"unsupported state database dialect {name!r}")


def executemany(
    conn: Connection,
    stmt: sa.Insert | sa.Delete | sa.Update,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Run an INSERT, upsert or DELETE for many rows through the driver's ``executemany``.

    The hot paths (staging, acks) skip SQLAlchemy's per-row parameter processing,
    which costs several times what the database does; values must be driver-native.
    """
    if not rows:
        return
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(columns))
    params: Sequence[Any]
    if compiled.positiontup is None:
        params = [dict(zip(columns, row, strict=True)) for row in rows]
    else:
        order = [columns.index(name) for name in compiled.positiontup]
        params = (
            rows if order == list(range(len(order))) else [tuple(r[i] for i in order) for r in rows]
        )
    conn.exec_driver_sql(compiled.string, params)


def delete_keys(conn: Connection, table: sa.Table, target: str, keys: Sequence[str]) -> None:
    """Delete the target's rows of these keys (``products`` or ``rejections``).

    SQLite runs one cheap in-process statement per key; a server gets one round trip
    per ``IN_BATCH`` keys.
    """
    if conn.dialect.name == "sqlite":
        by_key = table.delete().where(
            table.c.target == sa.bindparam("b_target"), table.c.key == sa.bindparam("b_key")
        )
        executemany(conn, by_key, ("b_target", "b_key"), [(target, key) for key in keys])
        return
    for chunk in chunks(keys):
        conn.execute(table.delete().where(table.c.target == target, table.c.key.in_(chunk)))


def chunks(items: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def acked_from_row(row: Sequence[Any]) -> Acked:
    """An ``Acked`` from a (key, hash, payload JSON text) row."""
    key, hash_, payload = row
    return Acked(key, bytes(hash_), payload.encode() if isinstance(payload, str) else payload)
