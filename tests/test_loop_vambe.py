"""The whole loop against the fake Vambe, alone and beside UserFlux from one source read."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sandbox import FakeUserflux, FakeVambe, Fault
from tests.support import (
    KEY,
    Harness,
    catalog,
    expected_userflux,
    expected_vambe,
    userflux_target,
    vambe_target,
)


@pytest.fixture
def fake() -> Iterator[FakeVambe]:
    with FakeVambe(api_key=KEY) as server:
        yield server


@pytest.fixture
def block(fake: FakeVambe) -> str:
    return fake.add_block(name="catalog")


def posts(fake: FakeVambe, endpoint: str) -> list:
    return [r for r in fake.requests if r.method == "POST" and f"/{endpoint}/" in r.path]


def test_rounds_of_edits_keep_the_block_equal_to_the_source_with_minimal_batches(
    tmp_path: Path, fake: FakeVambe, block: str
):
    batch = 7
    h = Harness(
        tmp_path,
        [vambe_target(fake.url, block, batch_size=batch, guards={"max_delete_fraction": 0.5})],
    )
    records = catalog(40)
    h.write(records)
    h.sync()
    assert fake.block_products(block) == expected_vambe(records)
    rounds = [
        (lambda rs: [dict(r, price="77.00") if i % 5 == 0 else r for i, r in enumerate(rs)]),
        (lambda rs: rs[:30] + catalog(4, start=500)),
        (
            lambda rs: [
                {k: v for k, v in r.items() if k != "color"} if i < 9 else r
                for i, r in enumerate(rs)
            ]
        ),
        (lambda rs: rs),
    ]
    for edit in rounds:
        before = {r["sku"]: r for r in records}
        records = edit(records)
        after = {r["sku"]: r for r in records}
        changed = sum(1 for k, r in after.items() if before.get(k) != r)
        deleted = len(set(before) - set(after))
        h.write(records)
        fake.reset_requests()

        report = h.sync()

        assert report.ok, report.targets[0].error
        assert fake.block_products(block) == expected_vambe(records)
        assert len(posts(fake, "create")) == math.ceil(changed / batch)
        assert len(posts(fake, "delete")) == math.ceil(deleted / batch)
        assert len(posts(fake, "upsert")) == 0
    assert fake.request_count(method="POST") == 0  # the last round changed nothing
    h.close()


def test_invalid_products_are_rejected_locally_with_their_rule_and_never_sent(
    tmp_path: Path, fake: FakeVambe, block: str
):
    h = Harness(tmp_path, [vambe_target(fake.url, block)])
    records = catalog(6)
    records[1]["price"] = "0"
    records[2]["body"] = ""
    records[3]["title"] = ""
    h.write(records)

    report = h.sync()

    good = [records[0], records[4], records[5]]
    assert fake.block_products(block) == expected_vambe(good)
    reasons = {r.key: r.reason for r in h.store.open_rejections("vb")}
    assert "greater than 0" in reasons[records[1]["sku"]]
    assert "description" in reasons[records[2]["sku"]]
    assert "name" in reasons[records[3]["sku"]]
    sent = {p["external_id"] for r in fake.requests if r.method == "POST" for p in r.json}
    assert sent.isdisjoint({records[i]["sku"] for i in (1, 2, 3)})
    assert report.targets[0].rejected == 3
    h.close()


def test_an_unknown_currency_is_rejected_naming_the_rule(
    tmp_path: Path, fake: FakeVambe, block: str
):
    target = vambe_target(fake.url, block)
    target["mapping"]["currency"] = {"path": "currency"}
    h = Harness(tmp_path, [target])
    records = catalog(2)
    records[0]["currency"] = "usd"
    records[1]["currency"] = "GBP"
    h.write(records)

    h.sync()

    [rejection] = h.store.open_rejections("vb")
    assert rejection.key == records[1]["sku"] and "GBP" in rejection.reason
    assert set(fake.block_products(block)) == {records[0]["sku"]}
    h.close()


def test_a_batch_refused_with_400_is_split_until_the_bad_product_is_isolated(
    tmp_path: Path, fake: FakeVambe, block: str
):
    h = Harness(tmp_path, [vambe_target(fake.url, block)])
    records = catalog(16)
    h.write(records)
    bad = records[9]["sku"]

    def carries_bad(method: str, path: str, body: object) -> bool:
        return isinstance(body, list) and any(
            isinstance(p, dict) and p.get("external_id") == bad for p in body
        )

    fake.inject(
        Fault(
            status=400,
            body='{"error": "rejected by the AI indexer"}',
            times=None,
            match=carries_bad,
        )
    )

    report = h.sync()

    assert set(fake.block_products(block)) == {r["sku"] for r in records} - {bad}
    [rejection] = h.store.open_rejections("vb")
    assert rejection.key == bad and "AI indexer" in rejection.reason
    assert report.targets[0].rejected == 1
    # 1 + 2 + 2 + 2 + 2 requests for 16 products halving down to one (log2 16 = 4 levels)
    assert len(posts(fake, "create")) == 9
    h.close()


def test_a_full_refresh_of_a_mirrored_block_sends_one_upsert(
    tmp_path: Path, fake: FakeVambe, block: str
):
    h = Harness(tmp_path, [vambe_target(fake.url, block, mirror_block=True, batch_size=5)])
    records = catalog(12)
    h.write(records)
    h.sync(full=True)
    fake.reset_requests()
    records = records[:10]
    h.write(records)

    report = h.sync(full=True)

    assert len(posts(fake, "upsert")) == 1
    assert fake.request_count(method="POST") == 1
    assert fake.block_products(block) == expected_vambe(records)
    assert h.store.count("vb") == 10
    notes = report.targets[0].plan["notes"]
    assert any(n.startswith("upsert:") for n in notes)
    h.close()


@pytest.mark.parametrize("kept", [0, 2])
def test_an_empty_or_much_smaller_read_sends_no_upsert_and_no_deletes(
    tmp_path: Path, fake: FakeVambe, block: str, kept: int
):
    h = Harness(tmp_path, [vambe_target(fake.url, block, mirror_block=True)])
    records = catalog(20)
    h.write(records)
    h.sync()
    h.write(records[:kept])
    fake.reset_requests()

    report = h.sync(full=True)

    assert posts(fake, "upsert") == [] and posts(fake, "delete") == []
    assert len(fake.block_products(block)) == 20
    [target] = report.targets
    assert target.outcome == "blocked" and report.exit_code == 1
    assert "--allow-deletes" in (target.error or "")
    assert target.held == 20 - kept
    h.close()


def test_drift_in_the_block_count_is_reported_and_repaired_by_a_full_refresh(
    tmp_path: Path, fake: FakeVambe, block: str
):
    h = Harness(tmp_path, [vambe_target(fake.url, block, mirror_block=True)])
    records = catalog(10)
    h.write(records)
    h.sync()
    # someone adds a product to the block behind syncd's back
    import httpx

    httpx.post(
        f"{fake.url}/api/public/product/create/{block}",
        headers={"x-api-key": KEY},
        json=[dict(expected_vambe(catalog(1, start=999))["P00999"])],
    ).raise_for_status()

    report = h.sync()
    assert report.targets[0].drift == 1
    assert h.store.recent_runs("vb", limit=1)[0].drift == 1

    repaired = h.sync(full=True)
    assert repaired.ok
    assert fake.block_products(block) == expected_vambe(records)
    assert h.sync().targets[0].drift is None
    h.close()


def test_a_missing_block_stops_that_target_and_the_other_target_goes_on(
    tmp_path: Path, fake: FakeVambe
):
    with FakeUserflux(api_key=KEY) as userflux:
        h = Harness(
            tmp_path,
            [
                vambe_target(fake.url, "00000000-0000-0000-0000-000000000000"),
                userflux_target(userflux.url),
            ],
        )
        records = catalog(5)
        h.write(records)

        report = h.sync()

        vambe, uf = report.targets
        assert vambe.outcome == "failed" and "block" in (vambe.error or "")
        assert "00000000-0000-0000-0000-000000000000" in (vambe.error or "")
        assert uf.ok
        assert userflux.products == expected_userflux(records)
        assert report.exit_code == 1
        h.close()


def test_one_source_read_feeds_both_targets_each_with_its_own_state(
    tmp_path: Path, fake: FakeVambe, block: str
):
    with FakeUserflux(api_key=KEY) as userflux:
        h = Harness(tmp_path, [userflux_target(userflux.url), vambe_target(fake.url, block)])
        records = catalog(30)
        h.write(records)
        h.sync()
        records[0]["price"] = "1.00"
        h.write(records)
        userflux.reset_requests()
        fake.reset_requests()

        report = h.sync()

        assert [t.updated for t in report.targets] == [1, 1]
        assert userflux.request_count() == 1
        assert fake.request_count(method="POST") == 1
        assert userflux.products == expected_userflux(records)
        assert fake.block_products(block) == expected_vambe(records)
        assert h.store.count("uf") == h.store.count("vb") == 30
        h.close()


def test_a_mirrored_upsert_after_state_was_lost_is_held_when_it_would_wipe_the_block(
    tmp_path: Path, fake: FakeVambe, block: str
):
    (tmp_path / "a").mkdir()
    first = Harness(tmp_path / "a", [vambe_target(fake.url, block, mirror_block=True)])
    first.write(catalog(20))
    first.sync()
    first.close()
    # a new, empty state database and a source that came back short
    (tmp_path / "b").mkdir()
    h = Harness(tmp_path / "b", [vambe_target(fake.url, block, mirror_block=True)])
    h.write(catalog(2))
    fake.reset_requests()

    report = h.sync()

    assert posts(fake, "upsert") == []
    assert len(fake.block_products(block)) == 20
    [target] = report.targets
    assert target.outcome == "blocked"
    assert "max_delete_fraction" in (target.error or "")
    h.close()


def test_the_run_record_keeps_batches_per_endpoint_and_why_upsert_was_not_used(
    tmp_path: Path, fake: FakeVambe, block: str
):
    h = Harness(tmp_path, [vambe_target(fake.url, block, batch_size=4)])
    records = catalog(10)
    h.write(records)
    h.sync()
    h.write(records[:9] + catalog(2, start=100))

    h.sync()

    details = h.store.recent_runs("vb", limit=1)[0].details
    assert details is not None
    assert details["requests"] == {
        "block.create create": {"requests": 1, "products": 2},
        "block.delete delete": {"requests": 1, "products": 1},
    }
    assert any("no upsert" in note for note in details["notes"])
    h.close()
