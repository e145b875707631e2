"""Review of "the payload spool stays bounded": defects found, each pinned by a test.

Chunks of 5 records and groups of 4 changes, 1 KB spool segments (``small_groups``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.sandbox.server import Fault
from tests.support import Harness, catalog, userflux_target
from tests.test_loop_streaming import Pausing, run, writes

pytestmark = pytest.mark.usefixtures("small_groups")


def fatal_after_first_write(userflux: FakeUserflux) -> None:
    """UserFlux answers 401 (fatal: the sender halts) to every write."""
    userflux.inject(Fault(status=401, body='{"error": "key"}', times=None))


def test_groups_put_after_the_sender_halted_still_count_when_a_key_is_found_twice(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """The sender halts early (a fatal answer); the read goes on and its groups are only
    counted (``Outbox.put`` after ``halt``). A key found twice makes ``cancel`` recount
    the tally: the groups counted but not stored must stay counted, so the report says
    every product planned was not sent, as it does without a duplicate."""

    def not_sent(records: list[dict[str, Any]]) -> int:
        (tmp_path / str(len(records))).mkdir(exist_ok=True)
        h = Harness(tmp_path / str(len(records)), [userflux_target(userflux.url)])
        userflux.reset_requests()
        source = Pausing(records, {20: lambda: writes(userflux) >= 1})
        report = run(h, source)
        assert source.held == {20: True}
        [uf] = report.targets
        assert uf.outcome == "failed", uf
        h.close()
        return uf.failed + uf.not_attempted

    fatal_after_first_write(userflux)
    records = catalog(60)
    assert not_sent(records) == 60
    # the same catalog and one more record repeating the last key: 59 products planned
    assert not_sent([*records, dict(records[-1], title="Twin")]) == 59


def test_a_mirrored_refresh_is_not_fed_to_its_sender_one_group_at_a_time(
    tmp_path: Path, vambe: FakeVambe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirrored full refresh (Vambe ``mirror_block``, not streamed) has its whole plan
    in the spool by the read's end, and nothing of it is released before the outbox is
    closed: waiting for room can't bring the spool under ``spool_max_mb``, it only makes
    the deciding stage put each group once the sender has finished every one before (the
    sender's pipeline drained between groups, and the other targets' decisions wait)."""
    from syncd import reconcile
    from syncd.config import parse_config
    from syncd.stages import deciding
    from syncd.stages.outbox import Outbox
    from tests.support import expected_vambe, vambe_target

    backlog_at_close: list[int] = []

    class Recorded(Outbox):
        def close(self) -> None:
            backlog_at_close.append(self.backlog)
            super().close()

    monkeypatch.setattr(reconcile, "Outbox", Recorded)
    monkeypatch.setattr(deciding, "MIRROR_MAX_PRODUCTS", 10)  # batches, not one upsert
    block = vambe.add_block(name="catalog")
    h = Harness(tmp_path, [vambe_target(vambe.url, block, batch_size=2, mirror_block=True)])
    h.raw["schedule"] = {"spool_max_mb": 0.003}
    h.config = parse_config(h.raw, environ=h.environ)
    records = catalog(80)
    h.write(records)
    vambe.inject(Fault(delay=0.02, times=None))

    report = h.sync()

    assert report.ok, report
    assert vambe.block_products(block) == expected_vambe(records)
    # 20 groups of 4 put at the read's end: the sender had not finished them all then
    assert backlog_at_close[0] > 3, backlog_at_close
    h.close()


def test_a_sender_that_dies_while_the_read_waits_for_room_does_not_hang_the_run(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked sound: state fails under UserFlux's sender (its acknowledgements can't be
    recorded) while the read waits for it; the read goes on and the run raises."""
    import threading
    import time

    from syncd.state.sql import SqlStateStore
    from tests.test_spool_bounded import behind

    h = behind(tmp_path, userflux, vambe)
    h.write(catalog(150))
    real = SqlStateStore.apply_acks
    calls = {"uf": 0}

    def failing(self: Any, target: str, *args: Any, **kwargs: Any) -> Any:
        if target == "uf":
            calls["uf"] += 1
            if calls["uf"] > 2:
                raise RuntimeError("state went away")
        return real(self, target, *args, **kwargs)

    monkeypatch.setattr(SqlStateStore, "apply_acks", failing)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="state went away"):
        h.sync()
    assert time.monotonic() - started < 30
    assert not [t for t in threading.enumerate() if t.name.startswith("syncd-target")]
    h.close()


def test_a_stop_while_the_read_waits_for_room_ends_the_run(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
) -> None:
    """Checked sound: SIGTERM (the run's stop event) while the read waits for UserFlux."""
    import threading
    import time

    from syncd.reconcile import Reconciler
    from tests.support import ENV
    from tests.test_spool_bounded import behind

    h = behind(tmp_path, userflux, vambe)
    h.write(catalog(300))
    stop = threading.Event()
    threading.Timer(0.4, stop.set).start()
    started = time.monotonic()
    report = Reconciler(h.config, h.store, environ=ENV, stop=stop).sync()
    assert time.monotonic() - started < 30
    assert [t.outcome for t in report.targets] == ["interrupted", "interrupted"], report
    h.close()


def test_a_vambe_batch_refused_and_split_in_a_released_run_keeps_state_true(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
) -> None:
    """Checked sound: batches of 2 refused for one product are split into halves (tracked
    to their group), the group is released only once the halves are over, and the refused
    product is restored in state from what the sender kept."""
    import json

    from syncd import reconcile
    from syncd.stages.outbox import Outbox
    from tests.support import acknowledged, expected_vambe
    from tests.test_loop_streaming import both
    from tests.test_spool_bounded import drained

    made: list[Outbox] = []

    class Recorded(Outbox):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(reconcile, "Outbox", Recorded)
    try:
        h = both(tmp_path, userflux, vambe)
        block = h.config.targets[1].block_id  # type: ignore[union-attr]
        records = catalog(60)
        bad = records[2]["sku"]

        def about(method: str, path: str, body: object) -> bool:
            return bad in json.dumps(body)

        vambe.inject(Fault(status=400, body='{"error": "no"}', times=None, match=about))
        source = Pausing(records, {i: drained(made) for i in range(20, 60, 10)})
        report = run(h, source)
        assert all(source.held.values())
        vb = report.targets[1]
        assert vb.rejected == 1, vb
        assert vambe.block_products(block) == expected_vambe(
            [r for r in records if r["sku"] != bad]
        )
        acked = acknowledged(h.store, "vb")
        assert bad not in acked and len(acked) == 59
        assert made[1].spool.size - made[1].spool.live > 5_000
    finally:
        mp.undo()
    h.close()


def test_the_read_waiting_for_a_target_is_logged_once_not_for_every_group(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
) -> None:
    """README: the wait is "logged once as ``syncd.run.waiting_for_target``". Once a
    target is that far behind, nearly every group put waits again: a line for each group
    floods the log (~1500 for a 3M-product first sync)."""
    from structlog.testing import capture_logs

    from tests.test_spool_bounded import behind

    h = behind(tmp_path, userflux, vambe)
    h.write(catalog(150))
    with capture_logs() as logs:
        report = h.sync()
    assert report.ok
    waits = [e for e in logs if e["event"] == "syncd.run.waiting_for_target"]
    assert 1 <= len(waits) <= 2, len(waits)  # once per target at most (UserFlux, Vambe)
    h.close()


def journal_spools(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The spools the outboxes make for their journals (recorded as they are made)."""
    from syncd.model import Spool
    from syncd.stages import outbox

    made: list[Any] = []

    class Recorded(Spool):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(outbox, "Spool", Recorded)
    return made


def test_an_update_heavy_run_keeps_its_disk_bounded_journal_included(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal keeps the versions sent updates replace up to spool_max_mb, then only
    keys: an update-heavy run's journal does not grow with the catalog."""
    from syncd.config import parse_config
    from tests.test_loop_streaming import both

    h = both(tmp_path, userflux, vambe)
    records = [dict(r, body="<p>" + "long text " * 40 + "</p>") for r in catalog(150)]
    h.write(records)
    assert h.sync().ok
    journals = journal_spools(monkeypatch)
    h.raw["schedule"] = {"spool_max_mb": 0.003}
    h.config = parse_config(h.raw, environ=h.environ)
    h.write([dict(r, price="99.00") for r in records])
    assert h.sync().ok
    assert journals
    for journal in journals:
        # up to 3 KB and the group that crossed it (4 replaced versions of ~800 bytes),
        # then keys alone (at most ~40 bytes a product); every replaced version: ~100 KB
        assert journal.peak < 3_000 + 4_000 + 40 * 150, journal.peak
    h.close()


def test_a_duplicate_whose_replaced_version_was_not_kept_stays_as_sent_and_says_so(
    tmp_path: Path, userflux: FakeUserflux, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past spool_max_mb of journal, a key found twice whose update went out can't be
    restored: the target keeps the copy sent, state says so, and the plan's notes say why."""
    from syncd.config import parse_config
    from tests.support import acknowledged, expected_userflux

    h = Harness(tmp_path, [userflux_target(userflux.url)])
    records = [dict(r, title=r["title"] + "-long" * 60) for r in catalog(60)]
    h.write(records)
    assert h.sync().ok
    h.raw["schedule"] = {"spool_max_mb": 0.001}
    h.config = parse_config(h.raw, environ=h.environ)
    edited = [dict(r, price="99.00") for r in records]
    late = edited[40]  # its update goes out after the journal is full
    read = [*edited, dict(late, title="Impostor")]
    sku = late["sku"]
    source = Pausing(read, {len(read) - 1: lambda: writes(userflux, sku) >= 1})
    report = run(h, source)

    assert source.held == {len(read) - 1: True}
    [uf] = report.targets
    assert any("was not kept" in note for note in uf.plan["notes"]), uf.plan["notes"]
    # the copy sent stays on the target, and state holds what the target acknowledged
    assert userflux.products == expected_userflux(edited)
    acked = acknowledged(h.store, "uf")[sku]
    assert b"99" in acked.canonical
    assert uf.rejected == 1
    h.close()


def test_a_plan_put_after_its_sender_halted_still_says_how_many_requests_it_has(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """After a fatal answer the sender halts and the groups the read still puts are only
    counted, not stored: the plan's request count (run report, run details, status) must
    still be the whole plan's, as it was before groups went unstored."""
    fatal_after_first_write(userflux)
    h = Harness(tmp_path, [userflux_target(userflux.url)])
    source = Pausing(catalog(60), {20: lambda: writes(userflux) >= 1})
    report = run(h, source)
    assert source.held == {20: True}
    [uf] = report.targets
    assert uf.outcome == "failed"
    assert uf.plan["changes"] == {"create": 60}
    assert uf.plan["request_count"] == 60, uf.plan["request_count"]  # one per product
    assert uf.plan["status"] == "pending"
    h.close()


def test_a_group_emptied_by_cancel_is_finished_and_the_run_ends(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """Checked sound: a slow target has not taken the group of records 40-43 when the read
    ends; each of them is found again at the end (duplicates), so ``cancel`` empties that
    group; taking it finishes it, the spool is released and the run ends."""
    from syncd.config import parse_config
    from tests.support import expected_userflux

    h = Harness(tmp_path, [userflux_target(userflux.url)])
    h.raw["schedule"] = {"spool_max_mb": 1}
    h.config = parse_config(h.raw, environ=h.environ)
    records = catalog(60)
    twins = [dict(r, title="Twin") for r in records[40:44]]
    h.write([*records, *twins])
    userflux.inject(Fault(delay=0.05, times=None))
    report = h.sync()
    [uf] = report.targets
    assert uf.rejected == 4, uf
    assert userflux.products == expected_userflux(records[:40] + records[44:])
    h.close()


def test_requests_abandoned_at_shutdown_are_remembered_in_doubt(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """Checked sound: a stop with a short grace abandons requests in flight; their groups
    are finished (released) and their writes, kept by the sender, recorded in doubt."""
    import threading

    from syncd.config import parse_config
    from syncd.reconcile import Reconciler
    from tests.support import ENV

    h = Harness(tmp_path, [userflux_target(userflux.url)])
    h.raw["schedule"] = {"shutdown_grace_s": 0.1}
    h.config = parse_config(h.raw, environ=h.environ)
    h.write(catalog(60))
    userflux.inject(Fault(delay=1.5, times=None))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    report = Reconciler(h.config, h.store, environ=ENV, stop=stop).sync()
    [uf] = report.targets
    assert uf.outcome == "interrupted", uf
    assert uf.in_doubt > 0, uf
    assert h.store.count_doubts("uf", now=float("inf"))[0] == uf.in_doubt
    h.close()
