"""Delete guards end to end: a suspicious run sends no deletes and no whole-block upsert,
still pushes the safe creates and updates, is recorded as blocked, exits 1 and says how
to let it through once (``syncd sync --allow-deletes``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.reconcile import RunOptions
from tests.robustness.helpers import (
    UF_NAME,
    VB_NAME,
    Sandbox,
    box,
    deleted_keys,
    expected_vambe,
    keys_of,
    make_record,
    make_records,
    state_rows,
)

__all__ = ["box"]


def populated(box: Sandbox, n: int = 100, **config: object) -> list[dict]:
    records = make_records(n)
    box.write_catalog(records)
    box.configure(**config)  # type: ignore[arg-type]
    report = box.sync()
    assert report.ok, report
    box.assert_converged(records)
    box.mark()
    return records


def deletes_sent(box: Sandbox) -> list[str]:
    return list(deleted_keys(*box.new_requests()))


def upserts_sent(box: Sandbox) -> int:
    _, vb = box.new_requests()
    return sum(1 for r in vb if r.method == "POST" and "/upsert/" in r.path)


@pytest.fixture
def hundred(box: Sandbox) -> Iterator[tuple[Sandbox, list[dict]]]:
    yield box, populated(box)


# -- the CLI: blocked run, message, exit code, history, then --allow-deletes once ---------


@pytest.mark.slow
def test_a_tripped_guard_holds_deletes_pushes_safe_changes_and_says_how_to_allow_them(
    hundred: tuple[Sandbox, list[dict]],
) -> None:
    box, records = hundred
    kept = records[:70]  # 30 of 100 gone: over max_delete_fraction=20%
    kept[0] = make_record(1, version=1)
    kept[1] = make_record(2, version=1)
    new = [make_record(500), make_record(501)]
    edited = kept + new
    box.write_catalog(edited)

    result = box.cli("sync")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "syncd sync --allow-deletes" in result.stderr
    assert "max_delete_fraction" in result.stderr
    assert deletes_sent(box) == []
    assert upserts_sent(box) == 0
    # The safe creates and updates went through on both targets.
    uf, vb = box.uf_products(), box.vb_products()
    assert uf[("product", "P00500")]["properties"]["name"] == "Product 500"
    assert uf[("product", "P00001")]["properties"]["name"] == "Product 1 v1"
    assert vb["P00501"]["name"] == "Product 501"
    assert vb["P00002"]["name"] == "Product 2 v1"
    # ...and nothing was removed.
    assert len(uf) == 102 and len(vb) == 102
    # Recorded as blocked, with the numbers.
    runs = {r["target"]: r for r in box.history()[:2]}
    for name in (UF_NAME, VB_NAME):
        run = runs[name]
        assert run["outcome"] == "blocked", run
        assert (run["created"], run["updated"], run["deleted"], run["held"]) == (2, 2, 0, 30)
        assert "--allow-deletes" in run["error"]
    # The held deletes stay in state, so the next run holds them again.
    assert len(state_rows(box.state_path, UF_NAME)) == 102

    again = box.cli("sync")
    assert again.returncode == 1
    box.mark()

    allowed = box.cli("sync", "--allow-deletes")

    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    gone = keys_of(records) - keys_of(edited)
    assert sorted(deletes_sent(box)) == sorted(list(gone) * 2)  # once per target
    box.assert_converged(edited)
    runs = {r["target"]: r for r in box.history()[:2]}
    assert {r["outcome"] for r in runs.values()} == {"ok"}
    assert {r["deleted"] for r in runs.values()} == {30}


def test_allow_deletes_lets_one_run_through_and_the_next_one_is_guarded_again(
    hundred: tuple[Sandbox, list[dict]],
) -> None:
    box, records = hundred
    box.write_catalog(records[:60])
    assert box.sync(RunOptions(allow_deletes=True)).ok
    box.assert_converged(records[:60])
    box.mark()

    box.write_catalog(records[:30])  # half of what is left
    report = box.sync()

    assert [t.outcome for t in report.targets] == ["blocked", "blocked"]
    assert report.exit_code == 1
    assert deletes_sent(box) == []
    box.assert_converged(records[:60])


def test_a_blocked_run_does_not_lower_the_bar_for_the_next_one(box: Sandbox) -> None:
    records = populated(box, guards={"max_delete_fraction": 1.0, "min_source_fraction": 0.5})
    box.write_catalog(records[:10])

    first = box.sync()
    second = box.sync()  # the next night, nothing fixed, nobody allowed anything

    assert [t.outcome for t in first.targets] == ["blocked", "blocked"]
    assert [t.outcome for t in second.targets] == ["blocked", "blocked"]
    assert deletes_sent(box) == []
    box.assert_converged(records)


# -- a backend that suddenly returns nothing, or a tenth ---------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.1], ids=["empty", "ten-percent"])
@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
def test_a_source_that_suddenly_shrinks_deletes_nothing_on_either_target(
    box: Sandbox, fraction: float, full: bool
) -> None:
    records = populated(box, mirror_block=True)
    shrunk = records[: int(len(records) * fraction)]
    box.write_catalog(shrunk)

    report = box.sync(RunOptions(full=full))

    assert report.exit_code == 1
    for target in report.targets:
        assert target.outcome == "blocked", target
        assert target.deleted == 0
        assert target.held == len(records) - len(shrunk)
        assert "--allow-deletes" in (target.error or "")
    assert deletes_sent(box) == []
    assert upserts_sent(box) == 0  # mirror_block is on, but the guard holds the upsert
    assert box.vambe is not None and box.vambe.upsert_calls[box.block] == 1  # the first run's
    box.assert_converged(records)
    assert len(state_rows(box.state_path, UF_NAME)) == len(records)
    assert len(state_rows(box.state_path, VB_NAME)) == len(records)


def test_plan_shows_the_held_deletes_and_the_way_to_allow_them(
    hundred: tuple[Sandbox, list[dict]],
) -> None:
    box, records = hundred
    box.write_catalog(records[:10])

    result = box.cli("plan")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("HELD: 90 deletes not sent") == 2
    assert "syncd sync --allow-deletes" in result.stdout
    assert box.userflux is not None and box.vambe is not None
    uf, vb = box.new_requests()
    assert all(r.method == "GET" for r in [*uf, *vb])  # nothing written: reads and probes


def test_max_delete_count_holds_one_delete_too_many(box: Sandbox) -> None:
    guards = {"max_delete_fraction": 1.0, "max_delete_count": 2}
    records = populated(box, n=20, guards=guards)

    box.write_catalog(records[3:])  # 3 deletes
    report = box.sync()
    assert [t.outcome for t in report.targets] == ["blocked", "blocked"]
    assert all("max_delete_count=2" in (t.error or "") for t in report.targets)
    assert deletes_sent(box) == []

    box.write_catalog(records[2:])  # 2 deletes: within the limit
    report = box.sync()
    assert report.ok, report
    assert sorted(deletes_sent(box)) == ["P00001", "P00001", "P00002", "P00002"]
    box.assert_converged(records[2:])


def test_a_source_read_that_fails_is_never_overridable(
    hundred: tuple[Sandbox, list[dict]], tmp_path: Path
) -> None:
    box, records = hundred
    text = "".join(__import__("json").dumps(r) + "\n" for r in records[:50])
    box.catalog.write_text(text + '{"id": "P00051", "title": "cut sh', encoding="utf-8")

    report = box.sync(RunOptions(allow_deletes=True, full=True))

    assert report.exit_code == 1
    assert not report.source_complete
    assert "truncated" in (report.source_error or "")
    assert [t.outcome for t in report.targets] == ["failed", "failed"]
    assert deletes_sent(box) == []
    assert upserts_sent(box) == 0
    box.assert_converged(records)


# -- a whole-block upsert must carry every product present in the source ---------------


@pytest.mark.parametrize("why", ["bad-value", "duplicate-key", "refused-by-target"])
def test_a_mirrored_upsert_keeps_the_last_good_copy_of_a_product_that_cant_be_pushed(
    box: Sandbox, why: str
) -> None:
    """``rejected = "keep"`` (and a duplicated key, whatever ``rejected`` says): the whole-block
    upsert is still used, carrying the product's last acknowledged version, so the block
    converges while the product stays stale."""
    from syncd.sandbox import Fault
    from tests.robustness.helpers import touches

    records = populated(
        box,
        n=10,
        mirror_block=True,
        extra_target="" if why == "duplicate-key" else 'rejected = "keep"',
    )
    edited = [dict(r) for r in records]
    if why == "bad-value":
        edited[2]["price"] = "abc"
    elif why == "duplicate-key":
        edited.append(dict(edited[2], title="Another product 3"))
    else:
        edited[2] = make_record(3, version=1)
        box.write_catalog(edited)
        assert box.vambe is not None
        box.vambe.inject(Fault(status=400, times=None, match=touches("P00003")))
        box.sync(RunOptions(targets=(VB_NAME,)))  # refused: held until it changes again
        box.vambe.clear_faults()
        box.mark()
    box.write_catalog(edited)

    report = box.sync(RunOptions(full=True, targets=(VB_NAME,)))

    box.assert_no_wrong_delete(keys_of(edited))
    _, vb = box.new_requests()
    assert [r.path for r in vb if r.method == "POST"] == [f"/api/public/product/upsert/{box.block}"]
    held = box.vb_products()
    assert held["P00003"] == expected_vambe([records[2]])["P00003"]  # the last good copy
    assert set(held) == set(keys_of(records))
    [target] = report.targets
    assert any("stale" in note for note in target.plan["notes"])


@pytest.mark.parametrize("why", ["bad-value", "refused-by-target"])
def test_a_mirrored_upsert_withdraws_a_product_that_cant_be_pushed(box: Sandbox, why: str) -> None:
    """The default, ``rejected = "withdraw"``: the whole-block upsert is used and leaves the
    product out, so the block ends as a fresh full sync of the same source would."""
    from syncd.sandbox import Fault
    from tests.robustness.helpers import touches

    records = populated(box, n=10, mirror_block=True)
    edited = [dict(r) for r in records]
    if why == "bad-value":
        edited[2]["price"] = "abc"
    else:
        edited[2] = make_record(3, version=1)
        assert box.vambe is not None
        refuses = touches("P00003")  # its new version, not its delete

        def writing(method: str, path: str, body: object) -> bool:
            return "/delete/" not in path and refuses(method, path, body)

        box.vambe.inject(Fault(status=400, times=None, match=writing))
    box.write_catalog(edited)

    report = box.sync(RunOptions(full=True, targets=(VB_NAME,)))

    [target] = report.targets
    assert target.outcome == "ok", target.error
    assert set(box.vb_products()) == set(keys_of(records)) - {"P00003"}
    box.assert_no_wrong_delete(set(keys_of(records)) - {"P00003"})
