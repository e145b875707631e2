"""Row fingerprints computed by the database (``SqlSource.read_fingerprints``): they change
whenever a value the mapping can see changes, and whole rows come back as ``read`` gives them."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import SqlSourceConfig
from syncd.errors import SourceError
from syncd.sources.base import fingerprinted_rows
from syncd.sources.sql import SqlSource
from tests.sources.test_sql_source import BIG_TABLE_FILLS, _rss_bytes, load_catalog

DATABASES = [
    pytest.param("sqlite_url", id="sqlite"),
    pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_url", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=DATABASES)
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue(request.param)
    return value


def run(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def source(url: str, query: str, **options: Any) -> SqlSource:
    return SqlSource(SqlSourceConfig(kind="sql", url=url, query=query, key="id", **options))


def fingerprints(url: str, query: str = "SELECT * FROM t ORDER BY id") -> list[bytes]:
    found: list[bytes] = []
    for block in source(url, query).read_fingerprints():
        found.extend(block.fingerprints)
    return found


def fingerprint_after(url: str, update: str) -> bytes:
    run(url, update)
    [only] = fingerprints(url)
    return only


def test_an_unchanged_row_keeps_its_fingerprint(url: str) -> None:
    run(
        url,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t VALUES (1, 'a')",
    )

    assert fingerprints(url) == fingerprints(url)


def test_null_the_empty_text_and_the_text_null_have_different_fingerprints(url: str) -> None:
    run(
        url,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t VALUES (1, 'x')",
    )

    seen = [
        fingerprint_after(url, f"UPDATE t SET v = {value}")
        for value in ("NULL", "''", "'NULL'", "' '", "'\\\\N'")
    ]

    assert len(set(seen)) == len(seen)


def test_a_value_moved_between_columns_changes_the_fingerprint(url: str) -> None:
    run(
        url,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a VARCHAR(20), b VARCHAR(20))",
        "INSERT INTO t VALUES (1, 'x,y', NULL)",
    )

    seen = [
        fingerprint_after(url, "UPDATE t SET a = 'x', b = 'y'"),
        fingerprint_after(url, "UPDATE t SET a = 'x,y', b = NULL"),
        fingerprint_after(url, "UPDATE t SET a = NULL, b = 'x,y'"),
        fingerprint_after(url, "UPDATE t SET a = 'x,', b = 'y'"),
    ]

    assert len(set(seen)) == len(seen)


def test_the_column_names_order_and_types_are_in_the_fingerprint(url: str) -> None:
    run(
        url,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a VARCHAR(20), b VARCHAR(20), n INTEGER)",
        "INSERT INTO t VALUES (1, 'same', 'same', 1)",
    )
    queries = [
        "SELECT id, a, b, n FROM t",
        "SELECT id, b, a, n FROM t",  # equal values, other order
        "SELECT id, a AS title, b, n FROM t",  # a column renamed
        "SELECT id, a, b, CAST(n AS CHAR(5)) AS n FROM t",  # 1 as text, not a number
        "SELECT id, a, b, n, n AS m FROM t",  # one more column
    ]

    seen = [fingerprints(url, query)[0] for query in queries]

    assert len(set(seen)) == len(seen)


def test_numeric_precision_changes_the_fingerprint(url: str) -> None:
    postgres = url.startswith("postgresql")
    numeric, double, real = (
        ("NUMERIC", "DOUBLE PRECISION", "REAL")
        if postgres
        else ("DECIMAL(20,6)", "DOUBLE", "FLOAT")
    )
    run(
        url,
        f"CREATE TABLE t (id INTEGER PRIMARY KEY, p {numeric}, d {double}, f {real})",
        "INSERT INTO t VALUES (1, 0, 0, 0)",
    )
    states = [
        ("19.9", "0.3e0", "0.1e0"),
        ("19.900001", "0.3e0", "0.1e0"),
        ("19.9", f"CAST(0.1 AS {double}) + CAST(0.2 AS {double})", "0.1e0"),  # 0.30000000000000004
        ("19.9", "1e-20", "0.1e0"),
        ("19.9", "1.0000000000000002e-20", "0.1e0"),
        ("19.9", "1e300", "0.1e0"),
        ("19.9", "0.3e0", "16777216"),
        ("19.9", "0.3e0", "16777218"),  # a float's 6 digits would not tell these apart
    ]

    seen = [fingerprint_after(url, f"UPDATE t SET p = {p}, d = {d}, f = {f}") for p, d, f in states]

    assert len(set(seen)) == len(seen)


def test_whole_rows_come_back_as_the_plain_read_gives_them(url: str) -> None:
    load_catalog(url)
    sql = source(url, "SELECT * FROM products ORDER BY id")
    expected = list(sql.read())

    fetched: list[Any] = []
    for block in sql.read_fingerprints():
        fetched.extend(block.records(range(len(block.fingerprints))))

    assert fetched == expected
    assert len(expected) == 25


def fetched(sql: SqlSource, rows: dict[int, list[int]]) -> list[Any]:
    """The records of rows ``rows[b]`` of each block ``b``, fetched while the read is open."""
    records: list[Any] = []
    for number, block in enumerate(sql.read_fingerprints()):
        records.extend(block.records(rows.get(number, [])))
    return records


def test_a_block_fetches_only_the_rows_asked_for_in_their_order(url: str) -> None:
    load_catalog(url)
    sql = source(url, "SELECT * FROM products ORDER BY id", fetch_size=10)
    expected = list(sql.read())

    # MariaDB's blocks are read back from a spill file: every block still fetches
    got = fetched(sql, {0: [2], 1: [0, 4, 9], 2: [4]})

    assert [len(b.fingerprints) for b in sql.read_fingerprints()] == [10, 10, 5]
    assert got == [expected[i] for i in (2, 10, 14, 19, 24)]


def test_a_row_with_a_null_key_is_fetched_too(url: str) -> None:
    run(
        url,
        "CREATE TABLE t (n INTEGER PRIMARY KEY, id VARCHAR(20), v VARCHAR(20))",
        "INSERT INTO t VALUES (1, NULL, 'no key'), (2, 'b', 'has one')",
    )

    assert fetched(source(url, "SELECT id, v FROM t ORDER BY n"), {0: [0, 1]}) == [
        {"id": None, "v": "no key"},
        {"id": "b", "v": "has one"},
    ]


def test_a_query_that_is_not_deterministic_fails_the_read_naming_the_setting(url: str) -> None:
    if url.startswith("sqlite"):
        pytest.skip("SQLite rows are read whole once: nothing is fetched a second time")
    random = "random()" if url.startswith("postgresql") else "RAND()"
    run(url, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    sql = source(url, f"SELECT id, {random} AS r FROM t")

    with pytest.raises(SourceError, match="fingerprint_rows"):
        for block in sql.read_fingerprints():
            list(block.records([0]))


def test_a_query_without_the_key_column_fails_the_read_naming_source_key(url: str) -> None:
    run(url, "CREATE TABLE t (sku INTEGER PRIMARY KEY)")

    with pytest.raises(SourceError, match=r"no column 'id' \(source.key\)"):
        list(source(url, "SELECT * FROM t").read_fingerprints())


def test_the_fingerprint_pass_is_read_only(url: str) -> None:
    if url.startswith("sqlite"):
        pytest.skip("SQLite: a SELECT can't write (query_only covers the rest)")
    run(url, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    writing = "INSERT INTO t VALUES (7)"
    if url.startswith("postgresql"):
        run(
            url,
            f"CREATE FUNCTION sneak() RETURNS integer LANGUAGE sql AS $$ {writing} RETURNING id $$",
        )
        query = "SELECT sneak() AS id"
    else:
        query = "SELECT id FROM t FOR UPDATE"

    with pytest.raises(SourceError, match=r"(?i)read.?only"):
        list(source(url, query).read_fingerprints())


def test_a_dotted_key_or_the_setting_off_reads_rows_whole(url: str) -> None:
    assert fingerprinted_rows(source(url, "SELECT 1 AS id")) is not None
    assert fingerprinted_rows(source(url, "SELECT 1 AS id", fingerprint_rows=False)) is None
    dotted = SqlSourceConfig(kind="sql", url=url, query="SELECT 1 AS id", key="data.id")
    assert fingerprinted_rows(SqlSource(dotted)) is None


def test_a_read_asking_for_every_row_reads_them_in_one_pass_with_the_same_fingerprints(
    url: str,
) -> None:
    load_catalog(url)
    sql = source(url, "SELECT * FROM products ORDER BY id", fetch_size=10)
    expected = list(sql.read())
    fetched_blocks = [block.fingerprints for block in sql.read_fingerprints()]

    records: list[Any] = []
    whole_blocks: list[list[bytes]] = []
    for block in sql.read_fingerprints(whole=True):
        whole_blocks.append(block.fingerprints)
        records.extend(block.records(range(len(block.fingerprints))))

    assert whole_blocks == fetched_blocks
    assert records == expected


@pytest.mark.parametrize("whole", [False, True], ids=["fetched", "whole"])
def test_a_big_read_by_fingerprint_streams_in_bounded_memory(url: str, whole: bool) -> None:
    if url.startswith("sqlite"):
        pytest.skip("the SQLite read streams as the plain read does (its own test)")
    rows = 100_000
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE big (id integer PRIMARY KEY, body text)")
        conn.exec_driver_sql(BIG_TABLE_FILLS[engine.dialect.name].format(n=rows))
    engine.dispose()
    sql = source(url, "SELECT id, body FROM big ORDER BY id", fetch_size=1000)
    baseline = _rss_bytes()
    peak, count, fetched = baseline, 0, 0

    for block in sql.read_fingerprints(whole):
        count += len(block.fingerprints)
        asked = range(0, len(block.fingerprints), 1 if whole else 10)
        fetched += sum(1 for _ in block.records(asked))
        peak = max(peak, _rss_bytes())

    assert count == rows
    assert fetched == (rows if whole else rows // 10)
    # held all at once, the bodies alone would grow the process by about 80 MB
    assert peak - baseline < 30 * 2**20, "the rows must not be held all at once"


def test_a_query_ending_in_a_semicolon_or_a_comment_is_read_by_fingerprint(url: str) -> None:
    run(url, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)")

    for query in ("SELECT id FROM t;  \n", "SELECT id FROM t -- the whole table"):
        sql = source(url, query)
        assert [list(b.records([0])) for b in sql.read_fingerprints()] == [[{"id": 1}]]
