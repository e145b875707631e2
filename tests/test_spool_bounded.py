"""The spool stays bounded: what a target's sender has sent is released from disk.

Groups of 4 changes, chunks of 5 records and spool segments of 1 KB (``small_groups``);
a source that waits, every few records, until both targets' senders have finished every
group put so far, so the read never runs ahead of the targets: each target's spool then
holds a few groups at a time, not everything the run planned. The groups released are
gone for good, so what the run does afterwards (restoring a key found twice, refused
writes, writes in doubt) works from what it kept of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd import reconcile
from syncd.model import Spool
from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.stages.outbox import Outbox
from tests.support import (
    ENV,
    Harness,
    acknowledged,
    catalog,
    expected_userflux,
    expected_vambe,
)
from tests.test_loop_streaming import Pausing, both, writes

pytestmark = pytest.mark.usefixtures("small_groups")


@pytest.fixture
def outboxes(monkeypatch: pytest.MonkeyPatch) -> list[Outbox]:
    """The outboxes of the runs made meanwhile (each with its target's own spool)."""
    made: list[Outbox] = []

    class Recorded(Outbox):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(reconcile, "Outbox", Recorded)
    return made


def drained(outboxes: list[Outbox]) -> Any:
    """A pause condition: every group put so far is finished, and its disk released."""

    def condition() -> bool:
        return all(o.backlog == 0 and o.spool.live < 2048 for o in outboxes)

    return condition


def run(h: Harness, source: Pausing, **options: Any) -> Any:
    return Reconciler(h.config, h.store, environ=ENV, source=source).sync(RunOptions(**options))


def test_a_spool_holds_what_is_not_sent_yet_not_the_whole_plan(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, outboxes: list[Outbox]
) -> None:
    h = both(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(300)
    source = Pausing(records, {i: drained(outboxes) for i in range(20, 300, 20)})
    report = run(h, source)

    assert report.ok
    assert all(source.held.values()), "the senders never caught up with the read"
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    assert len(outboxes) == 2
    for outbox in outboxes:
        spool = outbox.spool
        # everything planned went through the spool; a few groups were on disk at once
        assert spool.size > 40_000
        assert spool.peak < spool.size / 8, (spool.peak, spool.size)
    h.close()


def test_a_released_group_cannot_be_read_back_and_says_why(tmp_path: Path) -> None:
    from syncd import model

    with Spool(str(tmp_path)) as spool:
        first = spool.put(b"x" * 100)
        for _ in range(30):
            spool.put(b"y" * 100)
        assert len(spool._files) > 1  # segments of 1 KB (small_groups)
        spool.release(spool.size)
        # the segment being written stays; the others are gone and their files closed
        assert spool.live <= model.SEGMENT_BYTES + 100
        assert sum(file is not None for file in spool._files) == 1
        with pytest.raises(
            Exception, match=f"released .sent. and are gone.*{tmp_path}|{tmp_path}.*released"
        ):
            first.read()
        last = spool.put(b"z" * 10)
        assert last.read() == b"z" * 10


def test_a_key_found_twice_after_its_first_copy_was_released_is_restored(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, outboxes: list[Outbox]
) -> None:
    """The first copies' groups are sent, finished and released before the second copies
    are read: the restore comes from the journal (the version replaced) and from state."""
    h = both(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(30)
    h.write(records)
    assert h.sync().ok
    before = {name: acknowledged(h.store, name) for name in ("uf", "vb")}
    outboxes.clear()
    changed = dict(records[0], title="Changed early")
    new = catalog(1, start=900)[0]
    others = [dict(r, price="77.00") for r in records[1:30]]
    read = [changed, new, *others, dict(changed, title="Impostor"), new]
    userflux.reset_requests()
    vambe.reset_requests()
    sent_and_released = drained(outboxes)

    def ready() -> bool:
        return (
            all(
                writes(server, key) >= 1
                for server in (userflux, vambe)
                for key in (changed["sku"], new["sku"])
            )
            and sent_and_released()
        )

    source = Pausing(read, {len(read) - 2: ready})
    report = run(h, source)

    assert source.held == {len(read) - 2: True}, "the first copies were never released"
    assert all(outbox.spool.size - outbox.spool.live > 5_000 for outbox in outboxes)
    assert userflux.products == expected_userflux([records[0], *others])
    assert vambe.block_products(block) == expected_vambe([records[0], *others])
    for name, target in zip(("uf", "vb"), report.targets, strict=True):
        acked = acknowledged(h.store, name)
        assert acked[changed["sku"]] == before[name][changed["sku"]]
        assert new["sku"] not in acked
        assert target.rejected == 2
        assert any("restored after the run's other requests" in n for n in target.plan["notes"])
    h.close()


def test_writes_refused_or_in_doubt_in_released_groups_are_restored_and_remembered(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, outboxes: list[Outbox]
) -> None:
    """Refused and doubted writes early in the read: their groups are released long before
    the run restores state for them and records the doubts (from what the sender kept)."""
    from syncd.sandbox.server import Fault

    h = both(tmp_path, userflux, vambe)
    records = catalog(40)
    h.write(records)
    assert h.sync().ok
    before = acknowledged(h.store, "uf")
    outboxes.clear()
    edited = [dict(r, price="66.00") for r in records]
    new = catalog(1, start=900)[0]
    refused, doubted = edited[0]["sku"], edited[2]["sku"]
    read = [edited[0], new, edited[2], *edited[3:], edited[1]]

    def about(*keys: str) -> Any:
        return lambda method, path, body: isinstance(body, dict) and body.get("id") in keys

    no = '{"error": "no"}'
    userflux.inject(Fault(status=400, body=no, times=None, match=about(refused, new["sku"])))
    userflux.inject(Fault(status=500, apply_then_fail=True, times=1, match=about(doubted)))
    source = Pausing(read, {len(read) - 1: drained(outboxes)})
    report = run(h, source)

    assert source.held == {len(read) - 1: True}
    uf = report.targets[0]
    assert uf.rejected == 2 and uf.in_doubt == 1, uf
    acked = acknowledged(h.store, "uf")
    # the refused update's older version is withdrawn (rejected = "withdraw"), the refused
    # create never landed: neither is on the target nor in state
    assert uf.deleted == 1
    assert refused in before and refused not in acked and new["sku"] not in acked
    assert ("product", refused) not in userflux.products
    assert ("product", new["sku"]) not in userflux.products
    # the doubted write is remembered, to be re-sent whole once its window has passed
    assert h.store.count_doubts("uf", now=float("inf")) == (1, 0)
    h.close()


def behind(tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, **schedule: Any) -> Harness:
    """Both targets, UserFlux slow (20 ms a request), and at most 3 KB waiting on disk."""
    from syncd.config import parse_config
    from syncd.sandbox.server import Fault

    h = both(tmp_path, userflux, vambe)
    h.raw["schedule"] = {"spool_max_mb": 0.003, **schedule}
    h.config = parse_config(h.raw, environ=h.environ)
    userflux.inject(Fault(delay=0.02, times=None))
    return h


def test_a_target_too_far_behind_makes_the_read_wait_for_it(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, outboxes: list[Outbox]
) -> None:
    h = behind(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(150)
    h.write(records)

    report = h.sync()

    assert report.ok
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    slow = outboxes[0].spool
    # without the wait the slow target's backlog would be nearly the whole plan
    assert slow.size > 25_000
    assert slow.peak < 10_000, (slow.peak, slow.size)
    h.close()


def test_a_target_that_stops_while_the_read_waits_for_it_does_not_hang_the_run(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
) -> None:
    h = behind(tmp_path, userflux, vambe, max_run_s=0.5)
    records = catalog(400)
    h.write(records)

    report = h.sync()

    # the time budget ran out with the read waiting for UserFlux: the run ends, recorded
    # incomplete, and what was acknowledged is kept; the next runs carry on
    uf = report.targets[0]
    assert uf.outcome == "incomplete", uf
    assert 0 < len(acknowledged(h.store, "uf")) < 400
    userflux.clear_faults()
    h.raw["schedule"] = {}
    from syncd.config import parse_config

    h.config = parse_config(h.raw, environ=h.environ)
    assert h.sync().ok
    assert userflux.products == expected_userflux(records)
    h.close()


@pytest.mark.parametrize("full", [False, True])
def test_a_plan_only_shown_keeps_no_payload_and_says_the_same(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, full: bool
) -> None:
    """``syncd plan`` keeps keys and hashes of its requests, not their payloads: the same
    summary (counts, requests, samples, duplicates taken out) from a fraction of the disk."""
    from syncd import reconcile as module

    h = both(tmp_path, userflux, vambe)
    # payloads of a realistic size (a name, a description): ~1 KB a product and target
    records = [
        dict(r, title=r["title"] + "-long" * 60, body="<p>" + "text " * 150 + "</p>")
        for r in catalog(120)
    ]
    h.write(records[:60])
    assert h.sync().ok
    edited = [dict(r, price="55.00") for r in records[:60]] + records[60:]
    h.write([*edited, dict(records[3], title="Twin"), dict(records[90], title="Twin")])
    spools: list[Spool] = []

    class Recorded(Spool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            spools.append(self)

    def plan(payloads: bool) -> tuple[list[Any], int]:
        spools.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "Spool", Recorded)
            plans = Reconciler(h.config, h.store, environ=ENV).plan(
                RunOptions(full=full), payloads=payloads
            )
        return [p.summary(50) for p in plans], sum(s.size for s in spools)

    whole, whole_bytes = plan(payloads=True)
    shown, shown_bytes = plan(payloads=False)
    assert shown == whole
    assert all(s["rejected"] == 2 for s in shown)  # the two keys found twice
    assert shown_bytes < whole_bytes / 5, (shown_bytes, whole_bytes)
    h.close()
