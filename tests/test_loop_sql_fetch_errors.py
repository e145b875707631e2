"""A SQL source read by fingerprint fails like any read when fetching whole rows fails
(the second pass, after the fingerprints): a ``SourceError`` naming the source, the read
incomplete, no product deleted."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import SqlSourceConfig
from syncd.errors import SourceError
from syncd.sources import sql_fingerprints
from syncd.sources.sql import SqlSource
from tests.support import catalog, load_table
from tests.test_loop_skip import fakes, maps, reset, sql_harness

__all__ = ["fakes", "maps"]  # fixtures

DATABASES = [
    pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_url", id="mariadb", marks=pytest.mark.mariadb),
]


def kill_other_connections(url: str) -> None:
    """End every other session on the test's own database (the source's read)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            ids: list[int] = list(
                conn.exec_driver_sql(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                ).scalars()
            )
            for session in ids:
                conn.exec_driver_sql(f"KILL {int(session)}")
    engine.dispose()


@pytest.fixture
def connection_lost_before_the_fetch(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Urls whose reading session is killed the first time a run fetches whole rows."""
    pending: list[str] = []
    original = sql_fingerprints.SqlFingerprintBlock.records

    def records(self: Any, indexes: Any) -> Iterator[dict[str, Any]]:
        while pending:
            kill_other_connections(pending.pop())
        return original(self, indexes)

    monkeypatch.setattr(sql_fingerprints.SqlFingerprintBlock, "records", records)
    return pending


@pytest.mark.parametrize("database", DATABASES)
def test_a_fetch_failing_is_a_source_error_naming_the_source(
    database: str, request: pytest.FixtureRequest, connection_lost_before_the_fetch: list[str]
) -> None:
    url = request.getfixturevalue(database)
    load_table(url, catalog(5))
    query = "SELECT * FROM products ORDER BY sku"
    sql = SqlSource(SqlSourceConfig(kind="sql", url=url, query=query, key="sku"))
    connection_lost_before_the_fetch.append(url)

    with pytest.raises(SourceError) as caught:
        for block in sql.read_fingerprints():
            list(block.records([0]))

    assert str(caught.value).startswith(sql.describe())


@pytest.mark.parametrize("database", DATABASES)
def test_a_run_whose_fetch_fails_deletes_nothing_and_says_the_read_failed(
    tmp_path: Path,
    fakes: Any,
    maps: dict[str, int],
    database: str,
    request: pytest.FixtureRequest,
    connection_lost_before_the_fetch: list[str],
) -> None:
    url = request.getfixturevalue(database)
    records = catalog(20)
    load_table(url, records)
    h = sql_harness(tmp_path, fakes, url)
    assert h.sync().ok
    # one product gone, one edited (fetched whole in the second pass)
    load_table(
        url, [dict(r, price="77.50") if i == 3 else r for i, r in enumerate(records) if i != 5]
    )
    connection_lost_before_the_fetch.append(url)
    reset(fakes, maps)

    report = h.sync()

    assert connection_lost_before_the_fetch == []  # the session was killed mid-read
    assert not report.source_complete
    error = report.source_error or ""
    assert error.startswith("sql ") and " query: " in error  # the source, as it describes itself
    assert "P0000" not in error and "SELECT" not in error  # not the statement and its keys
    userflux, vambe, block = fakes
    assert userflux.request_count("DELETE") == 0
    assert [t.deleted for t in report.targets] == [0, 0]
    assert len(userflux.products) == 20
    assert len(vambe.block_products(block)) == 20
    h.close()


@pytest.mark.mariadb
def test_a_spill_file_that_cannot_be_written_is_a_source_error_naming_the_source(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_table(mariadb_url, catalog(5))
    query = "SELECT * FROM products ORDER BY sku"
    sql = SqlSource(SqlSourceConfig(kind="sql", url=mariadb_url, query=query, key="sku"))

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)

    with pytest.raises(SourceError, match="No space left on device") as caught:
        for block in sql.read_fingerprints():
            list(block.records([0]))

    assert str(caught.value).startswith(sql.describe())


ORDER_KEPT_ONLY_WITH_LIMIT = pytest.mark.xfail(
    reason="MariaDB ignores ORDER BY in a derived table without LIMIT: read by fingerprint, "
    "rows come in the table's order, not the query's (the same rows and requests; a batch "
    "lists its products in another order). Found by the review and left: the wrapped query "
    "keeps its ORDER BY only with a LIMIT, which would mean parsing the query",
    strict=True,
)


@pytest.mark.parametrize(
    "database",
    [
        pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
        pytest.param(
            "mariadb_url", id="mariadb", marks=[pytest.mark.mariadb, ORDER_KEPT_ONLY_WITH_LIMIT]
        ),
    ],
)
def test_rows_read_by_fingerprint_come_in_the_query_order(
    database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(database)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # stored (by n) in the reverse of the query's order
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER PRIMARY KEY, sku VARCHAR(20))")
        for n in range(1, 7):
            conn.exec_driver_sql(f"INSERT INTO t VALUES ({n}, 'P{7 - n}')")
    engine.dispose()
    query = "SELECT sku, n FROM t ORDER BY sku"
    sql = SqlSource(SqlSourceConfig(kind="sql", url=url, query=query, key="sku"))

    fetched: list[Any] = []
    for block in sql.read_fingerprints():
        fetched.extend(block.records(range(len(block.fingerprints))))

    in_order = [f"P{n}" for n in range(1, 7)]
    assert [r["sku"] for r in sql.read()] == in_order
    assert [r["sku"] for r in fetched] == in_order


@pytest.mark.postgres
@pytest.mark.xfail(
    reason="a key column without an equality operator (PostgreSQL json) can't be fetched by "
    "key (WHERE key IN ...): the read by fingerprint fails where the plain read worked. Found "
    "by the review and left; source.fingerprint_rows = false, or key::text in the query",
    raises=SourceError,
    strict=True,
)
def test_a_json_key_column_is_read_by_fingerprint(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER PRIMARY KEY, sku JSON)")
        conn.exec_driver_sql("""INSERT INTO t VALUES (1, '"P1"')""")
    engine.dispose()
    sql = SqlSource(SqlSourceConfig(kind="sql", url=pg_url, query="SELECT * FROM t", key="sku"))

    fetched: list[Any] = []
    for block in sql.read_fingerprints():
        fetched.extend(block.records(range(len(block.fingerprints))))

    assert fetched == list(sql.read())


@pytest.mark.parametrize(
    "database",
    [
        pytest.param("sqlite_url", id="sqlite"),
        pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb_url", id="mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_read_failing_midway_reports_the_records_it_read(
    tmp_path: Path,
    fakes: Any,
    maps: dict[str, int],
    database: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count a failed read reports is of the records it returned (those every target
    knows by fingerprint, and those fetched before the failure), not zero."""
    url = request.getfixturevalue(database)
    records = catalog(300)
    load_table(url, records)
    h = sql_harness(tmp_path, fakes, url)
    assert h.sync().ok
    edited = [
        dict(r, title=r["title"] + " (new)") if i % 3 == 0 else r for i, r in enumerate(records)
    ]
    load_table(url, edited)  # 100 rows edited: fetched whole, the fetch failing after 70

    def failing(original: Any) -> Any:
        def records(self: Any, indexes: Any) -> Iterator[dict[str, Any]]:
            for n, record in enumerate(original(self, indexes)):
                if n == 70:
                    raise SourceError("sql: the connection was lost")
                yield record

        return records

    for block in (sql_fingerprints.SqlFingerprintBlock, sql_fingerprints.SqlRowBlock):
        monkeypatch.setattr(block, "records", failing(block.records))
    reset(fakes, maps)

    report = h.sync()

    assert not report.source_complete
    assert report.source_error == "sql: the connection was lost"
    # the 200 rows every target knows, and the 70 edited ones fetched before the failure
    assert report.source_count == 270
    assert maps == {"uf": 70, "vb": 70}
    assert [t.deleted for t in report.targets] == [0, 0]
    h.close()
