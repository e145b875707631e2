"""Alembic glue: where the migrations live, which revision a database is at, upgrading it.

Alembic is configured in code (no ``alembic.ini``); the connection is handed to
``migrations/env.py`` through ``config.attributes["connection"]``. ``upgrade_engine``
holds a database lock for the whole upgrade, so instances starting together on one
fresh database migrate it once.
"""

from __future__ import annotations

import contextlib
import functools
import zlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

import syncd
from syncd.errors import StateError, StateVersionError
from syncd.state.schema import metadata


def migrations_dir() -> Path:
    """The Alembic script folder: inside the wheel if installed, else the repository's."""
    package = Path(syncd.__file__).parent
    bundled = package / "_migrations"
    return bundled if bundled.is_dir() else package.parent / "migrations"


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config for the syncd migrations, bound to a connection or a URL."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The migration scripts this syncd ships (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this syncd knows."""
    head = script_directory().get_current_head()
    if head is None:
        raise StateError(f"no migrations found in {migrations_dir()}")
    return head


def current_revision_of(connection: Connection) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def check_known(connection: Connection) -> str | None:
    """Raise ``StateVersionError`` when the database is at a revision this syncd lacks."""
    current = current_revision_of(connection)
    if current is None:
        return None
    try:
        script_directory().get_revision(current)
    except CommandError as exc:
        raise StateVersionError(
            f"state database at revision {current} was written by a newer syncd; "
            f"this one knows up to {head_revision()} — upgrade syncd or point it at "
            "another database"
        ) from exc
    return current


def upgrade_connection(connection: Connection) -> str:
    """Run ``alembic upgrade head`` on an open connection; return the new revision.

    The caller owns the transaction (commit after this returns).
    """
    head = head_revision()
    if check_known(connection) == head:
        return head
    command.upgrade(alembic_config(connection), "head")
    revision = current_revision_of(connection)
    assert revision is not None
    return revision


LOCK_NAME = "syncd_migrate"
"""The MySQL/MariaDB named lock held while migrating (followed by the database's name)."""
LOCK_KEY = zlib.crc32(LOCK_NAME.encode())
"""The PostgreSQL advisory lock key held while migrating (a constant of syncd's own)."""
LOCK_WAIT_S = 600
"""How long an instance waits for another one's migration before giving up (MySQL)."""


@contextlib.contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Hold the database's migration lock on ``connection`` (outside any transaction)
    until the block ends: PostgreSQL a session advisory lock, MySQL/MariaDB a named
    lock (both survive DDL's implicit commits and die with the session); SQLite takes
    its write lock with ``BEGIN IMMEDIATE`` inside ``upgrade_engine`` instead."""
    name = connection.dialect.name
    if name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            connection.commit()
    elif name in ("mysql", "mariadb"):
        # Named locks are server-wide: one per database.
        lock = f"{LOCK_NAME}.{connection.engine.url.database or ''}"[:64]
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :wait)"), {"name": lock, "wait": LOCK_WAIT_S}
        ).scalar()
        connection.commit()
        if got != 1:
            raise StateError(
                f"another syncd has been migrating this database for over {LOCK_WAIT_S} s "
                f"(lock {lock!r}); wait for it, or check it is not stuck"
            )
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": lock})
            connection.commit()
    else:
        yield


def upgrade_engine(engine: Engine) -> str:
    """Bring the database to the head under the migration lock; return its revision.

    The instance that gets the lock first migrates; the others wait, then find the
    database at the head and do nothing.
    """
    with engine.connect() as connection:
        head = head_revision()
        if check_known(connection) == head:
            return head  # the usual case: no lock, no write
        connection.rollback()
    with engine.connect() as connection, migration_lock(connection):
        if connection.dialect.name in ("mysql", "mariadb"):
            return _upgrade_stepwise(connection)
        with connection.begin():
            if connection.dialect.name == "sqlite":
                # SQLite's write lock, taken before reading the revision (the driver
                # runs DDL outside any transaction unless one is open).
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            revision = upgrade_connection(connection)
        return revision


def _upgrade_stepwise(connection: Connection) -> str:
    """Upgrade one revision a transaction, each committed with its version row.

    MySQL and MariaDB commit each DDL statement at once: in one transaction for every
    revision, a migration dying half-way (0007 rewrites every product's hash) would roll
    the version back to before the revisions whose DDL stayed applied, and every later
    upgrade would fail to apply that DDL again. One at a time, it rolls back to the
    revision before it, which is run again whole."""
    head = head_revision()
    while True:
        with connection.begin():
            current = check_known(connection)
            if current == head:
                return head
            following = [
                script.revision
                for script in script_directory().walk_revisions("base", "heads")
                if script.down_revision == current
            ]
            command.upgrade(alembic_config(connection), following[0])


def missing_tables(connection: Connection) -> list[str]:
    """The tables of syncd's schema that the database lacks."""
    present = set(inspect(connection).get_table_names())
    return sorted(set(metadata.tables) - present)


def schema_problem(connection: Connection) -> str | None:
    """Why the database's schema is not the one this syncd uses (None: it is)."""
    head = head_revision()
    current = current_revision_of(connection)
    if current is None:
        return f"schema missing (no revision), expected {head}"
    if current != head:
        return f"schema at revision {current}, expected {head}"
    missing = missing_tables(connection)
    if missing:
        return f"schema at revision {head} but its tables {', '.join(missing)} are missing"
    return None
