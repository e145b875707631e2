"""Second review of the bounded spool (journal bound, compact journal, hollow plan):
defects found, each pinned by a test.

Chunks of 5 records and groups of 4 changes, 1 KB spool segments (``small_groups``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd.diff import ChangeKind, SentCopy
from syncd.model import Acked, Spool
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.stages.packing import SentCopyPacking
from tests.support import Harness, acknowledged, catalog, expected_userflux, userflux_target
from tests.test_loop_streaming import Pausing, run, writes

pytestmark = pytest.mark.usefixtures("small_groups")


def test_the_compact_journal_keeps_a_create_a_create_even_past_the_bound(
    tmp_path: Path,
) -> None:
    """A create replaces nothing: past the journal's bound it is still restorable (a
    removal), and the packing reads it back as a create, not as an update not kept."""
    spool = Spool(tmp_path)
    copies = [
        SentCopy("a", ChangeKind.CREATE, None),
        SentCopy("b", ChangeKind.UPDATE, Acked("b", b"h", b"{}")),
        SentCopy("c", ChangeKind.UPDATE, None, False),
    ]
    packing = SentCopyPacking()
    assert packing.unpack(packing.pack(copies, spool), spool) == copies
    spool.close()


def test_a_duplicate_created_after_the_journal_is_full_is_still_removed(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """Past spool_max_mb of journal, a key found twice whose first copy was a create is
    removed as before: a create needs no replaced version kept (the journal's bound is
    about replaced versions), and the plan must not call it an update not kept."""
    from syncd.config import parse_config

    h = Harness(tmp_path, [userflux_target(userflux.url)])
    records = [dict(r, title=r["title"] + "-long" * 60) for r in catalog(40)]
    h.write(records)
    assert h.sync().ok
    h.raw["schedule"] = {"spool_max_mb": 0.001}
    h.config = parse_config(h.raw, environ=h.environ)
    edited = [dict(r, price="99.00") for r in records]  # fill the journal past its bound
    new = catalog(20, start=900)
    late = new[10]  # created after the journal is full
    read = [*edited, *new, dict(late, title="Impostor")]
    sku = late["sku"]
    source = Pausing(read, {len(read) - 1: lambda: writes(userflux, sku) >= 1})
    report = run(h, source)

    assert source.held == {len(read) - 1: True}
    [uf] = report.targets
    notes = uf.plan["notes"]
    assert not any("was not kept" in note for note in notes), notes
    assert any("1 removed, new this run" in note for note in notes), notes
    kept = [*edited, *(r for r in new if r["sku"] != sku)]
    assert userflux.products == expected_userflux(kept)
    assert sku not in acknowledged(h.store, "uf")
    h.close()


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("full", [False, True])
def test_a_hollow_plan_says_what_the_whole_plan_says_guards_and_rejections_included(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, full: bool, mirror: bool
) -> None:
    """``syncd plan``'s hollow plan equals the whole plan's summary and rendering for any
    sample size: deletes held by a guard, a rejected product, a key found twice."""
    from syncd.reconcile import Reconciler, RunOptions
    from syncd.report import render_plan
    from tests.support import ENV, vambe_target

    if True:
        block = vambe.add_block(name="catalog")
        vb = vambe_target(vambe.url, block, batch_size=2, mirror_block=mirror)
        h = Harness(tmp_path, [userflux_target(userflux.url), vb])
        records = [dict(r, body="<p>" + "text " * 50 + "</p>") for r in catalog(40)]
        h.write(records)
        assert h.sync().ok
        kept = [dict(r, price="55.00") for r in records[:15]] + records[15:18]
        h.write(
            [
                *kept,
                *catalog(25, start=500),
                dict(records[1], title="Twin"),
                dict(catalog(1, start=800)[0], price=0),
            ]
        )

        def plan(payloads: bool) -> list[Any]:
            plans = Reconciler(h.config, h.store, environ=ENV).plan(
                RunOptions(full=full), payloads=payloads
            )
            return [
                (p.summary(n), render_plan(p, n), p.counts(), p.request_count)
                for p in plans
                for n in (0, 1, 3, 200)
            ]

        whole, shown = plan(True), plan(False)
        assert shown == whole
        assert any(s["held"] for s, *_ in shown), [s["held"] for s, *_ in shown]
        assert all(s["rejected"] >= 1 for s, *_ in shown), [s["rejected"] for s, *_ in shown]
        h.close()
