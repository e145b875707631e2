"""The whole loop from real sources: SQL databases and a paginated HTTP API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import parse_config
from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.sandbox.catalog import FakeCatalogApi
from syncd.state import open_store
from tests.support import (
    ENV,
    KEY,
    catalog,
    expected_userflux,
    expected_vambe,
    load_table,
    userflux_target,
    vambe_target,
)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUserflux, FakeVambe, str]]:
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        yield userflux, vambe, vambe.add_block()


def sync_from_sql(url: str, tmp_path: Path, fakes, name: str) -> tuple[list, Any]:
    userflux, vambe, block = fakes
    raw = {
        "source": {
            "kind": "sql",
            "url": url,
            "query": "SELECT * FROM products ORDER BY sku",
            "key": "sku",
        },
        "state": {"url": f"sqlite:///{tmp_path / f'{name}.db'}"},
        "targets": [userflux_target(userflux.url), vambe_target(vambe.url, block)],
    }
    config = parse_config(raw, environ=ENV)
    store = open_store(config.state.url)
    try:
        reconciler = Reconciler(config, store, environ=ENV)
        plans = [p.summary(sample=3) for p in reconciler.plan(RunOptions())]
        report = reconciler.sync(RunOptions())
    finally:
        store.close()
    return plans, report


def test_the_same_catalog_in_postgresql_mariadb_and_sqlite_gives_identical_plans_and_targets(
    tmp_path: Path, pg_url: str, mariadb_url: str, sqlite_url: str
):
    records = catalog(60)
    for r in records:
        r["price"] = r["price"]  # a NUMERIC(10, 2) column: "10.50" in, Decimal out
    outcomes = []
    for name, url in (("pg", pg_url), ("maria", mariadb_url), ("sqlite", sqlite_url)):
        load_table(url, records)
        with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
            block = vambe.add_block(block_id="11111111-2222-3333-4444-555555555555")
            plans, report = sync_from_sql(url, tmp_path, (userflux, vambe, block), name)
            assert report.ok, [t.error for t in report.targets]
            outcomes.append((plans, userflux.products, vambe.block_products(block)))
    pg, maria, lite = outcomes
    assert pg == maria == lite
    assert pg[1] == expected_userflux(records)
    assert pg[2] == expected_vambe(records)


def run_http(tmp_path: Path, api: FakeCatalogApi, fakes) -> Any:
    userflux, vambe, block = fakes
    raw = {
        "source": {
            "kind": "http",
            "url": api.url,
            "records_path": "products",
            "key": "sku",
            "max_attempts": 1,
            "pagination": {"style": "page", "page_size": 10},
        },
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "targets": [
            userflux_target(userflux.url, guards={"max_delete_fraction": 1.0}),
            vambe_target(vambe.url, block, guards={"max_delete_fraction": 1.0}),
        ],
    }
    config = parse_config(raw, environ=ENV)
    store = open_store(config.state.url)
    try:
        return Reconciler(config, store, environ=ENV).sync(RunOptions())
    finally:
        store.close()


def test_an_http_source_failing_on_page_3_of_5_deletes_nothing(tmp_path: Path, fakes):
    userflux, vambe, block = fakes
    records = catalog(50)
    with FakeCatalogApi(records, style="page") as api:
        assert run_http(tmp_path, api, fakes).ok
        assert len(userflux.products) == 50
        userflux.reset_requests()
        vambe.reset_requests()
        records[0]["price"] = "1.00"  # page 1: still pushed
        api.fail_on_page(3, status=500, times=None)

        report = run_http(tmp_path, api, fakes)

    assert not report.source_complete and "page 3" in (report.source_error or "")
    assert userflux.request_count("DELETE") == 0
    assert [r for r in vambe.requests if "/delete/" in r.path] == []
    assert len(userflux.products) == 50 and len(vambe.block_products(block)) == 50
    assert userflux.products[("product", records[0]["sku"])]["properties"]["price"] == 1.0
    assert all(t.outcome == "failed" for t in report.targets)
    assert report.exit_code == 1


def test_an_http_source_walks_every_page_and_converges(tmp_path: Path, fakes):
    userflux, vambe, block = fakes
    records = catalog(35)
    with FakeCatalogApi(records, style="page") as api:
        report = run_http(tmp_path, api, fakes)
    assert report.ok and report.source_count == 35
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
