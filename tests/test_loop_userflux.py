"""The whole loop against the fake UserFlux: source file → mapping → diff → requests → state."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.errors import StateError
from syncd.model import Spooled
from syncd.sandbox import FakeUserflux, Fault
from tests.support import (
    KEY,
    Harness,
    acknowledged,
    catalog,
    expected_userflux,
    userflux_target,
)


@pytest.fixture
def fake() -> Iterator[FakeUserflux]:
    with FakeUserflux(api_key=KEY) as server:
        yield server


@pytest.fixture
def harness(tmp_path: Path, fake: FakeUserflux) -> Iterator[Harness]:
    h = Harness(tmp_path, [userflux_target(fake.url)])
    yield h
    h.close()


def posts(fake: FakeUserflux) -> list[dict]:
    return [r.json for r in fake.requests if r.method == "POST"]


def test_first_sync_sends_every_product_in_full_and_the_fake_equals_the_source(harness, fake):
    records = catalog(40)
    harness.write(records)

    report = harness.sync()

    assert report.ok
    assert fake.products == expected_userflux(records)
    assert fake.request_count() == 40
    assert {body["propertiesUpdateType"] for body in posts(fake)} == {"FULL_UPDATE"}
    assert report.targets[0].mode == "full"
    assert "state holds nothing" in report.targets[0].mode_reason
    assert harness.store.count("uf") == 40


def test_a_second_run_with_nothing_changed_sends_zero_requests(harness, fake):
    harness.write(catalog(25))
    harness.sync()
    fake.reset_requests()

    report = harness.sync()

    assert report.ok
    assert fake.request_count() == 0
    assert report.targets[0].unchanged == 25
    assert report.targets[0].mode == "incremental"


def test_a_run_after_n_changes_sends_exactly_n_requests(harness, fake):
    records = catalog(50)
    harness.write(records)
    harness.sync()
    fake.reset_requests()
    records[3]["price"] = "999.00"
    records[7]["title"] = "Renamed"
    del records[11]["color"]
    records.pop(20)  # a delete
    records.append(catalog(1, start=900)[0])  # a create
    harness.write(records)

    report = harness.sync()

    assert report.ok
    assert fake.request_count() == 5
    assert fake.products == expected_userflux(records)
    summary = report.targets[0]
    assert (summary.created, summary.updated, summary.deleted) == (1, 3, 1)


def test_a_product_that_lost_a_property_is_sent_with_full_update_and_loses_it(harness, fake):
    records = catalog(5)
    harness.write(records)
    harness.sync()
    fake.reset_requests()
    del records[2]["color"]
    harness.write(records)

    harness.sync()

    [body] = posts(fake)
    assert body["id"] == records[2]["sku"]
    assert body["propertiesUpdateType"] == "FULL_UPDATE"
    assert "color" not in fake.products[("product", records[2]["sku"])]["properties"]
    assert fake.products == expected_userflux(records)


def test_a_product_with_only_a_changed_price_is_sent_incrementally_with_only_the_price(
    harness, fake
):
    records = catalog(5)
    harness.write(records)
    harness.sync()
    fake.reset_requests()
    records[1]["price"] = "12.25"
    harness.write(records)

    harness.sync()

    [body] = posts(fake)
    assert body == {
        "id": records[1]["sku"],
        "typeId": "product",
        "properties": {"price": 12.25},
        "propertiesUpdateType": "INCREMENTAL_UPDATE",
    }
    assert fake.products == expected_userflux(records)


def test_a_deleted_product_is_deleted_and_a_404_counts_as_done(harness, fake):
    records = catalog(10)
    harness.write(records)
    harness.sync()
    gone = records.pop(4)
    harness.write(records)
    fake.inject(Fault(status=404, match=lambda method, path, body: method == "DELETE"))

    report = harness.sync()

    assert report.ok and report.targets[0].deleted == 1
    assert harness.store.get("uf", gone["sku"]) is None


def test_plan_sends_nothing_and_matches_what_sync_then_does(harness, fake):
    records = catalog(12)
    harness.write(records)

    [plan] = harness.plan()

    assert fake.request_count() == fake.request_count("GET")  # the probe only
    assert harness.store.count("uf") == 0
    assert plan.summary()["request_count"] == 12
    report = harness.sync()
    assert report.targets[0].requests == 12


def test_a_first_sync_plan_holds_no_payload_in_memory(harness, fake):
    """A first sync plans every product: no payload dict, no FULL_UPDATE body (rebuilt
    when sent) and no canonical bytes (spooled to disk, read back when sent)."""
    harness.write(catalog(30))

    [plan] = harness.plan()

    documents = [change.document for op in plan.operations for change in op.changes]
    assert len(documents) == 30
    assert all(d is not None and d.decoded is None for d in documents)
    assert all(isinstance(d.body, Spooled) for d in documents)
    assert [d.payload["id"] for d in documents] == [r["sku"] for r in catalog(30)]
    assert all(op.body is None for op in plan.operations)
    harness.sync()
    assert fake.products == expected_userflux(catalog(30))


def test_a_spool_that_cannot_be_written_fails_the_run_before_any_request(
    harness, fake, tmp_path, monkeypatch
):
    """The payloads wait in TMPDIR: when it is unusable the run stops with a state error
    naming it, sends nothing and marks nothing; the next run with a usable one syncs all."""
    harness.write(catalog(5))
    missing = tmp_path / "no-such-tmp"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))

    with pytest.raises(StateError, match=f"payload spool .*{missing}"):
        harness.sync()

    assert fake.request_count() == 0
    assert harness.store.count("uf") == 0
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert harness.sync().ok
    assert fake.products == expected_userflux(catalog(5))


def test_duplicate_keys_are_rejected_by_name_and_neither_copy_is_pushed(harness, fake):
    records = catalog(6)
    records.append(dict(records[2], title="Impostor"))
    harness.write(records)

    report = harness.sync()

    duplicate = records[2]["sku"]
    assert ("product", duplicate) not in fake.products
    assert fake.request_count() == 5
    rejections = {r.key: r.reason for r in harness.store.open_rejections("uf")}
    assert "duplicate key" in rejections[duplicate]
    assert report.targets[0].rejected == 1


def test_a_record_that_cannot_be_mapped_is_rejected_with_its_reason_and_the_run_goes_on(
    harness, fake
):
    records = catalog(4)
    records[1]["price"] = "about ten"
    harness.write(records)

    report = harness.sync()

    assert report.ok
    assert fake.request_count() == 3
    [rejection] = harness.store.open_rejections("uf")
    assert rejection.key == records[1]["sku"]
    assert "about ten" in rejection.reason and "price" in rejection.reason


def test_a_rejected_record_already_in_the_target_is_not_deleted(harness, fake):
    records = catalog(4)
    harness.write(records)
    harness.sync()
    records[1]["price"] = "broken"
    harness.write(records)
    fake.reset_requests()

    harness.sync()

    assert fake.request_count("DELETE") == 0
    assert ("product", records[1]["sku"]) in fake.products


def test_a_product_refused_with_400_is_rejected_and_not_resent_until_it_changes(harness, fake):
    records = catalog(5)
    harness.write(records)
    bad = records[3]["sku"]
    fake.inject(
        Fault(
            status=400,
            body='{"error": "price out of range"}',
            times=None,
            match=lambda method, path, body: isinstance(body, dict) and body.get("id") == bad,
        )
    )

    first = harness.sync()

    assert first.targets[0].rejected == 1
    assert bad not in acknowledged(harness.store, "uf")
    [rejection] = harness.store.open_rejections("uf")
    assert rejection.by_target and "price out of range" in rejection.reason
    fake.reset_requests()

    second = harness.sync()  # unchanged: held for the back-off, no hot loop
    assert fake.request_count() == 0
    assert second.targets[0].rejected == 1

    fake.clear_faults()
    records[3]["price"] = "11.00"
    harness.write(records)
    harness.sync()  # changed: sent again, and now accepted
    assert fake.products == expected_userflux(records)
    assert harness.store.open_rejections("uf") == []


def test_a_refused_key_stops_the_target_with_a_message_naming_the_env_var(tmp_path, fake):
    environ = {"OTHER_KEY": "wrong-key-value"}
    h = Harness(tmp_path, [userflux_target(fake.url, api_key_env="OTHER_KEY")], environ)
    h.write(catalog(50))

    report = h.sync()

    [target] = report.targets
    assert target.outcome == "failed"
    assert "OTHER_KEY" in (target.error or "")
    assert "wrong-key-value" not in (target.error or "")
    # stopped at the first 401: only requests already in flight (concurrency 8) went out
    assert fake.request_count() <= 8
    assert acknowledged(h.store, "uf") == {}
    assert report.exit_code == 1
    h.close()


def test_a_full_refresh_sends_full_update_for_every_product(harness, fake):
    records = catalog(8)
    harness.write(records)
    harness.sync()
    fake.reset_requests()

    report = harness.sync(full=True)

    assert fake.request_count() == 8
    assert {body["propertiesUpdateType"] for body in posts(fake)} == {"FULL_UPDATE"}
    assert report.targets[0].mode == "full"


def test_failures_that_outlast_the_retries_stay_unacknowledged_and_the_next_run_sends_them(
    harness, fake
):
    records = catalog(6)
    harness.write(records)
    flaky = records[0]["sku"]
    fake.inject(
        Fault(
            status=503,
            times=None,
            match=lambda method, path, body: isinstance(body, dict) and body.get("id") == flaky,
        )
    )

    report = harness.sync()

    assert report.targets[0].outcome == "partial"
    assert report.exit_code == 1
    assert flaky not in acknowledged(harness.store, "uf")
    assert len(acknowledged(harness.store, "uf")) == 5
    fake.clear_faults()
    assert harness.sync().ok
    assert fake.products == expected_userflux(records)


def test_changing_the_mapping_re_pushes_exactly_the_products_whose_payload_changed(tmp_path, fake):
    records = catalog(6)
    records[0]["color"] = ""
    h = Harness(tmp_path, [userflux_target(fake.url)])
    h.write(records)
    h.sync()
    h.close()
    fake.reset_requests()
    target = userflux_target(fake.url)
    target["mapping"]["properties"]["colour"] = target["mapping"]["properties"].pop("color")
    h = Harness(tmp_path, [target])

    h.sync()

    # five products had a color: renamed property = removed path = FULL_UPDATE; one had none
    assert fake.request_count() == 5
    assert {b["propertiesUpdateType"] for b in posts(fake)} == {"FULL_UPDATE"}
    h.close()


def test_an_update_applied_but_answered_500_is_repaired_when_the_source_reverts(harness, fake):
    records = catalog(3)
    harness.write(records)
    harness.sync()
    original = records[1]["price"]
    records[1]["price"] = "55.00"
    harness.write(records)
    fake.inject(Fault(status=500, apply_then_fail=True, times=None))

    harness.sync()  # the target applied 55.00 but never said so

    assert fake.products[("product", records[1]["sku"])]["properties"]["price"] == 55.0
    fake.clear_faults()
    fake.reset_requests()
    records[1]["price"] = original
    harness.write(records)

    harness.sync()

    assert fake.products == expected_userflux(records)
    [body] = posts(fake)
    assert body["propertiesUpdateType"] == "FULL_UPDATE"


def test_a_create_applied_but_unanswered_is_deleted_when_it_leaves_the_source(harness, fake):
    records = catalog(10)
    harness.write(records)
    harness.sync()
    extra = catalog(1, start=50)
    harness.write(records + extra)
    fake.inject(Fault(drop_connection=True, apply_then_fail=True, times=None))

    harness.sync()  # created on the target, the answer lost

    assert ("product", extra[0]["sku"]) in fake.products
    fake.clear_faults()
    harness.write(records)

    assert harness.sync().ok
    assert fake.products == expected_userflux(records)
