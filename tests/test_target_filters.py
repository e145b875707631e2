"""Per-target filters (``[targets.where]``): a record left out of one target is absent there
(deleted through the guards, never rejected) and still sent to the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import parse_config
from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.state import open_store
from tests.support import (
    ENV,
    KEY,
    Harness,
    catalog,
    expected_userflux,
    expected_vambe,
    load_table,
    userflux_target,
    vambe_target,
)

PRICED = {"price": {"gt": 0}}


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUserflux, FakeVambe, str]]:
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        yield userflux, vambe, vambe.add_block()


def with_free_parts(records: list[dict[str, Any]], every: int = 4) -> list[dict[str, Any]]:
    """Every ``every``-th product turned into a zero-price part."""
    return [dict(r, price="0.00") if i % every == 0 else r for i, r in enumerate(records)]


def priced(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if float(r["price"]) > 0]


def two_targets(tmp_path: Path, fakes, vambe_where: Any = PRICED, **source: Any) -> Harness:
    userflux, vambe, block = fakes
    guards = {"max_delete_fraction": 0.5}
    return Harness(
        tmp_path,
        [
            userflux_target(userflux.url, guards=guards),
            vambe_target(vambe.url, block, where=vambe_where, guards=guards),
        ],
        **source,
    )


def by_target(report) -> dict[str, Any]:
    return {t.target: t for t in report.targets}


@pytest.mark.parametrize("skip_unchanged_rows", [True, False])
def test_zero_price_parts_go_to_userflux_but_not_to_vambe(
    tmp_path: Path, fakes, skip_unchanged_rows: bool
):
    userflux, vambe, block = fakes
    records = with_free_parts(catalog(20))
    h = two_targets(tmp_path, fakes, skip_unchanged_rows=skip_unchanged_rows)
    h.write(records)

    report = h.sync()

    assert report.ok
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(priced(records))
    targets = by_target(report)
    assert targets["vb"].rejected == 0  # left out, not refused
    assert targets["vb"].created == len(priced(records)) == 15
    assert targets["uf"].created == 20
    h.close()


def test_a_product_that_stops_and_starts_matching_is_deleted_and_created_on_that_target_only(
    tmp_path: Path, fakes
):
    userflux, vambe, block = fakes
    records = catalog(20)
    h = two_targets(tmp_path, fakes)
    h.write(records)
    assert h.sync().ok
    assert vambe.block_products(block) == expected_vambe(records)

    # P00003 becomes a free part: gone from Vambe, updated on UserFlux
    records[2] = dict(records[2], price="0")
    h.write(records)
    userflux.reset_requests()
    report = h.sync()

    targets = by_target(report)
    assert report.ok
    assert (targets["vb"].deleted, targets["vb"].created, targets["vb"].rejected) == (1, 0, 0)
    assert (targets["uf"].deleted, targets["uf"].updated) == (0, 1)
    assert "P00003" not in vambe.block_products(block)
    assert vambe.block_products(block) == expected_vambe(priced(records))

    # priced again: back on Vambe, one more update on UserFlux
    records[2] = dict(records[2], price="5.50")
    h.write(records)
    report = h.sync()

    targets = by_target(report)
    assert (targets["vb"].created, targets["vb"].deleted) == (1, 0)
    assert (targets["uf"].updated, targets["uf"].deleted) == (1, 0)
    assert vambe.block_products(block) == expected_vambe(records)
    h.close()


def test_a_changed_target_filter_re_maps_rows_known_unchanged(tmp_path: Path, fakes):
    _userflux, vambe, block = fakes
    records = catalog(20)  # prices 11.50 .. 30.50
    h = two_targets(tmp_path, fakes)
    h.write(records)
    assert h.sync().ok

    h.raw["targets"][1]["where"] = {"price": {"lt": 25}}
    h.config = parse_config(h.raw, environ=h.environ)
    report = h.sync()

    targets = by_target(report)
    cheap = [r for r in records if float(r["price"]) < 25]
    assert 0 < len(cheap) < len(records)
    assert targets["vb"].deleted == len(records) - len(cheap)
    assert targets["uf"].deleted == targets["uf"].updated == targets["uf"].created == 0
    assert vambe.block_products(block) == expected_vambe(cheap)
    h.close()


def test_a_filter_leaving_out_too_much_is_held_by_the_delete_guard(tmp_path: Path, fakes):
    _userflux, vambe, block = fakes
    records = catalog(20)
    h = two_targets(tmp_path, fakes)
    h.write(records)
    assert h.sync().ok

    h.raw["targets"][1]["where"] = {"sku": {"regex": "^P0000[1-3]$"}}
    h.config = parse_config(h.raw, environ=h.environ)
    report = h.sync()

    targets = by_target(report)
    assert targets["vb"].deleted == 0
    assert targets["vb"].held == 17
    assert vambe.block_products(block) == expected_vambe(records)
    assert targets["uf"].ok
    h.close()


def test_a_row_left_out_of_one_target_by_a_sql_source_is_deleted_without_a_second_look(
    tmp_path: Path, fakes, sqlite_url: str
):
    """The second look finds the row in the source (it is there, just filtered): the read
    itself saw it left out, so the delete needs no more proof."""
    userflux, vambe, block = fakes
    records = catalog(10)
    load_table(sqlite_url, records)
    raw = {
        "source": {"kind": "sql", "url": sqlite_url, "table": "products", "key": "sku"},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "targets": [
            userflux_target(userflux.url),
            vambe_target(vambe.url, block, where={"stock": {"ne": 0}}),
        ],
    }
    config = parse_config(raw, environ=ENV)
    store = open_store(config.state.url)
    try:
        first = Reconciler(config, store, environ=ENV).sync(RunOptions())
        assert first.ok
        stocked = [r for r in records if r["stock"] != 0]
        assert vambe.block_products(block) == expected_vambe(stocked)

        load_table(sqlite_url, [dict(r, stock=0) if r["sku"] == "P00002" else r for r in records])
        second = by_target(Reconciler(config, store, environ=ENV).sync(RunOptions()))
    finally:
        store.close()

    assert second["vb"].deleted == 1
    assert "P00002" not in vambe.block_products(block)
    assert second["uf"].deleted == 0


def test_a_target_filter_that_can_not_read_a_number_rejects_the_product_there_by_its_key(
    tmp_path: Path, fakes
):
    userflux, vambe, block = fakes
    records = [dict(r, weight="1.5") for r in catalog(10)]
    records[2] = dict(records[2], weight="1.5x")  # a typo: not light, not heavy
    h = two_targets(tmp_path, fakes, vambe_where={"weight": {"lt": 20}})
    h.write(records)

    report = h.sync()

    targets = by_target(report)
    assert (targets["vb"].rejected, targets["vb"].deleted, targets["uf"].rejected) == (1, 0, 0)
    (rejection,) = h.store.open_rejections("vb")
    assert rejection.key == "P00003"
    assert "targets[1].where: weight: not a number: '1.5x'" in rejection.reason
    assert "P00003" not in vambe.block_products(block)
    assert ("product", "P00003") in userflux.products  # the other target still gets it
    h.close()


@pytest.mark.parametrize("skip_unchanged_rows", [True, False])
def test_a_source_filter_that_can_not_read_a_number_makes_the_read_incomplete_not_a_delete(
    tmp_path: Path, fakes, skip_unchanged_rows: bool
):
    _userflux, vambe, block = fakes
    records = catalog(10)
    h = two_targets(
        tmp_path, fakes, where=PRICED, vambe_where={}, skip_unchanged_rows=skip_unchanged_rows
    )
    h.write(records)
    assert h.sync().ok

    records[2] = dict(records[2], price="59.9x")
    h.write(records)
    report = h.sync()

    assert not report.source_complete
    assert "product 'P00003'" in str(report)
    assert "price: not a number: '59.9x'" in str(report)
    assert all(t.deleted == 0 for t in report.targets)
    assert "P00003" in vambe.block_products(block)
    h.close()


def test_a_plan_says_which_deletes_a_target_filter_caused(tmp_path: Path, fakes):
    records = catalog(20)
    h = two_targets(tmp_path, fakes)
    h.write(records)
    assert h.sync().ok

    records[2] = dict(records[2], price="0")
    h.write(records)
    plans = {plan.target: plan for plan in h.plan()}

    assert any(
        "1 deletes are products left out by targets[1].where (absent from this target)" in note
        and "'P00003'" in note
        for note in plans["vb"].notes
    )
    assert not any("left out" in note for note in plans["uf"].notes)
    h.close()


def test_a_resend_of_a_product_a_target_filter_leaves_out_says_so(tmp_path: Path, fakes):
    records = with_free_parts(catalog(8))  # P00001 and P00005 are free parts
    h = two_targets(tmp_path, fakes)
    h.write(records)
    assert h.sync().ok

    report = h.sync(keys=("P00001",))

    notes = {t.target: t.plan.get("notes", ()) for t in report.targets}
    assert any(
        "named products left out by targets[1].where: absent from this target" in note
        for note in notes["vb"]
    )
    assert not any("not in the source" in note for note in notes["vb"])
    assert by_target(report)["uf"].updated + by_target(report)["uf"].refreshed == 1
    h.close()
