"""A run reading a SQL source by fingerprint sees one state of the database, whatever is
committed to the source table between the fingerprint pass and the fetch of whole rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.sources import sql_fingerprints
from tests.support import catalog, expected_userflux, expected_vambe, load_table
from tests.test_loop_skip import fakes, maps, reset, sql_harness, writes

__all__ = ["fakes", "maps"]  # fixtures

DATABASES = [
    pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb_url", id="mariadb", marks=pytest.mark.mariadb),
]


def commit(url: str, *statements: str) -> None:
    """Run ``statements`` on a connection of their own and commit them."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.fixture
def writes_before_the_first_fetch(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Statements (url first) committed the first time a run fetches whole rows: after
    the fingerprint pass has read its first block, before any row is fetched whole."""
    pending: list[tuple[str, ...]] = []
    original = sql_fingerprints.SqlFingerprintBlock.records

    def records(self: Any, indexes: Any) -> Iterator[dict[str, Any]]:
        while pending:
            url, *statements = pending.pop()
            commit(url, *statements)
        return original(self, indexes)

    monkeypatch.setattr(sql_fingerprints.SqlFingerprintBlock, "records", records)
    return pending


@pytest.mark.parametrize("database", DATABASES)
def test_writes_committed_during_a_read_are_not_seen_by_it_and_are_by_the_next(
    tmp_path, fakes, maps, database, request, writes_before_the_first_fetch
) -> None:
    url = request.getfixturevalue(database)
    records = catalog(20)
    load_table(url, records)
    h = sql_harness(tmp_path, fakes, url)
    assert h.sync().ok
    edited = dict(records[3], price="99.50")
    load_table(url, [edited if r is records[3] else r for r in records])
    snapshot = [edited if r is records[3] else r for r in records]  # what the run must see
    deleted, retitled = records[5]["sku"], records[8]["sku"]
    writes_before_the_first_fetch.append(
        (
            url,
            # a newer version of the row the run fetches whole
            f"UPDATE products SET price = 55.50 WHERE sku = '{edited['sku']}'",
            # an unchanged (skipped) product deleted, another changed, one created
            f"DELETE FROM products WHERE sku = '{deleted}'",
            f"UPDATE products SET title = 'Later' WHERE sku = '{retitled}'",
            "INSERT INTO products (sku, title, price, color, body, stock) "
            "VALUES ('NEW-1', 'New', 10.50, 'red', 'b', 1)",
        )
    )
    reset(fakes, maps)

    report = h.sync()

    assert writes_before_the_first_fetch == []  # the writes were committed mid-read
    assert report.ok
    assert maps == {"uf": 1, "vb": 1}  # only the row edited before the read
    assert [(t.created, t.updated, t.deleted, t.unchanged) for t in report.targets] == [
        (0, 1, 0, 19)
    ] * 2
    userflux, vambe, block = fakes
    assert userflux.products == expected_userflux(snapshot)  # 99.50, not 55.50
    assert vambe.block_products(block) == expected_vambe(snapshot)

    reset(fakes, maps)
    report = h.sync()  # the next run sees what was committed

    now = [r for r in snapshot if r["sku"] != deleted]
    now = [
        dict(r, price="55.50")
        if r["sku"] == edited["sku"]
        else dict(r, title="Later")
        if r["sku"] == retitled
        else r
        for r in now
    ]
    now.append(
        {"sku": "NEW-1", "title": "New", "price": "10.50", "color": "red", "body": "b", "stock": 1}
    )
    assert report.ok
    assert [(t.created, t.updated, t.deleted) for t in report.targets] == [(1, 2, 1)] * 2
    assert userflux.products == expected_userflux(now)
    assert vambe.block_products(block) == expected_vambe(now)
    assert writes(fakes) > 0
    h.close()
