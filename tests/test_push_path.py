"""The per-request path of a push made lighter (issue 17): the same bodies, URLs, ordering
guarantees and results as before, by cheaper means."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from syncd.config import HttpConfig, UserfluxTargetConfig
from syncd.diff import Change, ChangeKind, Operation
from syncd.executor import Future, Health, _Outcome, _Workers
from syncd.model import Acked, Document, Spool
from syncd.targets.userflux import UserfluxTarget, plan_update
from syncd.targets.userflux.planner import encode_body, request_body

KEY = "sk-live-7Hq2-SECRET-do-not-log"


def payload(key: str = "p1", **extra: object) -> dict:
    body = {
        "id": key,
        "typeId": "shoes",
        "properties": {"name": "Trail — shoe", "price": 49.9, "tags": ["a", "b"], "z": {"y": 1}},
    }
    body.update(extra)
    return body


def before(body: dict) -> bytes:
    """How the body was encoded before: ``json.dumps`` of ``request_body``."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def acked(body: dict) -> Acked:
    document = Document.of(body["id"], body)
    return Acked(document.key, document.hash, document.canonical)


# -- UserFlux bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        payload(),
        payload(aiPropertyOverrides={"name": "An AI name", "alt": "ü"}),
        payload(properties={}),
    ],
)
def test_a_create_body_from_canonical_bytes_has_the_members_and_length_of_the_old_one(body):
    spool = Spool()
    document = Document.of(body["id"], body).spooled(spool)
    operation = plan_update(Change(ChangeKind.CREATE, body["id"], document))

    sent = encode_body(operation, mapped=True)

    old = before(request_body(operation))
    assert sent != old  # canonical order, not the old one: the test would be empty otherwise
    assert json.loads(sent) == json.loads(old)
    assert len(sent) == len(old)
    assert json.loads(sent)["propertiesUpdateType"] == "FULL_UPDATE"


@pytest.mark.parametrize(
    ("change", "mapped"),
    [
        # a hook may add members the body leaves out: the old encoding
        (Change(ChangeKind.CREATE, "p1", Document.of("p1", payload(extra=1))), False),
        # a previous payload with overrides: the body must clear them, explicitly
        (
            Change(
                ChangeKind.UPDATE,
                "p1",
                Document.of("p1", payload()),
                acked(payload(aiPropertyOverrides={"name": "x"})),
            ),
            True,
        ),
        # an incremental update's body is built at plan time
        (
            Change(
                ChangeKind.UPDATE, "p1", Document.of("p1", payload(name="new")), acked(payload())
            ),
            True,
        ),
    ],
)
def test_other_bodies_are_encoded_as_before(change, mapped):
    operation = plan_update(change)

    assert encode_body(operation, mapped=mapped) == before(request_body(operation))


def userflux(transport: httpx.MockTransport, **config: object) -> UserfluxTarget:
    values: dict = {
        "kind": "userflux",
        "name": "uf",
        "api_key_env": "USERFLUX_API_KEY",
        "type_id": "shoes",
        "base_url": "https://uf.example/api/v2",
        "timeout_s": 5,
    }
    values.update(config)
    return UserfluxTarget(
        UserfluxTargetConfig(**values), HttpConfig(), api_key=KEY, transport=transport
    )


def test_upserts_go_to_the_path_under_base_url_with_the_same_headers_every_time():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    target = userflux(httpx.MockTransport(answer))
    try:
        for key in ("p1", "p2"):
            target.send(plan_update(Change(ChangeKind.CREATE, key, Document.of(key, payload(key)))))
    finally:
        target.close()

    assert [str(r.url) for r in seen] == ["https://uf.example/api/v2/product"] * 2
    for request, key in zip(seen, ("p1", "p2"), strict=True):
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert json.loads(request.content) == {
            **payload(key),
            "propertiesUpdateType": "FULL_UPDATE",
        }


def test_with_a_mapping_callable_the_body_is_the_old_encoding():
    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(204)

    mapping = {"callable": "json:loads"}  # never called here: only its presence matters
    target = userflux(httpx.MockTransport(answer), mapping=mapping)
    body = payload(extra="kept out of the body")
    operation = plan_update(Change(ChangeKind.CREATE, "p1", Document.of("p1", body)))
    try:
        target.send(operation)
    finally:
        target.close()

    assert seen == [before(request_body(operation))]
    assert b"extra" not in seen[0]


# -- the executor's workers ---------------------------------------------------------------


def test_a_done_callback_runs_once_whether_added_before_or_after_the_work_ends():
    calls: list[Future[_Outcome]] = []
    operation = Operation("e", "m", "r", ())
    late = Future(lambda op: _Outcome(requests=1), operation)
    late.run()
    late.add_done_callback(calls.append)  # already done: called at once
    early = Future(lambda op: _Outcome(requests=2), operation)
    early.add_done_callback(calls.append)
    assert calls == [late]
    early.run()

    assert calls == [late, early]
    assert early.result().requests == 2
    assert early.exception() is None


def test_a_crash_in_the_work_is_the_futures_exception():
    def crash(op: Operation) -> _Outcome:
        raise ValueError("adapter bug")

    future = Future(crash, Operation("e", "m", "r", ()))
    future.run()

    assert isinstance(future.exception(), ValueError)
    with pytest.raises(ValueError, match="adapter bug"):
        future.result()


@pytest.mark.parametrize(("concurrency", "tasks"), [(1, 20), (8, 3), (8, 400), (64, 400)])
def test_workers_run_every_task_once_on_at_most_concurrency_threads(concurrency, tasks):
    done: list[Future[_Outcome]] = []
    done_lock = threading.Lock()
    running = 0
    most = 0
    threads: set[int] = set()

    def work(op: Operation) -> _Outcome:
        nonlocal running, most
        with done_lock:
            running += 1
            most = max(most, running)
            threads.add(threading.get_ident())
        time.sleep(0.001)
        with done_lock:
            running -= 1
        return _Outcome(requests=1)

    def finished(future: Future[_Outcome]) -> None:
        with done_lock:
            done.append(future)

    pool = _Workers(concurrency, "test")
    futures = [pool.submit(work, Operation("e", "m", str(i), ())) for i in range(tasks)]
    for future in futures:
        future.add_done_callback(finished)
    deadline = time.monotonic() + 10
    while len(done) < tasks and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.shutdown(wait=True)

    assert sorted(map(id, done)) == sorted(map(id, futures))  # each exactly once
    assert most <= concurrency
    # one thread per task at most, never more than concurrency (fewer when the first ones
    # ran every task before the others were started)
    assert len(threads) <= len(pool._threads) <= min(concurrency, tasks)
    if tasks >= 100 and concurrency > 1:
        assert len(threads) > 1


def test_workers_keep_up_with_work_submitted_one_at_a_time():
    """Work submitted after the threads that were wanted have started still gets a new
    thread: two tasks that each wait for the other both run."""
    both = threading.Barrier(2, timeout=5)

    def meet(op: Operation) -> _Outcome:
        both.wait()
        return _Outcome()

    pool = _Workers(2, "test")
    first = pool.submit(meet, Operation("e", "m", "1", ()))
    time.sleep(0.05)  # the first thread is up and waiting at the barrier
    second = pool.submit(meet, Operation("e", "m", "2", ()))
    pool.shutdown(wait=True)

    assert first.exception() is None
    assert second.exception() is None


def test_nothing_submitted_after_shutdown():
    pool = _Workers(2, "test")
    pool.shutdown()

    with pytest.raises(RuntimeError):
        pool.submit(lambda op: _Outcome(), Operation("e", "m", "r", ()))


def test_health_is_failing_when_half_the_last_answers_were_errors():
    health = Health(window=4)
    for answered in (True, True, True, True, False, False):
        health.record(answered)

    assert health.failing()  # the window holds True, True, False, False
    for _ in range(3):
        health.record(True)
    assert not health.failing()  # False, True, True, True


# -- the benchmark that measures it -------------------------------------------------------


def test_the_push_benchmark_sends_the_same_requests_both_ways(tmp_path):
    from bench import push as push_bench

    result = push_bench.compare(
        tmp_path, n=40, concurrency=(3,), latencies_ms=(0,), repeat=1, processes=(1, 2)
    )

    assert [(r["concurrency"], r["processes"]) for r in result["rows"]] == [(3, 1), (3, 2)]
    for row in result["rows"]:
        for mode in ("bare", "syncd"):
            (run,) = row[mode]["runs"]
            assert run["requests"] == 40  # and the sink received exactly that many
            assert run["cpu_s"] > 0
        assert row["cpu_ratio"] > 0
        assert row["rps_ratio"] > 0
    assert "CPU ratio" in push_bench.render(result)
