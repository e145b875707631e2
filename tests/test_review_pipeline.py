"""Review of the pipelined run (commit 8a701b0): defects found by a failing test first.

Chunks of 5 records and groups of 4 changes (as in ``test_loop_streaming``), so groups go
out while the read goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd import reconcile
from syncd.sandbox import FakeUserflux
from syncd.sandbox.server import Fault
from tests.support import (
    KEY,
    Harness,
    acknowledged,
    catalog,
    expected_userflux,
    expected_vambe,
    userflux_target,
    vambe_target,
)
from tests.test_loop_streaming import WAIT_S, Pausing, _until, run, writes

pytestmark = pytest.mark.usefixtures("small_groups")


def _hash(h: Harness, key: str) -> bytes | None:
    """The hash the target acknowledged for ``key`` (None: none, or a write in flight)."""
    acked = acknowledged(h.store, "uf").get(key)
    return None if acked is None else acked.hash


def test_a_skipped_old_copy_of_a_key_whose_new_copy_was_acked_mid_read_is_a_duplicate(
    tmp_path: Path, userflux: FakeUserflux, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fingerprint skipping: a changed row of a key is parsed, sent and acknowledged while
    the read goes on (the ack writes the new row's fingerprint into products.source_hash);
    a verbatim copy of the key's old row, later in the read, is skipped as known. Before
    the pipeline ``duplicates()`` found the key through the old fingerprint; it must still."""
    h = Harness(tmp_path, [userflux_target(userflux.url)])
    records = catalog(30)
    h.write(records)
    assert h.sync().ok
    sku = records[0]["sku"]
    before = acknowledged(h.store, "uf")[sku]
    # the first 13 rows changed (enough for groups to go out during the read), then the
    # rest unchanged, then the old row of the first product again, verbatim
    changed = [dict(r, price="55.00") for r in records[:13]]
    h.write([*changed, *records[13:], records[0]])

    real = reconcile.decide
    landed: list[bool] = []

    def slow_read_end(*args: Any, **kwargs: Any) -> Any:
        # a read long enough for the first group's acks to land before it ends
        landed.append(_until(lambda: _hash(h, sku) not in (None, before.hash)))
        return real(*args, **kwargs)

    monkeypatch.setattr(reconcile, "decide", slow_read_end)
    report = h.sync()

    assert landed == [True], "the changed copy was not acknowledged during the read"
    reasons = {r.key: r.reason for r in h.store.open_rejections("uf")}
    assert "duplicate key" in reasons.get(sku, ""), report.targets[0].plan["notes"]
    h.close()


def _impostor(method: str, path: str, body: object) -> bool:
    return isinstance(body, dict) and "Impostor" in json.dumps(body)


def test_a_key_found_twice_whose_other_copy_the_target_refused_is_not_left_there(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """A new key read twice, both copies sent while the read goes on; the target takes the
    first and refuses the second (400). Neither copy may stay on the target: a duplicate
    key is pushed in neither copy (and state must not lose track of what the target holds)."""
    h = Harness(tmp_path, [userflux_target(userflux.url)])
    records = catalog(30)
    new = catalog(1, start=900)[0]
    userflux.inject(Fault(status=400, body="bad product", times=None, match=_impostor))
    # the second copy far enough from the read's end that its group goes out during it
    read = [new, *records[:10], dict(new, title="Impostor"), *records[10:]]
    source = Pausing(read, {len(read) - 1: lambda: writes(userflux, "Impostor") >= 1})
    report = run(h, source)

    assert source.held == {len(read) - 1: True}, "the second copy did not go out mid-read"
    held = {key for (_, key) in userflux.products}
    acked = acknowledged(h.store, "uf")
    # neither copy stays, or state at least knows what the target holds (a later run can
    # then remove it); a product on the target that state forgot is never deleted
    assert new["sku"] not in held or new["sku"] in acked, report.targets[0].plan["notes"]
    assert new["sku"] not in held
    h.close()


def test_a_key_found_twice_is_restored_whichever_copy_landed_last(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """Copies of a key in flight together land in any order (a retry, concurrency): the
    restore must bring back the version acknowledged before the run whichever copy the
    target holds, not only undo the last copy planned (an incremental update computed
    against the last copy leaves the other copy's properties behind)."""
    slow = {"max_attempts": 3, "initial_delay_s": 1.0, "max_delay_s": 1.0, "budget_s": 20}
    h = Harness(tmp_path, [userflux_target(userflux.url, retry=slow)])
    records = catalog(30)
    h.write(records)
    assert h.sync().ok
    first = records[0]
    # copy A changes the colour, copy B the price: A fails once, so it lands after B
    a = dict(first, color="Azure")
    b = dict(first, price="99.00", title="Impostor")
    others = [dict(r, price="77.00") for r in records[1:30]]
    userflux.inject(Fault(status=503, times=1, match=lambda m, p, j: "Azure" in json.dumps(j)))
    read = [a, *others[:10], b, *others[10:]]
    source = Pausing(read, {len(read) - 1: lambda: writes(userflux, "Impostor") >= 1})
    report = run(h, source)

    assert source.held == {len(read) - 1: True}, "the second copy did not go out mid-read"
    assert report.targets[0].retries >= 1
    held = userflux.products[("product", first["sku"])]["properties"]
    assert held["color"] == first["color"] and held["price"] == float(first["price"])
    h.close()


def test_a_slow_read_does_not_use_up_the_retry_budget(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """The retry budget (``retry.budget_s``) bounds the time a run retries in; before the
    pipeline it began when sending began, after the read. A sender idle while the read
    goes on (nothing planned yet) must not spend it: a 503 on a product planned after a
    long pause of the read is retried, as it was."""
    retry = {"max_attempts": 3, "initial_delay_s": 0.01, "max_delay_s": 0.05, "budget_s": 1}
    h = Harness(tmp_path, [userflux_target(userflux.url, retry=retry)])
    records = catalog(30)
    late = records[20]["sku"]
    userflux.inject(Fault(status=503, times=1, match=lambda m, p, j: late in json.dumps(j)))

    def later() -> bool:  # the read pauses 1.5 s (a slow page of the source)
        time.sleep(1.5)
        return True

    report = run(h, Pausing(records, {15: later}))

    target = report.targets[0]
    assert target.retries == 1 and target.failed == 0, (target.outcome, target.error)
    assert report.ok and late in acknowledged(h.store, "uf")
    h.close()


def test_a_sender_that_raises_mid_read_fails_the_run_without_hanging(
    tmp_path: Path, userflux: FakeUserflux, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State unreachable from a sender thread while the read goes on: the run raises that
    error (not lost), ends in bounded time, and leaves no sender thread behind."""
    import threading

    from syncd.errors import StateError

    h = Harness(tmp_path, [userflux_target(userflux.url)])
    records = catalog(40)
    real = h.store.mark_unacknowledged
    calls: list[int] = []

    def flaky(target: str, writes: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise StateError("state database unreachable (injected)")
        real(target, writes)

    monkeypatch.setattr(h.store, "mark_unacknowledged", flaky)
    started = time.monotonic()
    with pytest.raises(StateError, match="injected"):
        run(h, Pausing(records, {30: lambda: len(calls) > 1}))
    assert time.monotonic() - started < WAIT_S + 10
    assert not [t for t in threading.enumerate() if t.name.startswith("syncd-target")]
    h.close()


def test_a_target_decided_before_another_targets_decide_failed_is_not_recorded_ok(
    tmp_path: Path, userflux: FakeUserflux, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two targets; deciding the second raises after the first's plan was complete. The
    run fails and the first target's outbox is aborted (its deletes and the rest of its
    plan never go out): its run must not be recorded ``ok`` as if its plan was sent (an
    ``ok`` full refresh is not due again for a week; an ``ok`` run's counts are trusted)."""
    second = FakeUserflux(api_key=KEY).start()
    try:
        h = Harness(tmp_path, [userflux_target(userflux.url), userflux_target(second.url, "uf2")])
        records = catalog(40)
        h.write(records)
        assert h.sync().ok
        # 20 changed, 20 deletes (allowed); the target is slow, so the deletes, put after
        # the last groups of changes, are still in the outbox when the run fails
        h.write([dict(r, price="66.00") for r in records[:20]])
        userflux.inject(Fault(delay=0.3, times=None, match=lambda m, p, j: m == "POST"))
        real = reconcile.decide
        seen: list[str] = []

        def second_breaks(opened: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(opened.name)
            if opened.name == "uf2":
                raise RuntimeError("deciding broke")
            return real(opened, *args, **kwargs)

        monkeypatch.setattr(reconcile, "decide", second_breaks)
        with pytest.raises(RuntimeError, match="deciding broke"):
            h.sync(allow_deletes=True)
        assert seen == ["uf", "uf2"]
        last = h.store.recent_runs("uf", 1)[0]
        deleted = 40 - len(acknowledged(h.store, "uf"))
        assert last.outcome != "ok" or deleted == 20, (last.outcome, last.error, deleted)
        h.close()
    finally:
        second.stop()


def _one_percent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    changed = [dict(r, price="1.00") if i % 9 == 0 else r for i, r in enumerate(records)]
    return changed[:-2] + catalog(3, start=500)  # some changed, 2 gone, 3 new


@pytest.mark.parametrize(
    ("edit", "options"),
    [
        (_one_percent, {"allow_deletes": True}),
        (lambda records: records, {}),  # no change
        (lambda records: records, {"full": True}),
        (_one_percent, {"full": True, "allow_deletes": True}),
        (lambda records: [dict(r, price="2.00") for r in records], {"keys": ("P00003", "P00031")}),
    ],
    ids=["changes-and-deletes", "no-change", "full", "full-with-deletes", "resend"],
)
def test_a_plan_says_exactly_what_the_pipelined_run_sends(
    tmp_path: Path,
    userflux: FakeUserflux,
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    options: dict[str, Any],
) -> None:
    """``syncd plan`` and ``syncd sync`` agree on requests and products, target by target,
    with groups going out mid-read (UserFlux, and Vambe in batches of 2, mirrored)."""
    from syncd.sandbox import FakeVambe

    with FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block(name="catalog")
        h = Harness(
            tmp_path,
            [
                userflux_target(userflux.url),
                vambe_target(vambe.url, block, batch_size=2, mirror_block=True),
            ],
        )
        records = catalog(41)
        h.write(records)
        assert h.sync().ok
        h.write(edit(records))
        planned = h.plan(**options)
        userflux.reset_requests()
        vambe.reset_requests()
        report = h.sync(**options)

        for plan, target in zip(planned, report.targets, strict=True):
            assert len(plan.operations) == target.requests, target.target
            counts = plan.counts()
            assert (counts["create"], counts["update"], counts["delete"]) == (
                target.created,
                target.updated,
                target.deleted,
            ), target.target
        writes_sent = sum(
            1 for r in [*userflux.requests, *vambe.requests] if r.method in ("POST", "DELETE")
        )
        assert writes_sent == sum(t.requests for t in report.targets)
        h.close()


def _on(h: Harness, url: str) -> Harness:
    """``h`` with its state in the database at ``url``."""
    from syncd.config import parse_config
    from syncd.state import open_store

    h.store.close()
    h.raw["state"] = {"url": url}
    h.config = parse_config(h.raw, environ=h.environ)
    h.store = open_store(url)
    return h


@pytest.mark.parametrize("database", ["pg_url", "mariadb_url"])
def test_acks_while_the_read_stages_on_a_server_database(
    tmp_path: Path,
    userflux: FakeUserflux,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    database: str,
) -> None:
    """The sender acknowledges into state while the read stages and compares on the same
    database (its own connection): every product lands once, state matches the target, and
    a skipped old copy of a key acknowledged mid-read is still a duplicate."""
    h = _on(Harness(tmp_path, [userflux_target(userflux.url)]), request.getfixturevalue(database))
    records = catalog(60)
    h.write(records)

    def acked_mid_read() -> bool:
        return len(acknowledged(h.store, "uf")) >= 8

    first = run(h, Pausing(records, {45: acked_mid_read}))
    assert first.ok and len(acknowledged(h.store, "uf")) == 60
    assert first.targets[0].requests == 60
    # as in the SQLite test: the changed copy acknowledged before the read ends
    sku = records[0]["sku"]
    before = _hash(h, sku)
    changed = [dict(r, price="55.00") for r in records[:13]]
    h.write([*changed, *records[13:], records[0]])
    real = reconcile.decide
    monkeypatch.setattr(
        reconcile,
        "decide",
        lambda *a, **k: (_until(lambda: _hash(h, sku) not in (None, before)), real(*a, **k))[1],
    )
    h.sync()
    reasons = {r.key: r.reason for r in h.store.open_rejections("uf")}
    assert "duplicate key" in reasons.get(sku, "")
    held = userflux.products
    assert all(
        acked.canonical and ("product", key) in held
        for key, acked in acknowledged(h.store, "uf").items()
    )
    h.close()


def test_a_key_copied_three_times_across_sent_cancelled_and_held_groups(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """Three copies of an existing key: the first goes out mid-read, the second is in a
    group put but not begun when the read ends (cancelled: its Vambe batch still carries its
    partner), the third in the read's last group (never put). The older version comes back
    on both targets and in state; every other product lands."""
    from syncd.sandbox import FakeVambe

    with FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block(name="catalog")
        h = Harness(
            tmp_path,
            [userflux_target(userflux.url), vambe_target(vambe.url, block, batch_size=2)],
        )
        records = catalog(40)
        h.write(records)
        assert h.sync().ok
        before = {n: acknowledged(h.store, n)[records[0]["sku"]] for n in ("uf", "vb")}
        others = [dict(r, price="8.00") for r in records[1:]]
        copy = [dict(records[0], title=f"Copy {i}") for i in range(3)]
        read = [copy[0], *others[:20], copy[1], *others[20:36], copy[2], *others[36:]]

        def first_sent() -> bool:
            return all(writes(s, "Copy 0") >= 1 for s in (userflux, vambe))

        # slow targets from the first copy on, so a group put late is not begun yet
        for server in (userflux, vambe):
            server.inject(Fault(delay=0.5, times=2, match=lambda m, p, j: m == "POST"))
        source = Pausing(read, {30: first_sent})
        report = run(h, source)

        assert source.held == {30: True}
        assert userflux.products == expected_userflux([records[0], *others])
        assert vambe.block_products(block) == expected_vambe([records[0], *others])
        for name, target in zip(("uf", "vb"), report.targets, strict=True):
            assert acknowledged(h.store, name)[records[0]["sku"]].hash == before[name].hash
            assert target.rejected == 1 and target.updated >= 38
        h.close()


def test_sigterm_during_the_read_after_groups_went_out(
    tmp_path: Path, userflux: FakeUserflux
) -> None:
    """A stop (SIGTERM, lost lease) while the read goes on, after some groups went out: the
    run ends interrupted in bounded time, sends nothing more (no deletes, no undo), and state
    claims acknowledged only what the target holds; the next run carries on."""
    import threading

    from syncd.reconcile import Reconciler, RunOptions
    from tests.support import ENV

    h = Harness(tmp_path, [userflux_target(userflux.url)])
    records = catalog(40)
    h.write(records)
    assert h.sync().ok
    userflux.reset_requests()
    changed = [dict(r, price="4.00") for r in records[:36]] + [dict(records[0], title="Twice")]
    stop = threading.Event()

    def stopped_after_some() -> bool:
        if len(userflux.requests) >= 4:
            stop.set()
            return True
        return False

    source = Pausing(changed, {30: stopped_after_some})
    started = time.monotonic()
    report = Reconciler(h.config, h.store, environ=ENV, source=source, stop=stop).sync(
        RunOptions(allow_deletes=True)
    )
    assert source.held == {30: True}
    assert time.monotonic() - started < WAIT_S + 10
    target = report.targets[0]
    assert target.outcome == "interrupted", (target.outcome, target.error)
    assert target.deleted == 0
    assert not any(r.method == "DELETE" for r in userflux.requests)
    held = userflux.products
    for key, acked in acknowledged(h.store, "uf").items():
        assert (
            held[("product", key)]["properties"]["price"]
            == json.loads(acked.canonical)["properties"]["price"]
        )
    h.close()
