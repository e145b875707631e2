"""The Alembic migrations: they build the schema the store expects, and guard its version."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import syncd
from syncd.errors import StateError, StateVersionError
from syncd.state import migrate, readonly
from syncd.state.db import create_state_engine, normalize_url, translated
from syncd.state.schema import HEAD_REVISION, create_at_head, metadata
from syncd.state.sql import SqlStateStore, current_revision, upgrade_database
from tests.support import STATE_BACKENDS, STATE_URL_FIXTURES


@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_migrations_build_exactly_the_schema_of_the_models(request, backend) -> None:
    url = request.getfixturevalue(STATE_URL_FIXTURES[backend])
    upgrade_database(url)

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()

    assert differences == []


def test_upgrade_is_idempotent_and_reports_the_head(sqlite_url) -> None:
    assert current_revision(sqlite_url) is None

    first = upgrade_database(sqlite_url)
    second = upgrade_database(sqlite_url)
    SqlStateStore(sqlite_url).upgrade()

    assert first == second == migrate.head_revision()
    assert current_revision(sqlite_url) == migrate.head_revision()


def test_migrations_run_standalone_from_an_alembic_config_with_a_url(sqlite_url) -> None:
    command.upgrade(migrate.alembic_config(url=sqlite_url), "head")

    assert current_revision(sqlite_url) == migrate.head_revision()


def test_a_database_from_a_newer_syncd_is_refused(sqlite_url) -> None:
    upgrade_database(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0999_future'"))
    engine.dispose()
    expected = (
        "state database at revision 0999_future was written by a newer syncd; "
        f"this one knows up to {migrate.head_revision()} — upgrade syncd or point it at "
        "another database"
    )

    with pytest.raises(StateVersionError) as raised:
        SqlStateStore(sqlite_url).upgrade()
    assert str(raised.value) == expected
    with pytest.raises(StateVersionError):
        upgrade_database(sqlite_url)


def test_the_pinned_head_revision_is_alembics_head() -> None:
    assert migrate.head_revision() == HEAD_REVISION


def _sqlite_schema(url: str) -> list[tuple[str, str, str]]:
    """Every table and index of an SQLite database with its DDL (whitespace aside)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all()
    finally:
        engine.dispose()
    return sorted((kind, name, " ".join((sql or "").split())) for kind, name, sql in rows)


def test_a_database_created_at_head_is_the_one_the_migrations_leave(tmp_path) -> None:
    migrated, created = (f"sqlite:///{tmp_path / name}" for name in ("migrated.db", "created.db"))
    upgrade_database(migrated)
    engine = create_state_engine(created)
    with engine.begin() as conn:
        create_at_head(conn)
    engine.dispose()

    assert _sqlite_schema(created) == _sqlite_schema(migrated)
    assert current_revision(created) == current_revision(migrated) == HEAD_REVISION


def _created_tables(url: str) -> list[str]:
    """The CREATE TABLE statements ``create_at_head`` emits on the dialect of ``url``."""
    statements: list[str] = []

    def record(sql: sa.schema.ExecutableDDLElement, *_: object, **__: object) -> None:
        statements.append(" ".join(str(sql.compile(dialect=engine.dialect)).split()))

    engine = sa.create_mock_engine(url, record)
    metadata.create_all(engine, checkfirst=False)
    return [s for s in statements if s.startswith("CREATE TABLE")]


def test_the_models_tables_are_innodb_utf8mb4_with_longtext_json_on_mysql() -> None:
    created = _created_tables("mysql+pymysql://")
    assert len(created) == len(metadata.tables)
    assert all(s.endswith(")ENGINE=InnoDB CHARSET=utf8mb4") for s in created)
    assert sum(" LONGTEXT" in s for s in created) == 3  # products, runs and doubts' JSON
    assert not any(" TEXT" in s.replace("LONGTEXT", "") for s in created if "payload" in s)


@pytest.mark.parametrize("url", ["sqlite://", "postgresql+psycopg://"])
def test_the_models_tables_have_no_mysql_options_elsewhere(url) -> None:
    created = _created_tables(url)
    assert len(created) == len(metadata.tables)
    assert not any("ENGINE" in s or "LONGTEXT" in s for s in created)
    assert sum("payload TEXT" in s for s in created) == 2  # products' and doubts'


def _recorded(url: str, revisions: list[str]) -> None:
    """Put ``revisions`` in the database's ``alembic_version`` in place of what it holds."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))
        for revision in revisions:
            conn.execute(sa.text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})
    engine.dispose()


def _revision_by_alembic(url: sa.URL) -> tuple[str | None, bool]:
    """What plan's schema check read before it recognised the head without Alembic."""
    with translated("read the schema revision", url):
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                return migrate.check_known(conn), sa.inspect(conn).has_table("products")
        finally:
            engine.dispose()


def _outcome(read: Callable[[sa.URL], object], url: str) -> object:
    """What ``read`` returns, or the class and message of what it raises."""
    try:
        return read(normalize_url(url))
    except Exception as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize(
    "revisions",
    [
        pytest.param(None, id="empty database"),
        *(pytest.param([f"000{n}"], id=f"at 000{n}") for n in range(1, 8)),
        pytest.param(["0999_future"], id="from a newer syncd"),
        pytest.param([], id="no revision recorded"),
        pytest.param([HEAD_REVISION, "0999_future"], id="two heads"),
    ],
)
def test_plan_reads_the_schema_revision_as_alembic_does(sqlite_url, revisions) -> None:
    if revisions is not None:
        upgrade_database(sqlite_url)
        _recorded(sqlite_url, revisions)

    fast = _outcome(readonly._schema_revision, sqlite_url)
    assert fast == _outcome(_revision_by_alembic, sqlite_url)


def test_the_sqlite_file_and_its_folder_are_created_owner_only(tmp_path) -> None:
    path = tmp_path / "new" / "state.db"

    store = SqlStateStore(f"sqlite:///{path}")
    store.upgrade()
    store.ping()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    store.close()


def test_sqlite_connections_use_wal_and_wait_when_busy(sqlite_url) -> None:
    store = SqlStateStore(sqlite_url)
    with store.engine.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    store.close()

    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 30000,
        "foreign_keys": 1,
    }


def test_an_unreachable_database_error_names_it_without_the_password() -> None:
    url = "postgresql://syncd:s3cr%40t-pw@127.0.0.1:1/state"

    with pytest.raises(StateError) as raised:
        SqlStateStore(url).ping()
    with pytest.raises(StateError) as raised_upgrade:
        upgrade_database(url)

    for error in (raised.value, raised_upgrade.value):
        message = str(error)
        assert "127.0.0.1:1/state" in message
        assert "s3cr" not in message
        assert error.__cause__ is not None


def test_the_migrations_folder_is_found_in_the_repository() -> None:
    folder = migrate.migrations_dir()

    assert (folder / "env.py").is_file()
    assert any(p.name.endswith(".py") for p in (folder / "versions").iterdir())
    assert folder.resolve() == (Path(syncd.__file__).parent.parent / "migrations").resolve()


# -- several instances, one state database ------------------------------------------


_UPGRADE = (
    "import sys\n"
    "from syncd.errors import StateError\n"
    "from syncd.state.sql import upgrade_database\n"
    "sys.stdin.readline()\n"  # every process starts, then all upgrade at once
    "try:\n"
    "    print(upgrade_database(sys.argv[1]))\n"
    "except StateError as exc:\n"
    "    sys.exit(f'syncd: {exc}')\n"
)


def _upgrade_at_once(url: str, instances: int) -> list[tuple[int, str]]:
    """``instances`` processes upgrading ``url`` at the same moment: (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": str(Path(syncd.__file__).parent.parent)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _UPGRADE, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(instances)
    ]
    time.sleep(0.5)  # not a test's wait: lets the interpreters import, to start together
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    return [(proc.returncode, out.strip()) for proc, out in zip(procs, outputs, strict=True)]


def _drop_everything(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            reflected = sa.MetaData()
            reflected.reflect(conn)
            reflected.drop_all(conn)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", STATE_BACKENDS)
def test_instances_upgrading_a_fresh_database_at_once_all_succeed_at_the_head(
    request, backend
) -> None:
    url = request.getfixturevalue(STATE_URL_FIXTURES[backend])
    head = migrate.head_revision()
    for _ in range(4):
        results = _upgrade_at_once(url, instances=4)

        assert results == [(0, head)] * 4
        assert current_revision(url) == head
        _drop_everything(url)


# -- SQLite's temporary files ----------------------------------------------------------

_SPILL_A_TEMPORARY_TABLE = """
import os, sys
from syncd.state.db import create_state_engine

engine = create_state_engine(f"sqlite:///{sys.argv[1]}")
with engine.connect() as conn:
    conn.exec_driver_sql("PRAGMA temp.cache_size=-64")  # 64 KiB: the table spills to disk
    conn.exec_driver_sql("CREATE TEMPORARY TABLE staged (k TEXT)")
    conn.exec_driver_sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "INSERT INTO staged SELECT printf('%060d', i) FROM n"
    )
    for fd in os.listdir("/proc/self/fd"):
        try:
            print(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("variable", ["TMPDIR", "TMP"])
def test_sqlite_temporary_files_go_where_python_puts_temporary_files(
    tmp_path: Path, variable: str
) -> None:
    """The staging tables of a big run spill to SQLite's temporary files: they must land
    in the same directory as the payload spool (Python's ``tempfile.gettempdir()``), not
    in SQLite's own choice (/var/tmp before /tmp when TMPDIR is not set)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TMP", "TEMP", "SQLITE_TMPDIR")
    }
    env[variable] = str(scratch)
    env["PYTHONPATH"] = str(Path(syncd.__file__).parent.parent)

    result = subprocess.run(
        [sys.executable, "-c", _SPILL_A_TEMPORARY_TABLE, str(tmp_path / "state.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    open_files = result.stdout.splitlines()
    assert any(name.startswith(f"{scratch}/") for name in open_files), open_files
