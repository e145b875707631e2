"""Alembic glue: where the migrations live, which revision a database is at, upgrading it.

Alembic is configured in code (no ``alembic.ini``); the connection is handed to
``migrations/env.py`` through ``config.attributes["connection"]``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

import syncd
from syncd.errors import StateError, StateVersionError


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
