"""A run is a pipeline: requests go out while the source is still being read.

Chunks of 5 records and groups of 4 changes (both made small here), UserFlux and Vambe
fakes, and a source that pauses mid-read until the targets have received writes (or a
timeout passes, which the tests then see): what is sent before the read ends, a key found
twice after its first copy went out, and a run that fails after sending began.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.model import Record
from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from tests.support import (
    ENV,
    Harness,
    acknowledged,
    catalog,
    expected_userflux,
    expected_vambe,
    userflux_target,
    vambe_target,
)

WAIT_S = 10.0
"""How long the source waits for the targets before reading on regardless."""


pytestmark = pytest.mark.usefixtures("small_groups")


def both(tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe) -> Harness:
    block = vambe.add_block(name="catalog")
    return Harness(
        tmp_path,
        [userflux_target(userflux.url), vambe_target(vambe.url, block, batch_size=2)],
    )


def writes(server: FakeUserflux | FakeVambe, key: str | None = None) -> int:
    """Write requests the fake received (naming ``key`` in their body, if given)."""
    return sum(
        1
        for r in server.requests
        if r.method in ("POST", "DELETE")
        and (key is None or key.encode() in r.body or key in r.path)
    )


class Pausing:
    """A source of the Python API that yields ``records`` and, before the record at each
    index of ``pauses``, waits until its condition holds (or ``WAIT_S``), noting whether
    it did."""

    can_prove_complete = True

    def __init__(self, records: list[Record], pauses: dict[int, Callable[[], bool]]) -> None:
        self.records = records
        self.pauses = pauses
        self.held: dict[int, bool] = {}
        """Index -> whether the condition held before the read went on."""

    def read(self) -> Iterator[Record]:
        for index, record in enumerate(self.records):
            if index in self.pauses:
                self.held[index] = _until(self.pauses[index])
            yield record

    def describe(self) -> str:
        return "pausing"

    def confirm_absent(self, keys: list[str]) -> set[str] | None:
        return None


def _until(condition: Callable[[], bool]) -> bool:
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


def run(h: Harness, source: Pausing, **options: Any) -> Any:
    return Reconciler(h.config, h.store, environ=ENV, source=source).sync(RunOptions(**options))


def test_requests_go_out_and_are_acknowledged_while_the_read_goes_on(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
) -> None:
    h = both(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(40)

    def acknowledged_by_both() -> bool:
        return all(len(acknowledged(h.store, name)) >= 4 for name in ("uf", "vb"))

    source = Pausing(records, {30: acknowledged_by_both})
    report = run(h, source)

    # 30 records read: 6 chunks, 6 groups of 4 changes planned, all but the newest put
    assert source.held == {30: True}, "nothing was acknowledged before the read ended"
    assert report.ok
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    # the same requests as a plan made in one piece: one per product, batches of 2
    assert [t.requests for t in report.targets] == [40, 20]
    assert [t.created for t in report.targets] == [40, 40]
    h.close()


def test_a_plan_says_what_a_run_sends_while_reading(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
) -> None:
    h = both(tmp_path, userflux, vambe)
    records = catalog(37)
    h.write(records)
    planned = h.plan()
    report = run(h, Pausing(records, {}))

    assert report.ok
    for plan, target in zip(planned, report.targets, strict=True):
        assert len(plan.operations) == target.requests
        assert sum(plan.counts().values()) == target.created == 37
    h.close()


def test_a_key_found_twice_after_its_first_copy_went_out_is_restored(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe
) -> None:
    h = both(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(30)
    h.write(records)
    assert h.sync().ok
    before = {name: acknowledged(h.store, name) for name in ("uf", "vb")}
    changed = dict(records[0], title="Changed early")
    new = catalog(1, start=900)[0]
    others = [dict(r, price="77.00") for r in records[1:30]]
    # the changed and the new product first; their copies once both targets have taken them
    read = [changed, new, *others, dict(changed, title="Impostor"), new]
    userflux.reset_requests()
    vambe.reset_requests()

    def sent_both() -> bool:
        return all(
            writes(server, key) >= 1
            for server in (userflux, vambe)
            for key in (changed["sku"], new["sku"])
        )

    source = Pausing(read, {len(read) - 2: sent_both})
    report = run(h, source)

    assert source.held == {len(read) - 2: True}, "the first copies never went out"
    # neither copy stays: the older version is back on the targets and in state, the
    # new product is gone again; everything else is updated
    assert userflux.products == expected_userflux([records[0], *others])
    assert vambe.block_products(block) == expected_vambe([records[0], *others])
    for name, target in zip(("uf", "vb"), report.targets, strict=True):
        acked = acknowledged(h.store, name)
        assert acked[changed["sku"]] == before[name][changed["sku"]]
        assert new["sku"] not in acked
        assert target.rejected == 2
        assert any("restored after the run's other requests" in n for n in target.plan["notes"])
        reasons = {r.key: r.reason for r in h.store.open_rejections(name)}
        assert "duplicate key" in reasons[new["sku"]]
    h.close()


@pytest.mark.parametrize("last", [2, 6, 7])
def test_a_key_found_twice_in_the_reads_last_group_is_never_sent(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, last: int
) -> None:
    h = both(tmp_path, userflux, vambe)
    records = catalog(30)
    new = catalog(1, start=900)[0]
    # the first copy among the ``last`` records: its group is held back to the read's end
    split = 30 - last + 1
    read = [*records[:split], new, *records[split:], dict(new, title="Impostor")]
    report = run(h, Pausing(read, {}))

    assert writes(userflux, new["sku"]) == writes(vambe, new["sku"]) == 0
    for target in report.targets:
        assert target.rejected == 1 and target.created == 30 and target.deleted == 0
    h.close()


def test_a_run_that_fails_after_sending_began_keeps_what_was_acknowledged(
    tmp_path: Path, userflux: FakeUserflux, vambe: FakeVambe, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = both(tmp_path, userflux, vambe)
    block = h.config.targets[1].block_id  # type: ignore[union-attr]
    records = catalog(40)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("deciding broke")

    def acknowledged_by_both() -> bool:
        return all(len(acknowledged(h.store, name)) >= 4 for name in ("uf", "vb"))

    monkeypatch.setattr("syncd.reconcile.decide", broken)
    source = Pausing(records, {30: acknowledged_by_both})
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="deciding broke"):
        run(h, source)

    assert source.held == {30: True}
    assert time.monotonic() - started < WAIT_S + 20
    assert not [t for t in threading.enumerate() if t.name.startswith("syncd-target")]
    # state claims nothing the targets don't hold, and the targets took only what was put
    uf, vb = acknowledged(h.store, "uf"), acknowledged(h.store, "vb")
    assert 4 <= len(uf) < 40 and 4 <= len(vb) < 40
    held_uf = {key for (_, key) in userflux.products}
    assert set(uf) <= held_uf
    assert set(vb) <= set(vambe.block_products(block))
    monkeypatch.undo()

    h.write(records)
    report = h.sync()  # the next run carries on
    assert report.ok
    assert userflux.products == expected_userflux(records)
    assert vambe.block_products(block) == expected_vambe(records)
    h.close()


def typed(record: Record, payload: dict[str, Any]) -> dict[str, Any]:
    """A ``mapping.callable``: the product's UserFlux type from its record's ``kind``."""
    return dict(payload, typeId=record.get("kind") or "product")


def test_a_key_found_twice_whose_first_copy_changed_its_type_is_restored_under_the_old_one(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """The first copy moved the product to another UserFlux type (re-created there, the
    old one deleted); the restore puts it back under its old type and removes the new."""
    target = userflux_target(userflux.url)
    target["mapping"]["callable"] = f"{__name__}:typed"
    h = Harness(tmp_path, [target])
    records = catalog(30)
    h.write(records)
    assert h.sync().ok
    sku = records[0]["sku"]
    before = acknowledged(h.store, "uf")[sku]
    moved = dict(records[0], kind="gadget", title="Moved")
    others = [dict(r, price="77.00") for r in records[1:]]  # changed: groups go out
    read = [moved, *others, dict(records[0], title="Impostor")]

    def moved_and_acknowledged() -> bool:
        return acknowledged(h.store, "uf").get(sku) not in (None, before)

    source = Pausing(read, {len(read) - 1: moved_and_acknowledged})
    report = run(h, source)

    assert source.held == {len(read) - 1: True}, "the first copy was never acknowledged"
    assert ("gadget", sku) not in userflux.products
    assert userflux.products == expected_userflux([records[0], *others])
    assert acknowledged(h.store, "uf")[sku] == before
    assert report.targets[0].rejected == 1
    h.close()
