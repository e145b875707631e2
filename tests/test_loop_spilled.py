"""Runs planned on disk: more changes than a group of requests (``GROUP``) and records
more than a chunk (``CHUNK``) apart, both made small here; UserFlux and Vambe fakes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from syncd.reconcile import Reconciler
from syncd.runs import RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.sandbox.server import Fault
from syncd.stages import deciding, planning
from syncd.stages.spill import SpilledList
from tests.support import (
    Harness,
    acknowledged,
    catalog,
    expected_userflux,
    expected_vambe,
    userflux_target,
    vambe_target,
)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 5 records and groups of 4 changes: a 23-product catalog spans several."""
    monkeypatch.setattr(planning, "CHUNK", 5)
    monkeypatch.setattr(planning, "GROUP", 4)


def both(tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, **vb: object) -> Harness:
    block = vambe.add_block(name="catalog")
    return Harness(
        tmp_path,
        [userflux_target(userflux.url), vambe_target(vambe.url, block, batch_size=3, **vb)],
    )


def test_a_plan_in_groups_says_what_a_plan_in_one_piece_says(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, monkeypatch: pytest.MonkeyPatch
):
    h = both(tmp_path, userflux, vambe)
    h.write(catalog(23))
    whole = h.plan()

    monkeypatch.setattr(planning, "CHUNK", 5)
    monkeypatch.setattr(planning, "GROUP", 4)
    grouped = h.plan()

    assert [type(p.operations) for p in whole] == [tuple, tuple]
    assert [type(p.operations) for p in grouped] == [SpilledList, SpilledList]
    assert [p.summary(sample=30) for p in grouped] == [p.summary(sample=30) for p in whole]
    # Vambe's groups are whole batches (4 rounded up to 6): 8 batches, as in one piece
    assert [len(p.operations) for p in grouped] == [23, 8]
    h.close()


def test_a_first_sync_planned_in_groups_ends_equal_to_the_source(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, small: None
):
    h = both(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(23)
    h.write(records)

    report = h.sync()

    assert report.ok
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    assert [t.created for t in report.targets] == [23, 23]
    assert [t.requests for t in report.targets] == [23, 8]
    assert [len(acknowledged(h.store, name)) for name in ("uf", "vb")] == [23, 23]

    edited = [dict(r, price="99.00") if i % 4 == 0 else r for i, r in enumerate(records[:20])]
    h.write(edited)
    report = h.sync()

    assert report.ok
    assert userflux.products == expected_userflux(edited)
    assert vambe.block_products(block) == expected_vambe(edited)
    assert [(t.updated, t.deleted) for t in report.targets] == [(5, 3), (5, 3)]
    h.close()


def test_a_key_duplicated_more_than_a_chunk_apart_is_pushed_by_neither_copy(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, small: None
):
    h = both(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(23)
    h.write(records)
    assert h.sync().ok
    before = {name: acknowledged(h.store, name)[records[1]["sku"]] for name in ("uf", "vb")}
    # a new product and a changed one, each repeated 20 records (4 chunks) later
    changed = dict(records[1], title="Changed")
    new = catalog(1, start=900)[0]
    h.write([new, changed, *records[2:], *records[:1], dict(changed, title="Impostor"), new])

    report = h.sync()

    for target in report.targets:
        assert target.rejected == 2 and target.created == 0 and target.updated == 0
    assert ("product", new["sku"]) not in userflux.products
    assert new["sku"] not in vambe.block_products(block)
    # the older version stays where it was, on the targets and in state
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    for name in ("uf", "vb"):
        assert acknowledged(h.store, name)[records[1]["sku"]] == before[name]
        reasons = {r.key: r.reason for r in h.store.open_rejections(name)}
        assert "duplicate key" in reasons[new["sku"]]
        assert "duplicate key" in reasons[records[1]["sku"]]
    h.close()


def test_a_mirrored_full_refresh_over_the_upsert_limit_sends_creates_and_proven_deletes(
    tmp_path: Path,
    userflux: FakeUserflux,
    vambe: FakeVambe,
    small: None,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(deciding, "MIRROR_MAX_PRODUCTS", 10)
    h = both(tmp_path, userflux, vambe, mirror_block=True)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(14)
    h.write(records)
    assert h.sync(full=True).ok
    vambe.reset_requests()
    h.write(records[:12])

    report = h.sync(full=True)

    assert report.ok
    paths = [r.path for r in vambe.requests if r.method == "POST"]
    assert not any("/upsert/" in p for p in paths)
    assert sum("/create/" in p for p in paths) == 4 and sum("/delete/" in p for p in paths) == 1
    assert vambe.block_products(block) == expected_vambe(records[:12])
    notes = report.targets[1].plan["notes"]
    assert any(
        "no upsert although mirror_block is on: 12 products are over the 10" in n for n in notes
    )
    h.close()


def test_a_fatal_answer_marks_in_flight_only_the_chunks_that_went_out(
    tmp_path: Path, userflux: FakeUserflux, small: None
) -> None:
    """The executor reads the rest of the plan to count what was not sent: that must not
    mark the rest's writes in flight (state would claim products the target never saw,
    and the next run would count their creates as updates)."""
    h = Harness(tmp_path, [userflux_target(userflux.url, concurrency=1)])
    h.write(catalog(23))
    userflux.inject(Fault(status=401))

    report = h.sync()

    target = report.targets[0]
    assert target.outcome == "failed" and target.requests == 1
    # the first chunk of requests (a group of 4 changes) was marked before it went out
    assert 1 <= h.store.count("uf") <= 4
    userflux.reset_requests()

    report = h.sync()

    target = report.targets[0]
    assert report.ok and target.requests == 23 and len(userflux.requests) == 23
    assert target.created + target.updated == 23 and target.created >= 19
    assert len(acknowledged(h.store, "uf")) == 23
    h.close()


def test_a_first_sync_stopped_mid_group_is_finished_by_the_next_run_request_for_request(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, small: None
) -> None:
    """Stopped after 7 UserFlux requests of a first sync in groups: the next run sends
    exactly the products not acknowledged (a create each, but the ones marked in flight),
    and the run after it nothing."""
    block = vambe.add_block(name="catalog")
    h = Harness(
        tmp_path,
        [
            userflux_target(userflux.url, concurrency=1),
            vambe_target(vambe.url, block, batch_size=3, concurrency=1),
        ],
    )
    records = catalog(23)
    h.write(records)
    userflux.latency, vambe.latency = 0.05, 0.2  # Vambe far from done at the stop
    stop = threading.Event()

    def stop_after_seven() -> None:
        while len(userflux.requests) < 7:
            time.sleep(0.001)
        stop.set()

    watcher = threading.Thread(target=stop_after_seven, daemon=True)
    watcher.start()
    report = Reconciler(h.config, h.store, environ=h.environ, stop=stop).sync(RunOptions())
    watcher.join(5)

    assert [t.outcome for t in report.targets] == ["interrupted", "interrupted"]
    acked = {name: len(acknowledged(h.store, name)) for name in ("uf", "vb")}
    marked = h.store.count("uf") - acked["uf"]
    assert report.targets[0].created == acked["uf"] and acked["uf"] < 23
    assert report.targets[0].not_attempted == 23 - acked["uf"]
    # only the chunk of requests going out when the stop came is marked in flight
    assert 0 <= marked <= 4
    userflux.latency = vambe.latency = 0
    userflux.reset_requests()

    report = h.sync()

    uf = report.targets[0]
    assert report.ok and len(userflux.requests) == uf.requests == 23 - acked["uf"]
    assert (uf.created, uf.updated) == (23 - acked["uf"] - marked, marked)
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    assert [t.requests for t in h.sync().targets] == [0, 0]
    h.close()
