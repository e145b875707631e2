"""The rolling refresh: each run re-sends whole the products acknowledged longest ago, a
slice per run, so every product is re-sent within ``schedule.refresh_period``.

Time is simulated by moving every time state holds (acknowledgements, runs) back a day
between runs: no test sleeps.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.config import parse_config
from syncd.sandbox import FakeUserflux
from syncd.state.schema import products
from tests.support import KEY, Harness, catalog, expected_userflux, userflux_target, vambe_target

DAY = 86400.0


@pytest.fixture
def fake() -> Iterator[FakeUserflux]:
    with FakeUserflux(api_key=KEY) as server:
        yield server


def weekly(tmp_path: Path, targets: list, **schedule) -> Harness:
    h = Harness(tmp_path, targets)
    h.raw["schedule"] = {"refresh_period": "7d", **schedule}
    h.config = parse_config(h.raw, environ=h.environ)
    return h


def a_day_passes(h: Harness, days: float = 1.0) -> None:
    """Move every time state holds back by ``days``: as if that long passed."""
    engine = h.store.engine  # type: ignore[attr-defined]
    shift = days * DAY
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE products SET acked_at = acked_at - :s"), {"s": shift})
        conn.execute(
            sa.text("UPDATE runs SET started_at = started_at - :s, finished_at = finished_at - :s"),
            {"s": shift},
        )


def sent_ids(fake: FakeUserflux) -> list[str]:
    return [r.json["id"] for r in fake.requests if r.method == "POST"]


def test_each_run_re_sends_the_oldest_seventh_whole_and_every_product_once_a_week(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    records = catalog(70)
    h.write(records)
    h.sync()
    fake.reset_requests()
    resent: Counter[str] = Counter()
    previous: set[str] = set()

    for _night in range(7):
        a_day_passes(h)
        report = h.sync()
        assert report.ok
        bodies = [r.json for r in fake.requests if r.method == "POST"]
        assert len(bodies) == 10
        assert all(r.method == "POST" for r in fake.requests)  # no delete
        assert {b["propertiesUpdateType"] for b in bodies} == {"FULL_UPDATE"}
        tonight = {b["id"] for b in bodies}
        assert not tonight & previous  # the oldest, never the ones just re-sent
        previous |= tonight
        resent.update(tonight)
        fake.reset_requests()

    assert resent == Counter({r["sku"]: 1 for r in records})
    assert fake.products == expected_userflux(records)
    h.close()


def test_a_refreshed_product_says_how_long_ago_it_was_acknowledged_not_that_a_write_was_lost(
    tmp_path, fake
):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    h.write(catalog(14))
    h.sync()
    a_day_passes(h, 3)

    plan = h.plan()[0]
    assert plan.operations == ()  # a plan writes nothing: it only tells
    note = next(n for n in plan.notes if n.startswith("rolling refresh"))
    assert "the next sync re-asserts 6 of 14 products" in note
    assert "3 days ago" in note and "6 requests" in note

    report_plan = Harness.plan(h)[0]
    assert report_plan.notes == plan.notes  # planning twice marked nothing
    h.sync()
    bodies = [r.json for r in fake.requests if r.method == "POST"][14:]
    assert len(bodies) == 6
    assert {b["propertiesUpdateType"] for b in bodies} == {"FULL_UPDATE"}
    assert {len(b["properties"]) for b in bodies} == {4}  # whole, every property
    h.close()


def test_a_marked_product_is_planned_whole_with_the_age_of_its_last_acknowledgement(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    h.write(catalog(7))
    h.sync()
    a_day_passes(h, 2)

    marked = h.store.mark_refresh_due("uf", time.time(), 7 * DAY)

    assert marked.size == 2
    operations = h.plan()[0].operations
    assert [(o.mode, o.reason) for o in operations] == [
        ("FULL_UPDATE", "rolling refresh: last acknowledged 2 days ago")
    ] * 2
    h.sync()
    assert not any(n.startswith("rolling refresh") for n in h.plan()[0].notes)
    h.close()


def test_vambe_batches_of_refreshed_products_say_so(tmp_path, vambe):
    block = vambe.add_block(name="catalog")
    h = weekly(tmp_path, [vambe_target(vambe.url, block, batch_size=3)])
    records = catalog(14)
    h.write(records)
    h.sync()
    a_day_passes(h, 3)
    h.store.mark_refresh_due("vb", time.time(), 7 * DAY)  # 6 of 14
    records[13] = dict(records[13], price="999.00")  # changed, not in the slice
    h.write(records)

    reasons = [o.reason for o in h.plan()[0].operations]

    assert reasons == [
        "created or changed products, and 2 re-sent by the rolling refresh: last "
        "acknowledged 3 days ago",
        "rolling refresh: last acknowledged 3 days ago",
        "rolling refresh: last acknowledged 3 days ago",
    ]
    h.close()


def test_a_product_changed_meanwhile_is_sent_once_not_again_by_the_refresh(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    records = catalog(70)
    h.write(records)
    h.sync()
    fake.reset_requests()
    sent: Counter[str] = Counter()
    changed = records[45]["sku"]  # would be in the fifth night's slice

    for night in range(7):
        a_day_passes(h)
        if night == 2:
            records[45] = dict(records[45], price="999.00")
            h.write(records)
        h.sync()
        sent.update(sent_ids(fake))
        fake.reset_requests()

    assert sent[changed] == 1
    assert set(sent) == {r["sku"] for r in records}
    assert fake.products == expected_userflux(records)
    h.close()


def test_a_product_changed_in_tonights_slice_is_sent_once_whole(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    records = catalog(70)
    h.write(records)
    h.sync()
    fake.reset_requests()
    a_day_passes(h)
    records[0] = dict(records[0], price="999.00")  # P00001: in the first slice
    h.write(records)

    h.sync()

    ids = sent_ids(fake)
    assert len(ids) == 10 and ids.count("P00001") == 1
    body = next(r.json for r in fake.requests if r.json and r.json["id"] == "P00001")
    assert body["propertiesUpdateType"] == "FULL_UPDATE"
    assert body["properties"]["price"] == 999.0
    h.close()


def test_a_refreshed_row_is_parsed_again_though_its_fingerprint_was_known(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    h.write(catalog(21))
    h.sync()
    h.sync()  # the second run records the fingerprints of the unchanged rows
    engine = h.store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        known = conn.execute(
            sa.select(sa.func.count()).where(products.c.source_hash.is_not(None))
        ).scalar_one()
    assert known == 21
    fake.reset_requests()
    a_day_passes(h)

    h.sync()

    assert len(sent_ids(fake)) == 3
    h.close()


def test_runs_close_together_re_send_nothing(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    h.write(catalog(70))
    h.sync()
    fake.reset_requests()

    h.sync()

    assert fake.request_count() == 0
    h.close()


def test_a_run_after_a_whole_period_or_more_re_sends_everything_once(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    h.write(catalog(20))
    h.sync()
    fake.reset_requests()
    a_day_passes(h, 30)

    h.sync()

    assert sorted(sent_ids(fake)) == sorted(r["sku"] for r in catalog(20))
    h.close()


def test_frequent_runs_still_re_send_a_small_catalog_within_the_period(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)])
    h.write(catalog(5))
    h.sync()
    fake.reset_requests()
    sent: list[str] = []
    for _hour in range(7 * 24 + 1):  # hourly: 5 x 1h / 7d rounds down to nothing
        a_day_passes(h, 1 / 24)
        h.sync()
        sent.extend(sent_ids(fake))
        fake.reset_requests()

    assert Counter(sent) == Counter({r["sku"]: 1 for r in catalog(5)})
    h.close()


def test_the_rolling_refresh_turned_off_re_sends_nothing(tmp_path, fake):
    h = weekly(tmp_path, [userflux_target(fake.url)], refresh_period="")
    h.write(catalog(14))
    h.sync()
    fake.reset_requests()
    a_day_passes(h, 10)

    h.sync()

    assert fake.request_count() == 0
    h.close()


def test_vambe_re_sends_the_slice_with_create_and_says_why(tmp_path, vambe):
    block = vambe.add_block(name="catalog")
    h = weekly(tmp_path, [vambe_target(vambe.url, block, batch_size=4)])
    h.write(catalog(28))
    h.sync()
    vambe.reset_requests()
    a_day_passes(h)

    plan = h.plan()[0]
    assert any("re-asserts 4 of 28 products" in n and "1 requests" in n for n in plan.notes)
    h.sync()

    creates = [r for r in vambe.requests if "/create/" in r.path]
    assert len(creates) == 1 and len(creates[0].json) == 4
    assert len(vambe.requests) == len(creates) + sum(1 for r in vambe.requests if r.method == "GET")
    assert not [r for r in vambe.requests if "/upsert/" in r.path or "/delete/" in r.path]
    h.close()
