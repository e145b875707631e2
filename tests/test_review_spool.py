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
