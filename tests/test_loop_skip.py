"""Skipping unchanged source rows by their raw fingerprint (``source.skip_unchanged_rows``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd import reconcile
from syncd.config import parse_config
from syncd.mapping import Encoded, Mapper
from syncd.model import Document, Record
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.sandbox.catalog import FakeCatalogApi
from syncd.stages import opening
from tests.support import (
    KEY,
    Harness,
    acknowledged,
    catalog,
    expected_userflux,
    expected_vambe,
    load_table,
    userflux_target,
    vambe_target,
)


def passthrough(record: Record, document: dict[str, Any]) -> dict[str, Any]:
    """A mapping callable that changes nothing (it still turns skipping off)."""
    return document


class _Counting:
    def __init__(self, mapper: Mapper, calls: dict[str, int], name: str) -> None:
        self._mapper, self._calls, self._name = mapper, calls, name
        self.well_formed = mapper.well_formed

    def map(self, record: Record) -> Document:
        self._calls[self._name] = self._calls.get(self._name, 0) + 1
        return self._mapper.map(record)

    def encode(self, record: Record) -> Encoded:
        self._calls[self._name] = self._calls.get(self._name, 0) + 1
        return self._mapper.encode(record)


@pytest.fixture
def maps(monkeypatch) -> dict[str, int]:
    """Records mapped per target, counted through every mapper the runs build."""
    calls: dict[str, int] = {}
    build = opening.build_mapper

    def counting(config: Any, key: str) -> Mapper:
        return _Counting(build(config, key), calls, config.name)

    monkeypatch.setattr(opening, "build_mapper", counting)
    return calls


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUserflux, FakeVambe, str]]:
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        yield userflux, vambe, vambe.add_block()


def harness(tmp_path: Path, fakes, **source: Any) -> Harness:
    userflux, vambe, block = fakes
    return Harness(
        tmp_path, [userflux_target(userflux.url), vambe_target(vambe.url, block)], **source
    )


def writes(fakes) -> int:
    userflux, vambe, _ = fakes
    return userflux.request_count() - userflux.request_count("GET") + vambe.request_count("POST")


def reset(fakes, maps: dict[str, int]) -> None:
    userflux, vambe, _ = fakes
    userflux.reset_requests()
    vambe.reset_requests()
    maps.clear()


def test_a_second_run_over_an_unchanged_file_parses_maps_and_sends_nothing(
    tmp_path, fakes, maps
) -> None:
    h = harness(tmp_path, fakes)
    h.write(catalog(30))
    assert h.sync().ok
    assert maps == {"uf": 30, "vb": 30}
    reset(fakes, maps)

    report = h.sync()

    assert report.ok
    assert maps == {}
    assert writes(fakes) == 0
    assert [t.unchanged for t in report.targets] == [30, 30]
    assert [t.deleted for t in report.targets] == [0, 0]
    assert len(acknowledged(h.store, "uf")) == 30
    h.close()


def test_the_fingerprint_a_run_records_is_row_fingerprint_of_the_stripped_line(
    tmp_path, fakes, maps
) -> None:
    h = harness(tmp_path, fakes)
    h.write(catalog(5))
    assert h.sync().ok
    lines = {json.loads(line)["sku"]: line for line in h.path.read_bytes().splitlines()}

    for target in h.config.targets:
        key = reconcile.mapping_fingerprint(h.config.source, target)
        assert key is not None
        with h.store.engine.connect() as conn:
            stored = dict(
                conn.exec_driver_sql(
                    "SELECT key, source_hash FROM products WHERE target = ?", (target.name,)
                ).all()
            )
        assert stored == {
            sku: reconcile.row_fingerprint(reconcile.row_digest(line.strip()), key)
            for sku, line in lines.items()
        }
    h.close()


def test_an_edited_line_is_remapped_and_pushed_and_a_removed_line_deletes(
    tmp_path, fakes, maps
) -> None:
    h = harness(tmp_path, fakes)
    records = catalog(20)
    h.write(records)
    assert h.sync().ok
    reset(fakes, maps)
    records[3] = dict(records[3], price="99.00")
    removed = records.pop(7)
    h.write(records)

    report = h.sync()

    assert report.ok
    assert maps == {"uf": 1, "vb": 1}
    userflux, _, _ = fakes
    assert userflux.products[("product", records[3]["sku"])]["properties"]["price"] == 99.0
    assert ("product", removed["sku"]) not in userflux.products
    assert [(t.updated, t.deleted, t.unchanged) for t in report.targets] == [(1, 1, 18)] * 2
    h.close()


def test_a_line_repeated_verbatim_is_rejected_as_a_duplicate_and_deletes_nothing(
    tmp_path, fakes, maps
) -> None:
    h = harness(tmp_path, fakes)
    records = catalog(10)
    h.write(records)
    assert h.sync().ok
    reset(fakes, maps)
    h.write([*records, records[4]])

    report = h.sync()

    duplicate = records[4]["sku"]
    for target in ("uf", "vb"):
        reasons = {r.key: r.reason for r in h.store.open_rejections(target)}
        assert "duplicate key" in reasons[duplicate]
    assert [t.deleted for t in report.targets] == [0, 0]  # the source has it: kept
    assert writes(fakes) == 0
    h.close()


def test_a_changed_line_whose_key_a_skipped_line_also_has_is_a_duplicate(
    tmp_path, fakes, maps
) -> None:
    h = harness(tmp_path, fakes)
    records = catalog(10)
    h.write(records)
    assert h.sync().ok
    reset(fakes, maps)
    h.write([*records, dict(records[2], title="Impostor")])

    report = h.sync()

    duplicate = records[2]["sku"]
    reasons = {r.key: r.reason for r in h.store.open_rejections("uf")}
    assert "duplicate key" in reasons[duplicate]
    assert writes(fakes) == 0
    assert [t.deleted for t in report.targets] == [0, 0]  # the source has it: kept
    h.close()


def test_a_mapping_change_remaps_everything_and_pushes_only_what_changed(
    tmp_path, fakes, maps
) -> None:
    h = harness(tmp_path, fakes)
    h.write(catalog(12))
    assert h.sync().ok
    reset(fakes, maps)
    # a new property from a field only some records have: their payloads change
    properties = h.raw["targets"][0]["mapping"]["properties"]
    properties["hue"] = "color"
    h2 = Harness(tmp_path, h.raw["targets"], key="sku")
    h.close()

    report = h2.sync()

    assert report.ok
    assert maps == {"uf": 12}
    assert report.targets[0].updated == 12 and report.targets[1].unchanged == 12
    reset(fakes, maps)
    assert h2.sync().ok
    assert maps == {}
    h2.close()


def test_products_unchanged_by_a_mapping_change_are_skipped_from_the_next_run(
    tmp_path, fakes, maps
) -> None:
    h = harness(tmp_path, fakes)
    h.write(catalog(8))
    assert h.sync().ok
    targets = h.raw["targets"]
    # the fingerprint changes, no payload does: a property from a field no record has
    targets[0]["mapping"]["properties"]["hue"] = "no_such_field"
    h.close()
    h2 = Harness(tmp_path, targets, key="sku")
    reset(fakes, maps)

    report = h2.sync()

    assert maps == {"uf": 8}
    assert writes(fakes) == 0 and report.targets[0].unchanged == 8
    reset(fakes, maps)
    assert h2.sync().ok
    assert maps == {}
    h2.close()


def test_settings_of_how_requests_are_sent_keep_rows_skipped(tmp_path, fakes, maps) -> None:
    h = harness(tmp_path, fakes)
    h.write(catalog(8))
    assert h.sync().ok
    targets = h.raw["targets"]
    for target in targets:
        target.update(concurrency=1, rate_limit_per_s=5, timeout_s=9, rejection_backoff_s=60)
        target["guards"] = {"max_delete_fraction": 0.9}
        target["retry"] = {"max_attempts": 2}
    targets[1].update(batch_size=500, mirror_block=True)
    h.close()
    h2 = Harness(tmp_path, targets, key="sku")
    reset(fakes, maps)

    report = h2.sync()

    assert report.ok
    assert maps == {}
    assert writes(fakes) == 0 and [t.unchanged for t in report.targets] == [8, 8]
    h2.close()


def test_skip_unchanged_rows_false_maps_everything(tmp_path, fakes, maps) -> None:
    h = harness(tmp_path, fakes, skip_unchanged_rows=False)
    h.write(catalog(10))
    assert h.sync().ok
    reset(fakes, maps)

    report = h.sync()

    assert report.ok
    assert maps == {"uf": 10, "vb": 10}
    assert writes(fakes) == 0
    h.close()


def test_a_callable_mapping_turns_skipping_off_for_its_target(tmp_path, fakes, maps) -> None:
    userflux, vambe, block = fakes
    uf = userflux_target(userflux.url)
    uf["mapping"]["callable"] = "tests.test_loop_skip:passthrough"
    h = Harness(tmp_path, [uf, vambe_target(vambe.url, block)])
    h.write(catalog(10))
    assert h.sync().ok
    reset(fakes, maps)

    assert h.sync().ok

    assert maps == {"uf": 10}
    assert writes(fakes) == 0
    h.close()


def test_unacknowledged_and_rejected_rows_are_remapped_every_run(tmp_path, fakes, maps) -> None:
    h = harness(tmp_path, fakes)
    records = catalog(6)
    records[1]["price"] = "about ten"
    h.write(records)
    h.sync()
    # a write in flight when the process died: its fingerprint is forgotten
    h.store.mark_unacknowledged("uf", [(records[2]["sku"], b"{}")])
    reset(fakes, maps)

    report = h.sync()

    assert maps == {"uf": 2, "vb": 1}
    assert report.targets[0].rejected == 1
    userflux, _, _ = fakes
    assert userflux.request_count() == 1
    h.close()


def test_plan_writes_no_fingerprint_and_changes_nothing(tmp_path, fakes, maps) -> None:
    h = harness(tmp_path, fakes)
    records = catalog(5)
    h.write(records)
    assert h.sync().ok
    records[0] = dict(records[0], title="Renamed")
    h.write(records)
    reset(fakes, maps)

    plans = h.plan()

    assert maps == {"uf": 1, "vb": 1}
    assert [p.unchanged for p in plans] == [4, 4]
    assert writes(fakes) == 0
    assert h.store.get("uf", records[0]["sku"]) is not None
    lines = h.path.read_text().splitlines()
    assert json.loads(lines[0])["title"] == "Renamed"
    h.close()


# -- sources without raw rows: each record's JSON is its raw row ------------------------


def sql_harness(tmp_path: Path, fakes, url: str) -> Harness:
    h = harness(tmp_path, fakes)
    h.raw["source"] = {
        "kind": "sql",
        "url": url,
        "query": "SELECT * FROM products ORDER BY sku",
        "key": "sku",
    }
    h.config = parse_config(h.raw, environ=h.environ)
    return h


@pytest.mark.parametrize("database", ["pg_url", "mariadb_url", "sqlite_url"])
def test_unchanged_sql_rows_are_skipped_and_an_edited_row_is_remapped(
    tmp_path, fakes, maps, database, request
) -> None:
    url = request.getfixturevalue(database)
    records = catalog(20)
    load_table(url, records)
    h = sql_harness(tmp_path, fakes, url)
    assert h.sync().ok
    assert maps == {"uf": 20, "vb": 20}
    reset(fakes, maps)

    report = h.sync()

    assert report.ok
    assert maps == {}
    assert writes(fakes) == 0
    assert [t.unchanged for t in report.targets] == [20, 20]

    records[3] = dict(records[3], price="99.00")
    removed = records.pop(7)
    load_table(url, records)
    reset(fakes, maps)

    report = h.sync()

    assert report.ok
    assert maps == {"uf": 1, "vb": 1}
    assert [(t.updated, t.deleted, t.unchanged) for t in report.targets] == [(1, 1, 18)] * 2
    userflux, vambe, block = fakes
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    assert ("product", removed["sku"]) not in userflux.products
    h.close()


@pytest.mark.parametrize("database", ["pg_url", "mariadb_url", "sqlite_url"])
def test_a_duplicate_sql_row_is_rejected_even_when_both_copies_are_known(
    tmp_path, fakes, maps, database, request
) -> None:
    """The same row twice (a join gone wrong) is a duplicate key, skipped or not."""
    url = request.getfixturevalue(database)
    records = catalog(10)
    load_table(url, records)
    h = sql_harness(tmp_path, fakes, url)
    assert h.sync().ok
    reset(fakes, maps)
    h.raw["source"]["query"] = (
        "SELECT * FROM products UNION ALL SELECT * FROM products WHERE sku = "
        f"'{records[4]['sku']}' ORDER BY sku"
    )
    h.config = parse_config(h.raw, environ=h.environ)

    report = h.sync()

    reasons = {r.key: r.reason for r in h.store.open_rejections("uf")}
    assert "duplicate key" in reasons[records[4]["sku"]]
    assert [t.deleted for t in report.targets] == [0, 0]  # the source has it: kept
    assert writes(fakes) == 0
    h.close()


def test_unchanged_http_records_are_skipped(tmp_path, fakes, maps) -> None:
    records = catalog(25)
    with FakeCatalogApi(records, style="page") as api:
        h = harness(tmp_path, fakes)
        h.raw["source"] = {
            "kind": "http",
            "url": api.url,
            "key": "sku",
            "records_path": "products",
            "pagination": {"style": "page", "page_size": 10},
        }
        h.config = parse_config(h.raw, environ=h.environ)
        assert h.sync().ok
        reset(fakes, maps)
        assert h.sync().ok
        assert maps == {}
        assert writes(fakes) == 0
        records[12]["title"] = "Renamed"

        report = h.sync()

    assert report.ok
    assert maps == {"uf": 1, "vb": 1}
    assert [t.updated for t in report.targets] == [1, 1]
    assert fakes[0].products == expected_userflux(records)
    h.close()


class Listing:
    """A source of the Python API whose records hold values JSON can't encode."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def read(self) -> Iterator[Record]:
        for record in self.records:
            yield dict(record, price=Decimal(record["price"]))

    def describe(self) -> str:
        return "a listing"


def test_a_record_that_json_cannot_encode_is_mapped_every_run(tmp_path, fakes, maps) -> None:
    """No raw bytes can stand for it, so it is never skipped: mapped, found unchanged."""
    records = catalog(6)
    h = harness(tmp_path, fakes)
    listing = Listing(records)

    def sync() -> Any:
        return reconcile.Reconciler(h.config, h.store, environ=h.environ, source=listing).sync()

    assert sync().ok
    reset(fakes, maps)

    report = sync()

    assert report.ok
    assert maps == {"uf": 6, "vb": 6}
    assert writes(fakes) == 0
    assert [t.unchanged for t in report.targets] == [6, 6]
    h.close()
