"""The SQL source's targeted read by key: an integer key column compared as integers (its
index serves), a text key the way the full read normalises keys, so the targeted read
and the nightly run agree on every key."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import SqlSourceConfig
from syncd.feeds.targeted import read_targeted
from syncd.sources.sql import SqlSource
from syncd.values import key_text


def _table(url: str, key_type: str, keys: list[Any]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS items"))
        conn.execute(sa.text(f"CREATE TABLE items (id {key_type} PRIMARY KEY, title varchar(40))"))
        for key in keys:
            conn.execute(
                sa.text("INSERT INTO items VALUES (:id, :title)"), {"id": key, "title": f"t{key}"}
            )
    engine.dispose()


def _source(url: str) -> SqlSource:
    return SqlSource(SqlSourceConfig(kind="sql", url=url, table="items", key="id"))


def _full_read_keys(source: SqlSource) -> set[str]:
    return {key_text(record["id"]) for record in source.read()}


@pytest.mark.parametrize("url_fixture", ["pg_url", "mariadb_url"])
def test_an_integer_key_is_compared_as_an_integer(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(url_fixture))
    _table(url, "bigint", [1, 7, 42, -3, 2**62])
    source = _source(url)
    read = source.read_keys(["7", " 42 ", "-3", str(2**62), "007", "7.0", "abc", "99", "1e3"])
    assert source._integer_key is True
    assert sorted(row["id"] for row in read.rows) == [-3, 7, 42, 2**62]  # type: ignore[index]
    # the same keys as the full read names them
    assert {key_text(row["id"]) for row in read.rows} <= _full_read_keys(source)  # type: ignore[index]


def test_the_feed_finds_integer_keys_as_the_full_read_names_them_and_only_those(
    pg_url: str,
) -> None:
    from syncd.config import parse_config
    from tests.support import ENV, userflux_target

    _table(pg_url, "integer", [1, 7, 42])
    raw = {
        "source": {"kind": "sql", "url": pg_url, "query": "SELECT * FROM items", "key": "id"},
        "targets": [userflux_target("http://127.0.0.1:9")],
    }
    config = parse_config(raw, environ=ENV)
    read = read_targeted(config, ["7", "42 ", "8", "9" * 30])
    assert read.found == {"7", "42"}
    assert read.gone == {"8", "9" * 30}  # out of any integer column's range: not there
    assert not read.unreachable


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_url", "mariadb_url"])
def test_a_text_key_is_found_as_the_full_read_normalises_it(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(url_fixture))
    decomposed = unicodedata.normalize("NFD", "café-1")
    stored = [" A1 ", "B2\t", "\ufeffC3", decomposed, "007", "plain"]
    _table(url, "varchar(40)", stored)
    source = _source(url)
    full = _full_read_keys(source)
    assert full == {"A1", "B2", "C3", "café-1", "007", "plain"}
    from syncd.config import parse_config
    from tests.support import ENV, userflux_target

    raw = {
        "source": {"kind": "sql", "url": url, "query": "SELECT * FROM items", "key": "id"},
        "targets": [userflux_target("http://127.0.0.1:9")],
    }
    config = parse_config(raw, environ=ENV)
    asked = ["A1", " B2", "C3", "café-1", decomposed, "007", "7", "gone"]
    read = read_targeted(config, asked)
    assert source._integer_key in (None, False)
    # every key the full read has is found, never taken for gone (which would delete it)
    assert read.found == full - {"plain"}
    assert read.gone == {"7", "gone"}
