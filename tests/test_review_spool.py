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
