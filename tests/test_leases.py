"""Leases judged on the database's clock, and the targets shared out between replicas."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from syncd.leases import LeaseKeeper, ReplicaHeartbeat, assign_targets
from syncd.state.sql import SqlStateStore

# -- sharing out the targets ---------------------------------------------------------


@pytest.mark.parametrize(("targets", "replicas"), [(6, 3), (7, 3), (2, 5), (1, 1), (12, 4)])
def test_every_target_goes_to_exactly_one_replica_and_each_gets_a_fair_share(
    targets: int, replicas: int
) -> None:
    names = [f"target-{i}" for i in range(targets)]
    live = [f"host:{100 + i}:abcd" for i in range(replicas)]

    assigned = assign_targets(names, live)

    assert sorted(assigned) == sorted(names)
    loads = Counter(assigned.values())
    assert set(loads) <= set(live)
    assert max(loads.values()) <= math.ceil(targets / replicas)
    if targets >= replicas:
        assert len(loads) == replicas  # nobody idles while another does two shares


def test_every_replica_computes_the_same_assignment_whatever_order_it_lists_them() -> None:
    names = [f"t{i}" for i in range(6)]
    live = ["c:3:x", "a:1:x", "b:2:x"]

    assert assign_targets(names, live) == assign_targets(list(reversed(names)), sorted(live))


def test_the_targets_of_a_replica_that_left_go_to_the_others() -> None:
    names = [f"t{i}" for i in range(6)]
    before = assign_targets(names, ["a", "b", "c"])

    after = assign_targets(names, ["a", "b"])

    assert set(after.values()) == {"a", "b"}
    assert Counter(after.values()) == {"a": 3, "b": 3}
    assert {n for n, r in before.items() if r == "c"} <= set(after)


def test_no_replica_means_no_assignment() -> None:
    assert assign_targets(["t0"], []) == {}


# -- one clock for every replica ----------------------------------------------------------


@pytest.fixture
def store(sqlite_url: str):  # type: ignore[no-untyped-def]
    store = SqlStateStore(sqlite_url)
    store.upgrade()
    yield store
    store.close()


def let_time_pass(store: SqlStateStore, table: str, seconds: float) -> None:
    """What waiting does to leases or heartbeats (their expiry comes closer), unslept."""
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET expires_at = expires_at - :s"), {"s": seconds})


def skew(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


@pytest.mark.parametrize("skew_s", [600.0, -600.0])
def test_a_replica_with_a_skewed_clock_does_not_steal_a_live_lease(
    store: SqlStateStore, monkeypatch: pytest.MonkeyPatch, skew_s: float
) -> None:
    owner = LeaseKeeper(store, "owner", ttl=60, lost=threading.Event())
    assert owner.acquire("uf")

    skew(monkeypatch, skew_s)
    thief = LeaseKeeper(store, "thief", ttl=60, lost=threading.Event())

    assert not thief.acquire("uf")
    assert store.lease_holder("uf") == "owner"


def test_a_replica_whose_clock_runs_behind_does_not_keep_an_expired_lease(
    store: SqlStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = threading.Event()
    keeper = LeaseKeeper(store, "slow-clock", ttl=0.3, lost=lost)
    assert keeper.acquire("uf")
    skew(monkeypatch, -600)  # by its own clock the lease has 10 minutes left
    let_time_pass(store, "leases", 60)  # on the server's clock it expired a minute ago

    with keeper:
        assert lost.wait(5)  # its renewal is refused: the run is told to stop

    assert store.lease_holder("uf") is None
    assert store.acquire_lease("uf", "other", ttl=60)


def test_a_heartbeat_reports_replicas_joining_and_leaving_to_its_listener(
    store: SqlStateStore,
) -> None:
    seen: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    heartbeat = ReplicaHeartbeat(store, "a", ttl=60, listener=lambda b, a: seen.append((b, a)))
    assert heartbeat.beat() == ("a",)

    store.beat_replica("b", ttl=60)
    assert heartbeat.beat() == ("a", "b")
    store.leave_replica("b")
    assert heartbeat.beat() == ("a",)

    assert seen == [(("a",), ("a",)), (("a",), ("a", "b")), (("a", "b"), ("a",))]


def test_a_replica_that_stopped_beating_drops_out_once_its_heartbeat_expired(
    store: SqlStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    heartbeat = ReplicaHeartbeat(store, "a", ttl=60)
    store.beat_replica("dead", ttl=60)
    assert heartbeat.beat() == ("a", "dead")

    skew(monkeypatch, 3600)  # the survivor's clock says an hour passed: it is not asked
    assert heartbeat.beat() == ("a", "dead")
    let_time_pass(store, "replicas", 61)

    assert heartbeat.beat() == ("a",)


def test_a_stopped_heartbeat_removes_its_replica_at_once(store: SqlStateStore) -> None:
    heartbeat = ReplicaHeartbeat(store, "a", ttl=60).start()
    assert store.live_replicas() == ["a"]

    heartbeat.stop()

    assert store.live_replicas() == []


def test_a_heartbeat_that_cannot_reach_the_database_keeps_its_last_view(
    store: SqlStateStore,
) -> None:
    heartbeat = ReplicaHeartbeat(store, "a", ttl=60)
    store.beat_replica("b", ttl=60)
    assert heartbeat.beat() == ("a", "b")
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE replicas"))

    assert heartbeat.beat() == ("a", "b")
