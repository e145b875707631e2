"""The state database opened for ``syncd plan`` and the read-only commands (``status``,
``history``, ``rejections``, ``show``, ``db current``): read, never created, never migrated.

``open_store_for_plan`` returns the store to diff against and, when the database is
missing or has no syncd schema, a notice saying so: the plan then diffs against an
empty scratch store (every product a create), and the real database stays untouched.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL

from syncd.errors import StateError
from syncd.state.base import StateStore
from syncd.state.db import normalize_url, safe_url, translated
from syncd.state.schema import HEAD_REVISION, create_at_head, stamped_revisions
from syncd.state.sql import SqlStateStore


@dataclass(frozen=True, slots=True)
class PlanState:
    """The store a plan reads, and what to tell the operator about it (None: nothing)."""

    store: StateStore
    notice: str | None = None


class _ScratchStateStore(SqlStateStore):
    """An empty store at head in a temporary folder, removed on ``close``."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="syncd-plan-")
        super().__init__(f"sqlite:///{Path(self._folder.name) / 'empty-state.db'}")
        with self.translated("create"), self.engine.begin() as conn:
            create_at_head(conn)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._folder.cleanup()


def _sqlite_file(url: URL) -> Path | None:
    """The file of a plain SQLite URL (None: not SQLite, in memory, or a ``file:`` URI)."""
    database = url.database
    if (
        url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or url.query.get("uri")
        or database.startswith("file:")
    ):
        return None
    return Path(database)


def _read_only(url: URL, path: Path) -> URL:
    """The URL of an SQLite file opened read-only (``mode=ro``): a stray write fails."""
    located = quote(str(path.resolve()))
    return url.set(database=f"file:{located}").update_query_dict({"mode": "ro", "uri": "true"})


def _schema_revision(url: URL) -> tuple[str | None, bool]:
    """(Alembic revision or None, whether a ``products`` table exists), read only.

    A database at ``HEAD_REVISION`` (the usual case) is recognised without Alembic: its
    one recorded revision is the one Alembic would return. Any other is left to Alembic,
    which tells a schema behind from one of a newer syncd (``StateVersionError``).
    """
    with translated("read the schema revision", url):
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                revision: str | None = HEAD_REVISION
                if stamped_revisions(conn) != [HEAD_REVISION]:
                    from syncd.state import migrate  # Alembic: only for a database not at head

                    revision = migrate.check_known(conn)
                has_products = sa.inspect(conn).has_table("products")
                conn.rollback()
                return revision, has_products
        finally:
            engine.dispose()


def open_store_for_plan(url: str) -> PlanState:
    """The state a plan diffs against, without creating or migrating anything.

    A missing SQLite file, or a database without syncd's schema, is read as empty (a
    scratch store; the notice says a sync would create it and send everything). A
    schema behind this syncd's is refused (``StateError``: run ``syncd db upgrade``);
    one from a newer syncd raises ``StateVersionError``.
    """
    parsed = normalize_url(url)
    shown = safe_url(parsed)
    path = _sqlite_file(parsed)
    if path is not None and not path.exists():
        return PlanState(
            _ScratchStateStore(),
            f"state database {shown} does not exist: a sync would create it and send "
            "everything (planned here against empty state)",
        )
    probe = _read_only(parsed, path) if path is not None else parsed
    revision, has_products = _schema_revision(probe)
    if revision is None and not has_products:
        return PlanState(
            _ScratchStateStore(),
            f"state database {shown} has no syncd schema yet: a sync would create it and "
            "send everything (planned here against empty state)",
        )
    if revision != HEAD_REVISION:
        raise StateError(
            f"state database {shown} is at schema revision {revision or 'none'}, this syncd "
            f"needs {HEAD_REVISION}: plan never migrates; run `syncd db upgrade` (or a sync) "
            "first"
        )
    return PlanState(SqlStateStore(probe.render_as_string(hide_password=False)))


def read_revision(url: str) -> tuple[str | None, str | None]:
    """The schema revision of the state database at ``url`` and a notice (None: nothing to
    say), read only: a missing SQLite file is reported, never created."""
    from syncd.state import migrate  # Alembic (~0.1 s to load): only ``db current`` asks

    parsed = normalize_url(url)
    path = _sqlite_file(parsed)
    if path is not None and not path.exists():
        return None, f"state database {safe_url(parsed)} does not exist"
    probe = _read_only(parsed, path) if path is not None else parsed
    with translated("read the schema revision", probe):
        engine = sa.create_engine(probe)
        try:
            with engine.connect() as conn:
                revision = migrate.current_revision_of(conn)
                conn.rollback()
                return revision, None
        finally:
            engine.dispose()


__all__ = ["PlanState", "open_store_for_plan", "read_revision"]
