"""The SQL source, one suite over SQLite, PostgreSQL and MariaDB: same catalog, same records."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import SqlSourceConfig
from syncd.errors import SourceError
from syncd.sources import open_source
from syncd.sources.sql import SqlSource, plain_value

DATABASES = [
    pytest.param("sqlite_url", id="sqlite"),
    pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_url", id="mariadb", marks=pytest.mark.mariadb),
]

metadata = sa.MetaData()
products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(20), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("price", sa.Numeric(10, 2)),
    sa.Column("stock", sa.Integer),
    sa.Column("weight", sa.Float),
    sa.Column("active", sa.Boolean),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("description", sa.Text),
    sa.Column("code", sa.LargeBinary(16)),
)


def generated_catalog(n: int = 25) -> list[dict[str, Any]]:
    return [
        {
            "id": f"sku-{i:04d}",
            "name": f"Product {i} \u2014 ünïcode",
            "price": decimal.Decimal(f"{i * 3}.{i % 100:02d}"),
            "stock": i * 7 - 50,
            "weight": i / 4,
            "active": i % 2 == 0,
            "updated_at": dt.datetime(2024, 1, 1, 12, 0, 0) + dt.timedelta(hours=i),
            "description": None if i % 5 == 0 else f"<p>Line {i}</p>\n'quoted' \"too\"",
            "code": bytes([i, 255 - i, 0, 16]),
        }
        for i in range(1, n + 1)
    ]


def expected_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "price": float(row["price"]),
        "active": int(row["active"]),
        "updated_at": row["updated_at"].isoformat(),
        "code": row["code"].hex(),
    }


def normalised(record: dict[str, Any]) -> dict[str, Any]:
    """What differs between databases for the same data, made the same.

    Booleans: MariaDB and SQLite have none (0/1). Datetimes: SQLite stores them as the
    text SQLAlchemy wrote ("2024-01-01 13:00:00.000000"). Numerics: SQLite hands back
    ``20`` where the others say ``20.0``.
    """
    out = dict(record)
    out["active"] = int(out["active"])
    if isinstance(out["price"], int):
        out["price"] = float(out["price"])
    out["updated_at"] = out["updated_at"].replace(" ", "T").removesuffix(".000000")
    return out


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    return url


def load_catalog(url: str) -> str:
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(products.insert(), generated_catalog())
    engine.dispose()
    return url


@pytest.fixture
def loaded_url(db_url: str) -> str:
    return load_catalog(db_url)


def sql_source(url: str, **options: Any) -> SqlSource:
    if "query" not in options and "table" not in options:
        options["table"] = "products"
    return SqlSource(SqlSourceConfig(kind="sql", url=url, **options))


def count_rows(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count: int = conn.execute(sa.text("SELECT count(*) FROM products")).scalar_one()
    engine.dispose()
    return int(count)


# --- One suite, every database ---------------------------------------------------------


def test_every_database_yields_the_same_records_for_the_same_catalog(loaded_url: str) -> None:
    expected = [expected_record(row) for row in generated_catalog()]

    from_table = sorted(sql_source(loaded_url).read(), key=lambda r: r["id"])
    from_query = list(
        sql_source(loaded_url, query="SELECT * FROM products ORDER BY id", fetch_size=7).read()
    )

    assert [normalised(r) for r in from_table] == expected
    assert [normalised(r) for r in from_query] == expected


def test_the_query_reaches_the_database_as_written(loaded_url: str) -> None:
    query = (
        "SELECT id, ':x' AS colon, '{\"a\":1}' AS json, '50%' AS pct FROM products "
        "WHERE name LIKE 'Product 1%' ORDER BY id"
    )

    records = list(sql_source(loaded_url, query=query).read())

    assert [r["id"] for r in records] == ["sku-0001", *(f"sku-{i:04d}" for i in range(10, 20))]
    assert records[0] == {"id": "sku-0001", "colon": ":x", "json": '{"a":1}', "pct": "50%"}


def test_the_read_runs_in_a_read_only_transaction(loaded_url: str) -> None:
    writing = "INSERT INTO products (id, name) VALUES ('sneaky', 'x') RETURNING id"
    if loaded_url.startswith("postgresql"):
        # A server-side cursor refuses a bare INSERT outright; a function hides it.
        engine = sa.create_engine(loaded_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE FUNCTION sneak() RETURNS text LANGUAGE sql AS $$ {writing} $$"
            )
        engine.dispose()
        writing = "SELECT sneak() AS id"

    with pytest.raises(SourceError, match=r"(?i)read.?only") as raised:
        list(sql_source(loaded_url, query=writing).read())

    assert count_rows(loaded_url) == len(generated_catalog())
    assert "sneaky" not in str(raised.value)


def test_a_query_returning_a_column_twice_fails_the_read(loaded_url: str) -> None:
    query = "SELECT p.id, q.id FROM products p JOIN products q ON q.id = p.id"

    with pytest.raises(SourceError, match="column 'id' more than once"):
        list(sql_source(loaded_url, query=query).read())


def test_a_missing_table_fails_the_read_naming_the_error_class(db_url: str) -> None:
    with pytest.raises(SourceError, match=r"(ProgrammingError|OperationalError|UndefinedTable)"):
        list(sql_source(db_url, table="no_such_table").read())


# --- SQLite ----------------------------------------------------------------------------


def test_a_missing_sqlite_file_fails_the_read_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite"

    with pytest.raises(SourceError, match="OperationalError"):
        list(sql_source(f"sqlite:///{path}").read())

    assert not path.exists()


def test_a_reserved_word_table_name_is_quoted(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "order" (id TEXT, "select" TEXT)')
        conn.exec_driver_sql("INSERT INTO \"order\" VALUES ('1', 'x')")
    engine.dispose()

    assert list(sql_source(sqlite_url, table="order").read()) == [{"id": "1", "select": "x"}]


def test_the_url_can_come_whole_from_the_environment(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATALOG_DB_URL", load_catalog(sqlite_url))
    config = SqlSourceConfig(kind="sql", url_env="CATALOG_DB_URL", table="products")

    source = open_source(config)

    assert isinstance(source, SqlSource)
    assert len(list(source.read())) == len(generated_catalog())


def test_an_unset_url_variable_fails_the_read_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATALOG_DB_URL", raising=False)
    config = SqlSourceConfig(kind="sql", url_env="CATALOG_DB_URL", table="products")

    with pytest.raises(SourceError, match="CATALOG_DB_URL is not set"):
        list(SqlSource(config).read())


# --- Secrets ---------------------------------------------------------------------------


def test_an_unreachable_server_fails_the_read_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CATALOG_DB_PASSWORD", "hunter2-secret")
    config = SqlSourceConfig(
        kind="sql",
        url="postgresql+psycopg://shop@127.0.0.1:1/catalog",
        password_env="CATALOG_DB_PASSWORD",
        table="products",
    )

    with pytest.raises(SourceError) as raised:
        list(SqlSource(config).read())

    message = str(raised.value)
    assert "OperationalError" in message
    assert "127.0.0.1" in message
    assert "hunter2-secret" not in message
    assert "hunter2-secret" not in repr(raised.value.__cause__)


def test_a_malformed_url_fails_the_read_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a whole URL comes from the environment (a password in the TOML is refused)
    monkeypatch.setenv("CATALOG_DB_URL", "postgresql://shop:hunter2-secret@db:notaport/x")
    config = SqlSourceConfig(kind="sql", url_env="CATALOG_DB_URL", table="products")

    with pytest.raises(SourceError, match="not a valid SQLAlchemy URL") as raised:
        list(SqlSource(config).read())

    assert "hunter2-secret" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_describe_hides_the_injected_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_DB_PASSWORD", "hunter2-secret")
    config = SqlSourceConfig(
        kind="sql",
        url="postgresql+psycopg://shop@db.internal/catalog",
        password_env="CATALOG_DB_PASSWORD",
        query="SELECT 1",
    )

    described = SqlSource(config).describe()

    assert "hunter2-secret" not in described
    assert "shop:***@db.internal/catalog" in described


# --- PostgreSQL and MariaDB only -------------------------------------------------------


@pytest.mark.postgres
def test_a_statement_past_the_timeout_fails_the_read_on_postgresql(pg_url: str) -> None:
    source = sql_source(pg_url, query="SELECT pg_sleep(5)", statement_timeout_s=0.5)

    with pytest.raises(SourceError, match=r"statement timeout exceeded.*0\.5 s"):
        list(source.read())


@pytest.mark.mariadb
def test_a_statement_past_the_timeout_fails_the_read_on_mariadb(mariadb_url: str) -> None:
    source = sql_source(mariadb_url, query="SELECT SLEEP(5) AS slept", statement_timeout_s=0.5)

    with pytest.raises(SourceError, match="statement timeout exceeded"):
        list(source.read())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


BIG_TABLE_FILLS = {
    "postgresql": "INSERT INTO big SELECT g, repeat('x', 800) || g FROM generate_series(1, {n}) g",
    "mysql": "INSERT INTO big SELECT seq, CONCAT(REPEAT('x', 800), seq) FROM seq_1_to_{n}",
}


@pytest.mark.parametrize(
    "fixture",
    [
        pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb_url", id="mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_big_read_streams_in_bounded_memory(fixture: str, request: pytest.FixtureRequest) -> None:
    url: str = request.getfixturevalue(fixture)
    rows = 100_000
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE big (id integer PRIMARY KEY, body text)")
        conn.exec_driver_sql(BIG_TABLE_FILLS[engine.dialect.name].format(n=rows))
    engine.dispose()
    source = sql_source(url, query="SELECT id, body FROM big ORDER BY id", fetch_size=1000)
    baseline = _rss_bytes()
    peak = baseline
    count = 0

    for record in source.read():
        count += 1
        if count % 5000 == 0:
            peak = max(peak, _rss_bytes())
            assert record["id"] == count

    assert count == rows
    # Fetched whole, these rows grow the process by about 95 MB; streamed, by about 2.
    assert peak - baseline < 30 * 2**20, "the rows must not be held all at once"


@pytest.mark.postgres
def test_no_connection_outlives_a_read_finished_or_abandoned(pg_url: str) -> None:
    loaded_url = load_catalog(pg_url)
    list(sql_source(loaded_url).read())
    reading = sql_source(loaded_url, fetch_size=2).read()
    next(reading)
    reading.close()  # type: ignore[attr-defined]

    engine = sa.create_engine(loaded_url)
    with engine.connect() as conn:
        others: int = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar_one()
    engine.dispose()
    assert others == 0


# --- Values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (decimal.Decimal("19.90"), 19.9),
        (decimal.Decimal("20.00"), 20.0),
        (decimal.Decimal("42"), 42),
        (decimal.Decimal("1E+3"), 1000),
        (decimal.Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
        (decimal.Decimal("NaN"), None),
        (float("inf"), None),
        (dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC), "2024-05-06T07:08:09+00:00"),
        (dt.date(2024, 5, 6), "2024-05-06"),
        (dt.time(7, 8), "07:08:00"),
        (dt.timedelta(minutes=90), 5400.0),
        (b"\x00\xffA", "00ff41"),
        (memoryview(b"\x01"), "01"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ({"a": [decimal.Decimal("1.5"), None]}, {"a": [1.5, None]}),
        (True, True),
    ],
)
def test_database_values_become_json_friendly_ones(value: Any, expected: Any) -> None:
    converted = plain_value(value)

    assert converted == expected
    assert type(converted) is type(expected)
    if isinstance(converted, float):
        assert math.isfinite(converted)


# --- Never committed; completeness and the second look ----------------------------------


def test_a_large_object_made_by_the_query_is_rolled_back_on_postgresql(pg_url: str) -> None:
    load_catalog(pg_url)

    def large_objects() -> int:
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            count = conn.exec_driver_sql("SELECT count(*) FROM pg_largeobject_metadata").scalar()
        engine.dispose()
        return int(count or 0)

    before = large_objects()
    records = list(sql_source(pg_url, query="SELECT id, lo_create(0) AS lo FROM products").read())

    assert len(records) == len(generated_catalog())
    assert large_objects() == before


@pytest.mark.parametrize("abandoned", [False, True], ids=["finished", "abandoned"])
def test_every_database_read_ends_in_a_rollback_never_a_commit(
    loaded_url: str, abandoned: bool
) -> None:
    ends: list[str] = []

    def committed(conn: sa.Connection) -> None:
        ends.append("commit")

    def rolled_back(conn: sa.Connection) -> None:
        ends.append("rollback")

    sa.event.listen(sa.engine.Engine, "commit", committed)
    sa.event.listen(sa.engine.Engine, "rollback", rolled_back)
    try:
        reading = sql_source(loaded_url).read()
        if abandoned:
            next(reading)
            reading.close()
        else:
            list(reading)
        sql_source(loaded_url).confirm_absent(["sku-0001"])
    finally:
        sa.event.remove(sa.engine.Engine, "commit", committed)
        sa.event.remove(sa.engine.Engine, "rollback", rolled_back)

    assert "commit" not in ends
    assert "rollback" in ends


def test_a_sql_source_can_prove_a_read_complete(sqlite_url: str) -> None:
    assert sql_source(sqlite_url).can_prove_complete is True


def test_the_second_look_confirms_only_the_keys_the_query_no_longer_returns(
    loaded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("syncd.sources.sql.CONFIRM_BATCH", 2)
    reader = sql_source(loaded_url)
    list(reader.read())

    gone = reader.confirm_absent(["sku-0003", "sku-9999", "sku-0025", "nope", "sku-0001"])

    assert gone == {"sku-9999", "nope"}


def test_the_second_look_applies_where_so_a_row_filtered_out_is_gone(loaded_url: str) -> None:
    reader = sql_source(loaded_url, where={"active": True})
    list(reader.read())

    assert reader.confirm_absent(["sku-0003", "sku-0004"]) == {"sku-0003"}  # 3 is inactive


def test_the_second_look_compares_integer_keys_as_text(loaded_url: str) -> None:
    reader = sql_source(loaded_url, query="SELECT stock AS pk, name FROM products", key="pk")
    list(reader.read())

    assert reader.confirm_absent(["-43", "12345"]) == {"12345"}  # stock of sku 1 is -43


def test_the_second_look_is_refused_for_keys_that_may_print_differently(
    loaded_url: str,
) -> None:
    reader = sql_source(loaded_url, key="price")
    list(reader.read())
    unread = sql_source(loaded_url)

    assert reader.confirm_absent(["3.01"]) is None
    assert unread.confirm_absent(["sku-0001"]) is None
    assert sql_source(loaded_url, key="meta.id").confirm_absent(["x"]) is None
