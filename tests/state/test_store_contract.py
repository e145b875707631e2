"""The ``StateStore`` contract, run against every backend: SQLite, PostgreSQL, MariaDB."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.errors import StateError
from syncd.model import (
    SEEN_ONLY,
    UNACKNOWLEDGED,
    Acked,
    Document,
    Rejection,
    RunRecord,
    refresh_age,
)
from syncd.state import sql, staging
from syncd.state.schema import products, runs
from syncd.state.sql import SqlStateStore
from tests.support import STATE_BACKENDS, STATE_URL_FIXTURES


@pytest.fixture(params=STATE_BACKENDS)
def store(request) -> Iterator[SqlStateStore]:
    url = request.getfixturevalue(STATE_URL_FIXTURES[request.param])
    store = SqlStateStore(url)
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def small_batches(monkeypatch) -> None:
    """Page through results a few rows at a time, so paging itself is exercised."""
    monkeypatch.setattr(sql, "READ_BATCH", 3)
    monkeypatch.setattr(staging, "READ_BATCH", 3)


def doc(key: str, **payload) -> Document:
    return Document.of(key, payload or {"name": key})


def acks(*docs: Document) -> list[tuple[str, bytes, bytes, bytes | None]]:
    return [(d.key, d.hash, d.canonical, d.source_hash) for d in docs]


def ints(*fingerprints: bytes) -> bytes:
    """Fingerprints as ``Staging.known`` takes them: concatenated."""
    return b"".join(fingerprints)


def acked(d: Document) -> Acked:
    return Acked(d.key, d.hash, d.canonical)


# -- acknowledged products ------------------------------------------------------


def test_acknowledged_products_round_trip(store) -> None:
    a, b = doc("a", name="Ä", tags=["x", 1.5]), doc("b")
    store.apply_acks("uf", acks(a, b))

    assert store.get("uf", "a") == acked(a)
    assert store.count("uf") == 2
    assert list(store.iter_acked("uf")) == [acked(a), acked(b)]
    assert store.count("other") == 0
    assert store.get("other", "a") is None


def test_iter_acked_pages_through_every_entry(store, small_batches) -> None:
    docs = [doc(f"k{i:02d}") for i in range(10)]
    store.apply_acks("uf", acks(*docs))

    assert [a.key for a in store.iter_acked("uf")] == [d.key for d in docs]


def test_acknowledging_a_key_again_replaces_hash_and_payload(store) -> None:
    store.apply_acks("uf", acks(doc("a", v=1)))
    store.apply_acks("uf", acks(doc("a", v=2)))

    assert store.get("uf", "a") == acked(doc("a", v=2))
    assert store.count("uf") == 1


def test_acknowledged_delete_removes_the_key(store) -> None:
    store.apply_acks("uf", acks(doc("a"), doc("b")))
    store.apply_acks("uf", [], deletes=["a", "never-there"])

    assert store.get("uf", "a") is None
    assert store.count("uf") == 1


def test_acknowledgement_closes_the_rejection_of_the_key(store) -> None:
    store.record_rejections("uf", [Rejection("a", "bad"), Rejection("b", "bad")], now=1.0)
    store.record_rejections("vb", [Rejection("a", "bad")], now=1.0)

    store.apply_acks("uf", acks(doc("a")), deletes=["b"])

    assert [(r.target, r.key) for r in store.open_rejections()] == [("vb", "a")]


def test_keys_differing_in_case_or_trailing_space_stay_distinct(store) -> None:
    docs = [doc("sku-1"), doc("SKU-1"), doc("sku-1 "), doc("ß")]
    store.apply_acks("uf", acks(*docs))

    assert store.count("uf") == 4
    assert store.get("uf", "sku-1 ") == acked(docs[2])


def test_a_large_payload_fits(store) -> None:
    big = doc("big", text="é" * 300_000)
    store.apply_acks("uf", acks(big))

    assert store.get("uf", "big") == acked(big)


def test_forget_target_drops_only_that_target(store) -> None:
    store.apply_acks("uf", acks(doc("a"), doc("b")))
    store.apply_acks("vb", acks(doc("a")))

    assert store.forget_target("uf") == 2
    assert store.count("uf") == 0
    assert store.count("vb") == 1


# -- staging -----------------------------------------------------------------------


def test_staging_compare_returns_creates_and_updates_only(store) -> None:
    store.apply_acks("uf", acks(doc("same"), doc("changed", v=1)))

    with store.begin_staging("uf") as staging:
        diff = staging.compare(
            [(d.key, d.hash) for d in (doc("same"), doc("changed", v=2), doc("new"))]
        )

    assert diff == {"changed": acked(doc("changed", v=1)), "new": None}


def test_staging_compares_against_its_own_target_only(store) -> None:
    store.apply_acks("vb", acks(doc("a")))

    with store.begin_staging("uf") as staging:
        assert staging.compare([("a", doc("a").hash)]) == {"a": None}


def test_staging_finds_duplicate_keys(store) -> None:
    with store.begin_staging("uf") as staging:
        staging.compare([("a", doc("a").hash), ("b", doc("b").hash), ("a", doc("a").hash)])
        staging.compare([("b", doc("b").hash), ("c", doc("c").hash)])

        assert staging.staged_count() == 5
        assert sorted(staging.duplicates()) == ["a", "b"]


def test_staging_finds_duplicate_keys_after_the_deletes_were_asked_for(store) -> None:
    with store.begin_staging("uf") as staging:
        staging.compare([("a", doc("a").hash), ("b", doc("b").hash), ("a", doc("a").hash)])
        staging.compare([("b", SEEN_ONLY), ("c", SEEN_ONLY)])

        assert list(staging.unseen()) == []  # indexes the staged keys first
        assert staging.duplicates() == ["a"]  # b: one real row, one only seen


def test_staging_on_sqlite_groups_no_keys_when_each_was_staged_once(store) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("the unique index is tried on SQLite only")
    statements: list[str] = []

    def record(conn, cursor, statement, *_) -> None:
        statements.append(statement)

    with store.begin_staging("uf") as staging:
        staging.compare([(key, doc(key).hash) for key in "abc"])
        staging.compare([("d", SEEN_ONLY)])
        sa.event.listen(store.engine, "before_cursor_execute", record)
        try:
            assert staging.duplicates() == []
            assert list(staging.unseen()) == []
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", record)

    assert any("CREATE UNIQUE INDEX" in statement for statement in statements)
    assert not [statement for statement in statements if "GROUP BY" in statement]


def test_staging_unseen_gives_exactly_the_keys_not_staged(store, small_batches) -> None:
    docs = [doc(f"k{i:02d}") for i in range(12)]
    store.apply_acks("uf", acks(*docs))
    store.apply_acks("vb", acks(doc("elsewhere")))
    staged = docs[::3]

    with store.begin_staging("uf") as staging:
        staging.compare([(d.key, d.hash) for d in staged])
        unseen = list(staging.unseen())

    assert unseen == [acked(d) for d in docs if d not in staged]


def test_staging_sees_acks_written_while_it_is_open(store) -> None:
    store.apply_acks("uf", acks(doc("a"), doc("b")))

    with store.begin_staging("uf") as staging:
        staging.compare([("a", doc("a").hash)])
        store.apply_acks("uf", [], deletes=["b"])
        store.apply_acks("uf", acks(doc("c")))

        assert [a.key for a in staging.unseen()] == ["c"]


def test_staging_leaves_no_trace_after_close(store) -> None:
    store.apply_acks("uf", acks(doc("a")))
    tables = sorted(sa.inspect(store.engine).get_table_names())
    first = store.begin_staging("uf")
    first.compare([("a", doc("b").hash), ("n", doc("n").hash), ("n", doc("n").hash)])
    assert first.duplicates() == ["n"]
    first.close()
    first.close()  # closing twice is harmless

    assert list(store.iter_acked("uf")) == [acked(doc("a"))]
    assert sorted(sa.inspect(store.engine).get_table_names()) == tables
    with store.begin_staging("uf") as second:
        assert second.staged_count() == 0
        assert second.duplicates() == []
        assert [a.key for a in second.unseen()] == ["a"]
    with pytest.raises(StateError, match="closed"):
        first.compare([("a", doc("a").hash)])


_examples = itertools.count()
"""Numbers the targets of generated examples: each starts with a state of its own."""
_staged_chunks = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from([doc("x").hash, doc("y").hash, SEEN_ONLY, b""]),
        ),
        max_size=6,
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=_staged_chunks)
def test_staging_an_empty_target_answers_as_the_join_does(store, chunks) -> None:
    # the reference: the same chunks against a target holding one product, of another
    # key, so every chunk goes through the join that an empty target's shortcut skips
    number = next(_examples)
    empty, joined = f"empty-{number}", f"joined-{number}"
    store.apply_acks(joined, acks(doc("unrelated")))

    with store.begin_staging(empty) as fast, store.begin_staging(joined) as slow:
        for chunk in chunks:
            assert fast.compare(chunk) == slow.compare(chunk)
        assert fast.duplicates() == slow.duplicates()
        assert list(fast.unseen()) == []
        assert [a.key for a in slow.unseen()] == ["unrelated"]


def test_staging_an_empty_target_finds_the_products_acknowledged_meanwhile(store) -> None:
    with store.begin_staging("uf") as staging:
        assert staging.compare([("a", doc("a").hash)]) == {"a": None}
        store.apply_acks("uf", acks(doc("a")))  # a sync acknowledges while reading

        assert staging.compare([("a", doc("a", v=2).hash), ("b", doc("b").hash)]) == {
            "a": acked(doc("a")),
            "b": None,
        }


def test_chunked_staging_of_50k_keys(store) -> None:
    known = [Document.of(f"p{i:06d}", {"i": i}) for i in range(10_000)]
    store.apply_acks("uf", acks(*known))
    catalog = [(f"p{i:06d}", Document.of("", {"i": i}).hash) for i in range(2_500, 52_500)]
    catalog[:7_500:1_000] = [(key, b"changed-hash-16b") for key, _ in catalog[:7_500:1_000]]

    changed: dict[str, Acked | None] = {}
    with store.begin_staging("uf") as staging:
        for start in range(0, len(catalog), 5_000):
            changed.update(staging.compare(catalog[start : start + 5_000]))
        unseen = [a.key for a in staging.unseen()]
        assert staging.staged_count() == 50_000
        assert staging.duplicates() == []

    creates = [key for key, old in changed.items() if old is None]
    updates = [key for key, old in changed.items() if old is not None]
    assert len(creates) == 42_500
    assert updates == [key for key, _ in catalog[:7_500:1_000]]
    assert unseen == [d.key for d in known[:2_500]]


# -- runs ----------------------------------------------------------------------------


def finished(store, target: str, **fields) -> RunRecord:
    run_id = store.start_run(target, mode="incremental", mode_reason="nightly", holder="h1")
    [started] = [r for r in store.recent_runs(target) if r.id == run_id]
    record = RunRecord(
        **{**{f: getattr(started, f) for f in RunRecord.__slots__}, "finished_at": 2e9, **fields}
    )
    store.finish_run(record)
    return record


def test_runs_are_started_finished_and_listed_newest_first(store) -> None:
    run_id = store.start_run("uf", mode="full", mode_reason="state empty", holder="h1")
    [running] = store.recent_runs("uf")
    assert (running.id, running.outcome, running.finished_at) == (run_id, "running", None)
    assert (running.mode, running.mode_reason, running.holder) == ("full", "state empty", "h1")

    done = finished(store, "uf", outcome="ok", created=3, source_count=10, source_complete=True)
    store.start_run("vb", mode="full", mode_reason="first", holder="h1")

    assert store.recent_runs("uf")[0] == done
    assert [r.target for r in store.recent_runs()] == ["vb", "uf", "uf"]
    assert len(store.recent_runs(limit=1)) == 1


def _bulk_runs(store, target: str, modes: list[str], started_at: float = 1e9) -> None:
    """Finished ok runs of ``target``, one per mode, in this order (ids ascending)."""
    row = dict(
        target=target, finished_at=started_at + 1, mode_reason="", outcome="ok", created=0,
        updated=1, deleted=0, unchanged=0, rejected=0, failed=0, held=0, requests=1,
        retries=0, source_complete=True, holder="h1",
    )  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(
            runs.insert(),
            [{**row, "mode": mode, "started_at": started_at + i} for i, mode in enumerate(modes)],
        )


def test_recent_runs_leaves_feed_runs_out_or_keeps_only_them(store) -> None:
    _bulk_runs(store, "uf", ["incremental"] + ["feed"] * 3000 + ["resend"] + ["feed"] * 10)
    assert [r.mode for r in store.recent_runs("uf", limit=5, feed=False)] == [
        "resend",
        "incremental",
    ]
    assert {r.mode for r in store.recent_runs("uf", limit=50, feed=True)} == {"feed"}
    assert len(store.recent_runs("uf", limit=50, feed=True)) == 50
    assert [r.mode for r in store.recent_runs("uf", limit=2)] == ["feed", "feed"]
    assert [r.mode for r in store.recent_runs(limit=2, feed=False)] == ["resend", "incremental"]


def test_pruning_keeps_the_feed_runs_and_the_other_runs_apart(store) -> None:
    modes = (["full"] + ["incremental"] * 4 + ["feed"] * 1500) * 2 + ["feed"] * 20
    _bulk_runs(store, "uf", modes)
    _bulk_runs(store, "vb", ["feed"] * 10)
    # keep 3 of each kind: the scheduled runs survive 3000+ feed runs after them
    assert store.prune_runs("uf", before=0, keep=3) == len(modes) - 6
    kept = store.recent_runs("uf", limit=100)
    assert [r.mode for r in kept] == ["feed"] * 3 + ["incremental"] * 3
    # by age: everything is old, the latest of each kind stays all the same
    assert store.prune_runs("uf", before=3e9, keep=0) == 4
    assert [r.mode for r in store.recent_runs("uf", limit=100)] == ["feed", "incremental"]
    assert len(store.recent_runs("vb", limit=100)) == 10  # another target untouched
    # a run still going is never pruned
    running = store.start_run("uf", mode="feed", mode_reason="", holder="h1")
    assert store.prune_runs("uf", before=3e9, keep=1) == 1
    assert [r.id for r in store.recent_runs("uf", limit=5, feed=True)] == [running]
    assert [r.mode for r in store.recent_runs("uf", limit=5, feed=False)] == ["incremental"]


def test_mark_interrupted_touches_only_the_targets_running_runs(store) -> None:
    finished(store, "uf", outcome="ok")
    store.start_run("uf", mode="full", mode_reason="", holder="h1")
    store.start_run("vb", mode="full", mode_reason="", holder="h1")

    assert store.mark_interrupted("uf") == 1

    outcomes = [(r.target, r.outcome, r.finished_at is None) for r in store.recent_runs()]
    assert outcomes == [("vb", "running", True), ("uf", "interrupted", False), ("uf", "ok", False)]


def test_last_complete_source_count_skips_partial_reads_and_unfinished_runs(store) -> None:
    assert store.last_complete_source_count("uf") is None
    finished(store, "uf", outcome="ok", source_count=100, source_complete=True)
    finished(store, "uf", outcome="failed", source_count=5, source_complete=False)
    finished(store, "uf", outcome="interrupted", source_count=6, source_complete=True)
    store.start_run("uf", mode="full", mode_reason="", holder="h1")

    assert store.last_complete_source_count("uf") == 100
    assert store.last_complete_source_count("vb") is None


# -- rejections ------------------------------------------------------------------------


def test_recording_a_rejection_twice_counts_two_and_keeps_first_seen(store) -> None:
    store.record_rejections("uf", [Rejection("a", "too long", hash=b"1" * 16)], now=10.0)
    store.record_rejections(
        "uf", [Rejection("a", "bad type", hash=b"2" * 16, by_target=True)], now=20.0
    )

    [record] = store.open_rejections("uf")
    assert (record.first_seen, record.last_seen, record.count) == (10.0, 20.0, 2)
    assert (record.reason, record.hash, record.by_target) == ("bad type", b"2" * 16, True)


def test_held_rejections_are_target_side_and_seen_since(store) -> None:
    store.record_rejections("uf", [Rejection("old", "400", hash=b"o" * 16, by_target=True)], 1.0)
    store.record_rejections("uf", [Rejection("new", "400", hash=None, by_target=True)], 5.0)
    store.record_rejections("uf", [Rejection("local", "no price", by_target=False)], 5.0)
    store.record_rejections("vb", [Rejection("other", "400", by_target=True)], 5.0)

    assert store.held_rejections("uf", since=5.0) == {"new": None}
    assert store.held_rejections("uf", since=0.0) == {"new": None, "old": b"o" * 16}


def test_prune_rejections_keeps_only_the_given_keys(store) -> None:
    store.record_rejections("uf", [Rejection(k, "bad") for k in "abc"], now=1.0)
    store.record_rejections("vb", [Rejection("a", "bad")], now=1.0)

    assert store.prune_rejections("uf", keep={"b"}) == 2

    assert [(r.target, r.key) for r in store.open_rejections()] == [("uf", "b"), ("vb", "a")]


# -- leases ----------------------------------------------------------------------------


def let_time_pass(store, seconds: float) -> None:
    """What waiting does to the leases (their expiry moves closer), without sleeping."""
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE leases SET expires_at = expires_at - :s"), {"s": seconds})


def test_a_free_lease_is_acquired_and_a_second_holder_refused(store) -> None:
    assert store.acquire_lease("uf", "h1", ttl=60)
    assert not store.acquire_lease("uf", "h2", ttl=60)
    assert store.acquire_lease("vb", "h2", ttl=60)
    assert store.lease_holder("uf") == "h1"


def test_the_holder_can_acquire_again_and_renew(store) -> None:
    assert store.acquire_lease("uf", "h1", ttl=60)
    assert store.acquire_lease("uf", "h1", ttl=60)
    let_time_pass(store, 50)
    assert store.renew_lease("uf", "h1", ttl=60)
    assert not store.renew_lease("uf", "h2", ttl=60)

    let_time_pass(store, 50)  # 100 s after it was taken, 50 s after the renewal
    assert not store.acquire_lease("uf", "h2", ttl=60)
    assert store.lease_holder("uf") == "h1"


def test_an_expired_lease_is_taken_over(store) -> None:
    store.acquire_lease("uf", "h1", ttl=60)
    let_time_pass(store, 61)

    assert store.lease_holder("uf") is None
    assert store.acquire_lease("uf", "h2", ttl=60)
    assert store.lease_holder("uf") == "h2"
    assert not store.renew_lease("uf", "h1", ttl=60)


def test_an_expired_lease_is_not_renewed_by_its_old_holder(store) -> None:
    store.acquire_lease("uf", "h1", ttl=60)
    let_time_pass(store, 61)

    assert not store.renew_lease("uf", "h1", ttl=60)  # it must stop: another may have it
    assert store.lease_holder("uf") is None


def test_a_lease_is_judged_on_the_database_clock_not_the_callers(store, monkeypatch) -> None:
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 600)  # this process runs 10 min ahead
    store.acquire_lease("uf", "h1", ttl=60)
    assert not store.acquire_lease("uf", "h2", ttl=60)  # not stolen: still live on the server
    assert store.lease_holder("uf") == "h1"

    monkeypatch.setattr(time, "time", lambda: real() - 600)  # now 10 min behind
    let_time_pass(store, 61)
    assert store.lease_holder("uf") is None  # expired on the server: not kept
    assert not store.renew_lease("uf", "h1", ttl=60)
    assert store.acquire_lease("uf", "h2", ttl=60)


def test_lease_holder_answers_for_another_instant_when_asked(store) -> None:
    import time

    store.acquire_lease("uf", "h1", ttl=60)
    assert store.lease_holder("uf", now=time.time() + 30) == "h1"
    assert store.lease_holder("uf", now=time.time() + 120) is None


def test_a_released_lease_is_free_and_only_its_holder_can_release_it(store) -> None:
    store.acquire_lease("uf", "h1", ttl=60)
    store.release_lease("uf", "h2")
    assert store.lease_holder("uf") == "h1"

    store.release_lease("uf", "h1")

    assert store.lease_holder("uf") is None
    assert store.acquire_lease("uf", "h2", ttl=60)


# -- replicas ----------------------------------------------------------------------------


def let_heartbeats_age(store, seconds: float) -> None:
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE replicas SET expires_at = expires_at - :s"), {"s": seconds})


def test_replicas_that_beat_are_live_and_one_that_leaves_is_gone_at_once(store) -> None:
    assert store.beat_replica("r2", ttl=10) == ["r2"]
    assert store.beat_replica("r1", ttl=10) == ["r1", "r2"]
    assert store.live_replicas() == ["r1", "r2"]

    store.leave_replica("r2")

    assert store.live_replicas() == ["r1"]


def test_a_replica_whose_heartbeat_expired_drops_out_and_can_come_back(store) -> None:
    store.beat_replica("r1", ttl=10)
    store.beat_replica("r2", ttl=10)
    let_heartbeats_age(store, 11)
    assert store.live_replicas() == []

    assert store.beat_replica("r1", ttl=10) == ["r1"]  # r2's stale row is dropped
    assert store.beat_replica("r2", ttl=10) == ["r1", "r2"]


def race_for_lease(contenders: list[SqlStateStore], target: str) -> list[str]:
    """Let every contender try to take the lease at the same instant; return the winners."""
    barrier = threading.Barrier(len(contenders))
    results: dict[str, bool] = {}

    def contend(store: SqlStateStore, holder: str) -> None:
        barrier.wait()
        results[holder] = store.acquire_lease(target, holder, ttl=60)

    threads = [
        threading.Thread(target=contend, args=(store, f"h{i}"))
        for i, store in enumerate(contenders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(contenders)
    return [holder for holder, won in results.items() if won]


@pytest.mark.postgres
@pytest.mark.parametrize("existing", ["no lease row", "an expired lease"])
def test_racing_processes_on_postgresql_let_exactly_one_win(pg_url, existing) -> None:
    contenders = [SqlStateStore(pg_url) for _ in range(6)]
    contenders[0].upgrade()
    try:
        for round_ in range(5):
            target = f"t{round_}"
            if existing == "an expired lease":
                contenders[0].acquire_lease(target, "dead", ttl=60)
                let_time_pass(contenders[0], 61)

            winners = race_for_lease(contenders, target)

            assert len(winners) == 1
            assert contenders[0].lease_holder(target) == winners[0]
    finally:
        for contender in contenders:
            contender.close()


def test_ping_passes_on_a_reachable_database(store) -> None:
    store.ping()


def test_writes_in_flight_are_marked_unacknowledged(store) -> None:
    store.apply_acks("uf", acks(doc("known", v=1)))

    store.mark_unacknowledged("uf", [("known", doc("known", v=2).canonical), ("new", b'{"n":1}')])

    assert store.get("uf", "known") == Acked.of("known", UNACKNOWLEDGED, {"v": 1})
    assert store.get("uf", "new") == Acked.of("new", UNACKNOWLEDGED, {"n": 1})
    with store.begin_staging("uf") as staging:
        diff = staging.compare([("known", doc("known", v=2).hash), ("new", doc("new").hash)])
    assert {key: old.hash for key, old in diff.items() if old} == {
        "known": UNACKNOWLEDGED,
        "new": UNACKNOWLEDGED,
    }


def test_writes_in_flight_are_read_from_an_iterator_in_slices(store) -> None:
    """A first sync marks every product: the entries come as a generator, consumed in
    slices; a key given twice (in two slices) ends as one row."""
    store.apply_acks("uf", acks(doc("k00001", v=1)))
    consumed: list[str] = []

    def entries():
        for i in range(sql.READ_BATCH + 10):
            consumed.append(f"k{i:05d}")
            yield f"k{i:05d}", f'{{"i":{i}}}'.encode()
        yield "k00002", b'{"i":"again"}'

    store.mark_unacknowledged("uf", entries())

    assert len(consumed) == sql.READ_BATCH + 10
    assert store.count("uf") == sql.READ_BATCH + 10
    assert store.get("uf", "k00001") == Acked.of("k00001", UNACKNOWLEDGED, {"v": 1})
    assert store.get("uf", f"k{sql.READ_BATCH + 9:05d}") == Acked.of(
        f"k{sql.READ_BATCH + 9:05d}", UNACKNOWLEDGED, {"i": sql.READ_BATCH + 9}
    )


# -- raw-row fingerprints (source_hash) -----------------------------------------


def test_fingerprints_are_stored_with_acks_known_to_staging_and_cleared_when_in_flight(
    store,
) -> None:
    a, b, c = doc("a"), doc("b"), doc("c")
    fa, fb, fc = b"A" * 16, b"B" * 16, b"C" * 16
    store.apply_acks("uf", [(a.key, a.hash, a.canonical, fa), (b.key, b.hash, b.canonical, fb)])
    store.apply_acks("uf", [(c.key, c.hash, c.canonical, None)])
    store.apply_acks("vb", [(a.key, a.hash, a.canonical, fc)])
    store.mark_unacknowledged("uf", [("b", b.canonical)])
    with store.begin_staging("uf") as staging:
        assert staging.known(ints(fa, fb, fc, b"D" * 16)) == [True, False, False, False]
        # a product whose fingerprint was staged is seen; one whose key was staged too
        assert staging.compare([("c", c.hash)], [fc]) == {}
        assert [u.key for u in staging.unseen()] == ["b"]
        assert staging.duplicates() == []


def test_a_staged_fingerprint_and_a_staged_key_of_the_same_product_are_a_duplicate(
    store,
) -> None:
    a, b = doc("a"), doc("b")
    fa, fb = b"A" * 16, b"B" * 16
    store.apply_acks("uf", [(a.key, a.hash, a.canonical, fa), (b.key, b.hash, b.canonical, fb)])
    with store.begin_staging("uf") as staging:
        staging.known(ints(fa, fb, fb))  # "b" arrives twice, verbatim
        staging.compare([("a", doc("a", v=2).hash)], [b"X" * 16])  # and "a" from another row
        assert staging.duplicates() == ["a", "b"]


def test_unseen_after_skipping_is_exactly_the_products_no_row_found(store, small_batches) -> None:
    docs = [doc(f"k{i:02d}") for i in range(20)]
    prints = {d.key: bytes([i]) * 16 for i, d in enumerate(docs)}
    # k00-k14 carry a fingerprint; k15-k19 don't (acknowledged before fingerprinting)
    store.apply_acks("uf", [(d.key, d.hash, d.canonical, prints[d.key]) for d in docs[:15]])
    store.apply_acks("uf", acks(*docs[15:]))
    store.apply_acks("vb", [(d.key, d.hash, d.canonical, prints[d.key]) for d in docs])
    with store.begin_staging("uf") as staging:
        # rows skipped: k00-k09; parsed by key: k10, k11 (changed rows) and k15, k16
        assert staging.known(ints(*[prints[f"k{i:02d}"] for i in range(10)], b"?" * 16)) == (
            [True] * 10 + [False]
        )
        staging.compare([(key, doc(key).hash) for key in ("k10", "k11", "k15", "k16", "new")])
        store.apply_acks("uf", acks(doc("late")))  # acknowledged while staging is open

        assert [u.key for u in staging.unseen()] == [
            "k12",
            "k13",
            "k14",
            "k17",
            "k18",
            "k19",
            "late",
        ]
        assert staging.duplicates() == []


def test_every_fingerprint_is_read_whatever_its_first_byte_even_one_two_products_share(
    store,
) -> None:
    docs = [doc(f"k{i:02d}") for i in range(10)]
    prints = {d.key: bytes([i // 2 * 2 + 1]) * 16 for i, d in enumerate(docs)}  # pairs share
    prints["k08"], prints["k09"] = b"\xff" * 15 + b"\x00", b"\xff" * 16  # the last page
    store.apply_acks("uf", [(d.key, d.hash, d.canonical, prints[d.key]) for d in docs])
    with store.begin_staging("uf") as staging:
        wanted = [*sorted(set(prints.values())), b"\x00" * 16, b"\x02" * 16]
        assert staging.known(ints(*wanted)) == [True] * 6 + [False, False]


def test_remember_records_a_fingerprint_only_for_an_unchanged_hash(store) -> None:
    a, b = doc("a"), doc("b")
    store.apply_acks("uf", acks(a, b))
    fa, fb = b"A" * 16, b"B" * 16
    with store.begin_staging("uf") as staging:
        staging.known(ints(b"Z" * 16))
        staging.remember([("a", a.hash, fa), ("b", doc("b", v=2).hash, fb)])
    with store.begin_staging("uf") as staging:
        assert staging.known(ints(fa, fb)) == [True, False]


# -- writes in doubt, products absent -------------------------------------------------


def test_a_doubt_is_reasserted_only_once_due_by_marking_its_product_unacknowledged(store) -> None:
    kept, gone = doc("K", price=1), doc("G", price=2)
    store.apply_acks("t", acks(kept, gone))
    store.record_doubts("t", [("K", kept.canonical), ("G", gone.canonical)], until=100.0)
    store.apply_acks("t", [], ["G"])  # deleted after its write went in doubt

    assert store.count_doubts("t", now=99.0) == (0, 2)
    assert store.reassert_doubts("t", now=99.0) == 0
    assert store.get("t", "K") == acked(kept)

    assert store.reassert_doubts("t", now=100.0) == 2
    assert store.get("t", "K") == Acked("K", UNACKNOWLEDGED, kept.canonical)
    assert store.get("t", "G") == Acked("G", UNACKNOWLEDGED, gone.canonical)  # to re-delete
    assert store.count_doubts("t", now=200.0) == (0, 0)
    assert store.reassert_doubts("t", now=200.0) == 0


def test_a_later_doubt_replaces_an_earlier_one_and_targets_stay_apart(store) -> None:
    store.record_doubts("t", [("K", b'{"v":1}')], until=10.0)
    store.record_doubts("t", [("K", b'{"v":2}')], until=20.0)
    store.record_doubts("u", [("K", None)], until=5.0)

    assert store.count_doubts("t", now=15.0) == (0, 1)
    assert store.count_doubts("u", now=15.0) == (1, 0)
    assert store.reassert_doubts("u", now=15.0) == 1
    assert store.get("u", "K") is None  # no payload, nothing in state: nothing to restore
    assert store.count_doubts("t", now=15.0) == (0, 1)


def test_absences_are_replaced_whole_and_keep_when_a_product_first_went_missing(store) -> None:
    store.record_absences("t", {"A": 1, "B": 1}, now=10.0)
    store.record_absences("u", {"A": 5}, now=10.0)
    store.record_absences("t", {"A": 2, "C": 1}, now=20.0)

    assert store.absences("t") == {"A": 2, "C": 1}
    assert store.absences("u") == {"A": 5}
    store.record_absences("t", {}, now=30.0)
    assert store.absences("t") == {}


def test_acked_of_returns_only_the_keys_state_holds(store) -> None:
    a, b = doc("A"), doc("B")
    store.apply_acks("t", acks(a, b))

    found = store.acked_of("t", ["B", "missing", "A", "B"])

    assert sorted(found, key=lambda x: x.key) == [acked(a), acked(b)]


# -- the rolling refresh -----------------------------------------------------------


def _acked_days_ago(store, days_by_key: dict[str, float], now: float) -> None:
    """Acknowledge products, then set each one's ``acked_at`` ``days`` before ``now``."""
    store.apply_acks("t", acks(*(doc(key) for key in days_by_key)))
    with store.engine.begin() as conn:
        for key, days in days_by_key.items():
            p = products.c
            conn.execute(
                products.update()
                .where(p.target == "t", p.key == key)
                .values(acked_at=now - days * 86400)
            )


def _completed_run(store, started: float) -> None:
    run_id = store.start_run("t", mode="incremental", mode_reason="", holder="h")
    with store.engine.begin() as conn:
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(started_at=started, finished_at=started, outcome="ok")
        )


def test_the_rolling_refresh_marks_the_oldest_acknowledgements_whole_and_unfingerprinted(
    store, small_batches
) -> None:
    now = 1_900_000_000.0
    ages = {f"k{i}": i * 0.4 for i in range(14)}  # k13 acknowledged longest ago, 5.2 days
    _acked_days_ago(store, ages, now)
    _completed_run(store, now - 86400)

    planned = store.refresh_due("t", now, 7 * 86400)
    marked = store.mark_refresh_due("t", now, 7 * 86400)

    assert planned == marked
    assert (marked.size, marked.count) == (2, 14)
    assert (marked.oldest_age_s, marked.newest_age_s) == (5.2 * 86400, 4.8 * 86400)
    held = {a.key: a for a in store.iter_acked("t")}
    assert {key for key, a in held.items() if len(a.hash) != 16} == {"k13", "k12"}
    assert refresh_age(held["k12"].hash) == 4.8 * 86400
    assert held["k12"].payload == {"name": "k12"}  # the payload last acknowledged stays
    with store.engine.connect() as conn:
        fingerprinted = conn.execute(
            sa.select(products.c.key).where(products.c.source_hash.is_not(None))
        ).scalars()
        assert not {"k12", "k13"} & set(fingerprinted)


def test_the_rolling_refresh_plan_writes_nothing(store) -> None:
    now = 1_900_000_000.0
    _acked_days_ago(store, {f"k{i}": 1.0 for i in range(7)}, now)
    _completed_run(store, now - 86400)

    assert store.refresh_due("t", now, 7 * 86400).size == 1
    assert all(len(a.hash) == 16 for a in store.iter_acked("t"))


def test_the_rolling_refresh_waits_for_a_completed_run(store) -> None:
    now = 1_900_000_000.0
    _acked_days_ago(store, {"a": 30.0, "b": 30.0}, now)

    assert store.mark_refresh_due("t", now, 7 * 86400).size == 0
    assert all(len(a.hash) == 16 for a in store.iter_acked("t"))
