"""Shared fixtures: fresh databases on the machine's real PostgreSQL and MariaDB servers,
the fake targets, and a run's chunks and groups made small.

Each ``*_url`` fixture creates an empty database for one test and drops it after.
When a server is down the test fails under CI (``CI=true``), so SQL coverage can't
silently vanish, and is skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from syncd.sandbox import FakeUserflux, FakeVambe
from tests.support import KEY

PG_ADMIN = os.environ.get("SYNCD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("SYNCD_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc.__class__.__name__}: {exc})"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run should have started it")
    pytest.skip(message)


def _scratch_database(admin_url: str, what: str) -> Iterator[str]:
    import sqlalchemy as sa

    name = f"syncd_t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        engine.dispose()
        _unavailable(what, exc)
    url = sa.make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database URL (psycopg 3 driver)."""
    yield from _scratch_database(PG_ADMIN, "PostgreSQL on 127.0.0.1:5432")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database URL (PyMySQL driver)."""
    yield from _scratch_database(MARIADB_ADMIN, "MariaDB on 127.0.0.1:3306")


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A SQLite database file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


@pytest.fixture
def userflux() -> Iterator[FakeUserflux]:
    """A fake UserFlux taking ``tests.support.KEY`` (a module's own fixture overrides it)."""
    with FakeUserflux(api_key=KEY) as server:
        yield server


@pytest.fixture
def vambe() -> Iterator[FakeVambe]:
    """A fake Vambe taking ``tests.support.KEY``."""
    with FakeVambe(api_key=KEY) as server:
        yield server


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 5 records and groups of 4 changes: requests go out while a few dozen
    records are still being read (``syncd.stages.planning``); spool segments of 1 KB, so
    the disk of the groups sent is released as the run goes (``syncd.model.Spool``)."""
    from syncd import model
    from syncd.stages import planning, reading

    monkeypatch.setattr(planning, "CHUNK", 5)
    monkeypatch.setattr(reading, "CHUNK", 5)
    monkeypatch.setattr(planning, "GROUP", 4)
    monkeypatch.setattr(model, "SEGMENT_BYTES", 1024)
