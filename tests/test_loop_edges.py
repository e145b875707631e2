"""Trust at the edges, whole loop against the fakes: deletes need proof, a product that
can't be pushed any more is withdrawn (or kept and reported stale), a write in doubt is
re-asserted once its window has passed, and a run rejecting most records is not ok."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.config import parse_config
from syncd.errors import SourceError
from syncd.model import Record
from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe, Fault
from syncd.sandbox.catalog import FakeCatalogApi
from tests.support import (
    ENV,
    KEY,
    Harness,
    acknowledged,
    catalog,
    expected_userflux,
    expected_vambe,
    userflux_target,
    vambe_target,
)

BLOCK = "5fdb9ebd-ac9b-45be-ba44-d29f44877b4f"


@pytest.fixture
def vambe() -> Iterator[FakeVambe]:
    with FakeVambe(api_key=KEY) as server:
        server.add_block(BLOCK, name="catalog")
        yield server


def targets(userflux: FakeUserflux, vambe: FakeVambe, **extra: Any) -> list[dict[str, Any]]:
    return [userflux_target(userflux.url, **extra), vambe_target(vambe.url, BLOCK, **extra)]


def deletes(userflux: FakeUserflux, vambe: FakeVambe) -> list[str]:
    """Keys deleted since the fakes' requests were last reset, per request."""
    keys = [r.path.rsplit("/", 1)[-1] for r in userflux.requests if r.method == "DELETE"]
    for request in vambe.requests:
        if "/delete/" in request.path:
            keys += [item["external_id"] for item in request.json]
    return keys


def reset(*fakes: Any) -> None:
    for fake in fakes:
        fake.reset_requests()


def http_harness(tmp_path: Path, api: FakeCatalogApi, targets: list, **source: Any) -> Harness:
    h = Harness(tmp_path, targets)
    h.raw["source"] = {
        "kind": "http",
        "url": api.url,
        "key": "sku",
        "records_path": "products",
        "pagination": {"style": "page", "page_size": 10},
        **source,
    }
    h.config = parse_config(h.raw, environ=h.environ)
    return h


# -- deletes need proof ----------------------------------------------------------------


def test_a_paged_list_without_a_total_deletes_only_what_three_complete_reads_missed(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(50)
    with FakeCatalogApi(records, style="page") as api:
        h = http_harness(tmp_path, api, targets(userflux, vambe))
        assert h.sync().ok
        api.records = records[:40]  # the last page comes back empty: looks like the end
        reset(userflux, vambe)

        for read in (1, 2):
            report = h.sync()
            assert report.ok
            assert deletes(userflux, vambe) == []
            notes = " ".join(report.targets[0].plan["notes"])
            assert "missing from 3 consecutive complete reads" in notes
            assert f"missed {read} so far" in notes
        [plan, _] = h.plan()  # the third read would delete them
        assert plan.counts()["delete"] == 10 and plan.awaiting_delete == 0

        report = h.sync()

        assert report.ok
        assert sorted(deletes(userflux, vambe)) == sorted(2 * [r["sku"] for r in records[40:]])
        assert userflux.products == expected_userflux(records[:40])
        h.close()


def test_a_mirrored_full_refresh_never_drops_a_product_missing_without_proof(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(30)
    with FakeCatalogApi(records, style="page") as api:
        h = http_harness(tmp_path, api, [vambe_target(vambe.url, BLOCK, mirror_block=True)])
        assert h.sync().ok
        api.records = records[:20]  # short, and nothing proves it
        reset(vambe)

        report = h.sync(full=True)

    assert report.ok
    assert not [r for r in vambe.requests if "/upsert/" in r.path or "/delete/" in r.path]
    assert set(vambe.block_products(BLOCK)) == {r["sku"] for r in records}
    assert "not proven gone" in " ".join(report.targets[0].plan["notes"])
    h.close()


def test_a_product_that_reappears_restarts_its_count_of_missed_reads(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(30)
    with FakeCatalogApi(records, style="page") as api:
        h = http_harness(tmp_path, api, targets(userflux, vambe))
        assert h.sync().ok
        reset(userflux, vambe)
        for listed in (records[:29], records[:29], records, records[:29], records[:29]):
            api.records = listed
            assert h.sync().ok
        assert deletes(userflux, vambe) == []  # never missed three reads in a row
        api.records = records[:29]
        assert h.sync().ok
        assert sorted(deletes(userflux, vambe)) == ["P00030", "P00030"]
        h.close()


def test_with_an_item_url_a_missing_product_is_deleted_at_once_when_it_answers_404(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(30)
    with FakeCatalogApi(records, style="page", item_key="sku") as api:
        h = http_harness(tmp_path, api, targets(userflux, vambe), item_url=api.url + "/{key}")
        assert h.sync().ok
        api.records = records[:29]
        reset(userflux, vambe)

        report = h.sync()

    assert report.ok
    assert sorted(deletes(userflux, vambe)) == ["P00030", "P00030"]
    assert userflux.products == expected_userflux(records[:29])
    h.close()


def test_a_product_the_second_look_finds_again_is_not_deleted(
    tmp_path, userflux, vambe, monkeypatch
) -> None:
    records = catalog(30)
    with FakeCatalogApi(records, style="page", item_key="sku") as api:
        h = http_harness(tmp_path, api, targets(userflux, vambe), item_url=api.url + "/{key}")
        assert h.sync().ok
        api.records = records[:20]  # the list came back short, but every item still answers
        monkeypatch.setattr(api, "_item", lambda key: (200, {}, b'{"sku": "%s"}' % key.encode()))
        reset(userflux, vambe)

        report = h.sync()
        [plan, _] = h.plan()

    assert report.ok
    assert deletes(userflux, vambe) == []
    assert "not confirmed gone by a second look" in " ".join(report.targets[0].plan["notes"])
    assert plan.status == "pending" and plan.awaiting_delete == 10
    h.close()


class Looking:
    """A source of the Python API that proves its reads complete and takes a second look
    with ``look`` (keys -> the ones gone)."""

    can_prove_complete = True

    def __init__(self, records: list[Record], look: Any) -> None:
        self.records = records
        self.look = look
        self.looked: list[list[str]] = []

    def read(self) -> Iterator[Record]:
        yield from self.records

    def describe(self) -> str:
        return "looking"

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        self.looked.append(list(keys))
        return self.look(keys)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("look", "deleted"),
    [
        (lambda keys: set(keys), True),
        (lambda keys: set(), False),
        (lambda keys: None, True),  # no second look: the complete read is proof enough
    ],
    ids=["confirmed", "found-again", "no-second-look"],
)
def test_a_complete_read_deletes_what_the_second_look_confirms_asking_once_for_every_target(
    tmp_path, userflux, vambe, look, deleted
) -> None:
    records = catalog(20)
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(records)
    assert h.sync().ok
    reset(userflux, vambe)
    source = Looking(records[:19], look)

    report = Reconciler(h.config, h.store, environ=ENV, source=source).sync(RunOptions())

    assert report.ok
    assert sorted(deletes(userflux, vambe)) == (["P00020", "P00020"] if deleted else [])
    assert source.looked == [["P00020"]]  # one look for both targets
    h.close()


def test_a_second_look_that_fails_deletes_nothing_and_says_why(tmp_path, userflux, vambe) -> None:
    records = catalog(20)
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(records)
    assert h.sync().ok
    reset(userflux, vambe)

    def broken(keys: Sequence[str]) -> set[str]:
        raise SourceError("shop db: OperationalError: connection refused")

    report = Reconciler(h.config, h.store, environ=ENV, source=Looking(records[:19], broken)).sync(
        RunOptions()
    )

    assert deletes(userflux, vambe) == []
    assert "connection refused" in " ".join(report.targets[0].plan["notes"])
    h.close()


# -- a product that can't be pushed any more --------------------------------------------


def test_a_product_refused_locally_is_withdrawn_and_a_fresh_full_sync_agrees(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(10)
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(records)
    assert h.sync().ok
    records[3]["price"] = "0"  # Vambe needs a price over 0; UserFlux takes it
    h.write(records)

    report = h.sync()

    assert report.ok
    assert set(vambe.block_products(BLOCK)) == {r["sku"] for r in records} - {"P00004"}
    assert "P00004" not in acknowledged(h.store, "vb")
    assert userflux.products == expected_userflux(records)
    # a fresh full sync of the same source into empty targets ends the same
    with FakeVambe(api_key=KEY) as fresh:
        fresh.add_block(BLOCK, name="catalog")
        f = Harness(tmp_path / "fresh", [vambe_target(fresh.url, BLOCK)])
        f.write(records)
        f.sync()
        assert fresh.block_products(BLOCK) == vambe.block_products(BLOCK)
        f.close()
    h.close()


def test_a_product_the_target_refuses_is_withdrawn_in_the_same_run(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(10)
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(records)
    assert h.sync().ok
    records[3]["title"] = "Renamed in a way the AI indexer refuses"
    h.write(records)

    def update_of_p4(method: str, path: str, body: object) -> bool:
        return "/create/" in path and any(p.get("external_id") == "P00004" for p in body)  # type: ignore[union-attr]

    vambe.inject(
        Fault(status=400, body='{"error": "indexer says no"}', times=None, match=update_of_p4)
    )

    report = h.sync()

    assert set(vambe.block_products(BLOCK)) == {r["sku"] for r in records} - {"P00004"}
    assert "P00004" not in acknowledged(h.store, "vb")
    [rejection] = h.store.open_rejections("vb")
    assert rejection.key == "P00004" and "indexer says no" in rejection.reason
    assert report.targets[1].deleted == 1
    h.close()


def test_with_rejected_keep_a_refused_update_leaves_state_at_the_version_the_target_holds(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(10)
    h = Harness(tmp_path, targets(userflux, vambe, rejected="keep"))
    h.write(records)
    assert h.sync().ok
    before = acknowledged(h.store, "vb")["P00004"]
    records[3]["title"] = "Renamed in a way the indexer refuses"
    h.write(records)
    vambe.inject(
        Fault(status=400, times=None, match=lambda m, p, b: "/create/" in p)  # every create
    )

    h.sync()

    assert vambe.block_products(BLOCK)["P00004"] == expected_vambe(catalog(10))["P00004"]
    assert acknowledged(h.store, "vb")["P00004"] == before  # not left marked in flight
    h.close()


# -- a run rejecting most records ---------------------------------------------------------


def test_a_run_that_rejects_every_record_is_blocked_and_withdraws_nothing(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(10)
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(records)
    assert h.sync().ok
    h.raw["targets"][1]["mapping"]["currency"] = {"const": "GBP"}
    h.config = parse_config(h.raw, environ=h.environ)
    reset(userflux, vambe)

    report = h.sync()

    assert report.exit_code == 1
    assert [t.outcome for t in report.targets] == ["ok", "blocked"]
    assert "max_reject_fraction" in (report.targets[1].error or "")
    assert deletes(userflux, vambe) == []
    assert set(vambe.block_products(BLOCK)) == {r["sku"] for r in records}
    h.close()


# -- a write in doubt ---------------------------------------------------------------------


def test_a_write_applied_after_syncd_gave_up_is_reasserted_once_the_window_has_passed(
    tmp_path, userflux, monkeypatch
) -> None:
    records = catalog(5)
    h = Harness(tmp_path, [userflux_target(userflux.url, in_doubt_window_s=600)])
    h.write(records)
    assert h.sync().ok

    records[2]["price"] = "111.11"  # the first try is applied, then answered 500: retried
    h.write(records)
    userflux.inject(Fault(status=500, apply_then_fail=True, times=1))
    assert h.sync().ok
    late = userflux.products[("product", "P00003")]

    records[2]["price"] = "222.22"  # pushed at once
    h.write(records)
    assert h.sync().ok
    [plan] = h.plan()
    assert plan.status == "in doubt" and plan.in_doubt == 1

    # ... then the first write of 111.11 lands late, over the newer one
    landing = {
        "id": "P00003",
        "typeId": "product",
        "properties": late["properties"],
        "propertiesUpdateType": "FULL_UPDATE",
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(userflux.url + "/product", json=landing, headers=headers).status_code == 204
    assert userflux.products[("product", "P00003")]["properties"]["price"] == 111.11

    later = time.time() + 601
    monkeypatch.setattr(time, "time", lambda: later)
    reset(userflux)
    report = h.sync()

    assert report.ok
    assert userflux.products == expected_userflux(records)
    [body] = [r.json for r in userflux.requests if r.method == "POST"]
    assert body["id"] == "P00003" and body["propertiesUpdateType"] == "FULL_UPDATE"
    [plan] = h.plan()
    assert plan.status == "in line"
    h.close()


def test_a_target_refusing_every_write_gets_no_wave_of_withdrawals(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(20)
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(records)
    assert h.sync().ok
    for record in records:
        record["title"] += " (renamed)"
    h.write(records)
    userflux.inject(Fault(status=400, times=None, match=lambda m, p, b: m == "POST"))
    vambe.inject(Fault(status=400, times=None, match=lambda m, p, b: "/create/" in p))
    reset(userflux, vambe)

    report = h.sync()

    assert [t.outcome for t in report.targets] == ["blocked", "blocked"]
    assert "max_reject_fraction" in (report.targets[0].error or "")
    assert deletes(userflux, vambe) == []
    assert len(userflux.products) == 20
    assert set(vambe.block_products(BLOCK)) == {r["sku"] for r in records}
    h.close()


def test_withdrawals_after_the_target_refused_are_held_past_the_delete_guard(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(20)
    h = Harness(tmp_path, [vambe_target(vambe.url, BLOCK)])
    h.write(records)
    assert h.sync().ok
    for record in records[:6]:  # 30% of the block, under half of what was read
        record["title"] += " (renamed)"
    h.write(records)
    refused = {r["sku"] for r in records[:6]}

    def renamed(method: str, path: str, body: object) -> bool:
        return "/create/" in path and any(p["external_id"] in refused for p in body)  # type: ignore[union-attr]

    vambe.inject(Fault(status=400, times=None, match=renamed))
    reset(vambe)

    report = h.sync()

    [target] = report.targets
    assert target.outcome == "blocked"
    assert "not withdrawn" in (target.error or "") and "max_delete_fraction=20%" in target.error
    assert deletes(userflux, vambe) == []
    assert set(vambe.block_products(BLOCK)) == {r["sku"] for r in records}
    h.close()


def test_allow_deletes_does_not_let_a_run_rejecting_most_records_through(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(10)
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(records)
    assert h.sync().ok
    h.raw["targets"][1]["mapping"]["currency"] = {"const": "GBP"}
    h.config = parse_config(h.raw, environ=h.environ)
    h.write(records[1:])  # one intended delete
    reset(userflux, vambe)

    report = h.sync(allow_deletes=True)

    assert report.exit_code == 1
    assert report.targets[1].outcome == "blocked"
    assert not [r for r in vambe.requests if "/delete/" in r.path]  # nothing withdrawn
    assert set(vambe.block_products(BLOCK)) == {r["sku"] for r in records}
    assert ("product", "P00001") not in userflux.products  # UserFlux's intended delete went
    h.close()


def test_each_rejection_is_logged_by_product_key_with_every_failing_field(
    tmp_path, userflux, vambe
) -> None:
    from structlog.testing import capture_logs

    records = catalog(30)
    for record in records[:25]:  # 25 of 30 rejected by Vambe: more than are logged one by one
        record["price"] = "0"
    records[0].update(body="", price="abc")  # two mapping problems in one record
    h = Harness(tmp_path, [vambe_target(vambe.url, BLOCK, guards={"max_reject_fraction": 1})])
    h.write(records)

    with capture_logs() as logs:
        h.sync()

    rejected = [e for e in logs if e["event"] == "syncd.product.rejected"]
    assert len(rejected) == 20
    first = next(e for e in rejected if e["key"] == "P00001")
    assert first["reason"].startswith("P00001: ")
    assert "price" in first["reason"] and "description" in first["reason"]  # every field
    [more] = [e for e in logs if e["event"] == "syncd.product.rejected_more"]
    assert more["more"] == 5 and more["command"] == "syncd rejections --target vb"
    h.close()


def test_a_target_that_fails_before_planning_keeps_its_open_rejections(
    tmp_path, userflux, vambe
) -> None:
    records = catalog(5)
    records[1]["price"] = "0"  # Vambe refuses it
    h = Harness(tmp_path, [vambe_target(vambe.url, BLOCK)])
    h.write(records)
    h.sync()
    [before] = h.store.open_rejections("vb")
    vambe.inject(Fault(status=401, times=None))  # the block listing is refused at the start

    report = h.sync()

    assert report.targets[0].outcome == "failed"
    assert h.store.open_rejections("vb") == [before]  # first seen and count kept
    h.close()


def test_a_resend_is_recorded_as_a_resend_not_as_a_full_refresh(tmp_path, userflux, vambe) -> None:
    h = Harness(tmp_path, targets(userflux, vambe))
    h.write(catalog(5))
    assert h.sync().ok
    reset(userflux, vambe)

    report = h.sync(keys=("P00002",))

    assert report.ok
    assert [t.mode for t in report.targets] == ["resend", "resend"]
    assert [r.mode for r in h.store.recent_runs(limit=2)] == ["resend", "resend"]
    [body] = [r.json for r in userflux.requests if r.method == "POST"]
    assert body["id"] == "P00002" and body["propertiesUpdateType"] == "FULL_UPDATE"
    h.close()
