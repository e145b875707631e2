"""The webhook feed on the listener (auth, limits, bodies, waiting) and the coalescing syncer."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from syncd.config import WebhookFeedConfig, parse_config
from syncd.feeds import KeyEvent
from syncd.feeds import syncer as syncer_module
from syncd.feeds.syncer import FeedSyncer
from syncd.feeds.targeted import TargetedRead, TargetedSync
from syncd.feeds.webhook import WebhookFeed, webhook_router
from syncd.health import HealthServer, Probes
from syncd.runs import RunReport, TargetReport
from tests.support import ENV, userflux_target

TOKEN = "s3cret-feed-token-0123456789"


class Sink:
    """Records what the feed hands over; settles each batch as told."""

    def __init__(self, ok: bool | None = True) -> None:
        self.ok = ok
        self.batches: list[list[KeyEvent]] = []

    def __call__(self, events: Sequence[KeyEvent], done: Any) -> None:
        self.batches.append(list(events))
        if self.ok is not None:
            done(self.ok)


@pytest.fixture
def served() -> Iterator[tuple[WebhookFeed, Sink, int]]:
    config = WebhookFeedConfig(
        kind="webhook",
        name="shop",
        token_env="FEED_TOKEN",
        max_body_bytes=400,
        max_keys=5,
        wait_timeout_s=0.5,
    )
    feed = WebhookFeed(config, environ={"FEED_TOKEN": TOKEN})
    sink = Sink()
    stop = threading.Event()
    thread = threading.Thread(target=feed.run, args=(sink, stop), daemon=True)
    thread.start()
    while not feed.status().connected:
        time.sleep(0.01)
    server = HealthServer(
        "127.0.0.1", 0, Probes(alive=lambda: True, ready=lambda: [], post=webhook_router([feed]))
    ).start()
    yield feed, sink, server.port
    stop.set()
    thread.join(5)
    server.stop()


def post(
    port: int,
    body: Any,
    *,
    token: str | None = TOKEN,
    path: str = "/feeds/shop",
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(body).encode()
    connection.request("POST", path, body=data, headers=headers)
    response = connection.getresponse()
    payload = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, payload


def test_a_post_with_the_token_is_queued_with_202(served) -> None:
    feed, sink, port = served
    status, payload = post(port, {"keys": ["A1", 7, "A1"], "changed_at": 1_700_000_000.5})
    assert status == 202 and payload == {"status": "queued", "keys": 2}
    assert [(e.key, e.feed, e.changed_at) for e in sink.batches[0]] == [
        ("A1", "shop", 1_700_000_000.5),
        ("7", "shop", 1_700_000_000.5),
    ]
    assert feed.status().last_event_at is not None


def test_without_the_token_or_with_a_wrong_one_it_is_401_and_nothing_is_queued(served) -> None:
    _, sink, port = served
    assert post(port, {"keys": ["A1"]}, token=None)[0] == 401
    assert post(port, {"keys": ["A1"]}, token="wrong")[0] == 401
    assert post(port, {"keys": ["A1"]}, token=TOKEN + "x")[0] == 401
    assert sink.batches == []


def test_a_body_too_large_or_too_many_keys_is_413(served) -> None:
    _, sink, port = served
    status, payload = post(port, None, raw=b'{"keys": ["' + b"x" * 500 + b'"]}')
    assert status == 413 and "max_body_bytes=400" in payload["error"]
    status, payload = post(port, {"keys": ["a", "b", "c", "d", "e", "f"]})
    assert status == 413 and "max_keys=5" in payload["error"]
    assert sink.batches == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"keys": "A1"}', "keys: missing or not a list"),
        (b'{"key": ["A1"]}', "unknown field 'key'"),
        (b'{"keys": [true]}', "keys[0]"),
        (b'{"keys": ["A1", ""]}', "keys[1]"),
        (b'{"keys": ["A1"], "changed_at": "yesterday"}', "changed_at"),
    ],
)
def test_a_bad_body_is_400_naming_the_problem(served, body: bytes, problem: str) -> None:
    _, sink, port = served
    status, payload = post(port, None, raw=body)
    assert status == 400 and problem in payload["error"]
    assert sink.batches == []


def test_an_unknown_feed_is_404(served) -> None:
    _, _, port = served
    assert post(port, {"keys": ["A1"]}, path="/feeds/other")[0] == 404


def test_waiting_answers_200_once_pushed_and_503_when_not(served) -> None:
    feed, sink, port = served
    status, payload = post(port, {"keys": ["A1"]}, path="/feeds/shop?wait=1")
    assert status == 200 and payload["status"] == "pushed"
    sink.ok = False
    status, payload = post(port, {"keys": ["A1"]}, path="/feeds/shop?wait=1")
    assert status == 503 and payload["status"] == "not pushed"
    assert feed.status().missed_since is None  # the caller knows and retries
    sink.ok = None  # never settled: the wait times out
    status, payload = post(port, {"keys": ["A1"]}, path="/feeds/shop?wait=1")
    assert status == 503 and "wait_timeout_s" in payload["error"]


def test_a_queued_batch_that_was_not_pushed_marks_the_feed_as_missing_changes(served) -> None:
    feed, sink, port = served
    sink.ok = False
    assert post(port, {"keys": ["A1"]})[0] == 202
    assert feed.status().missed_since is not None


def test_the_token_is_never_logged_nor_shown(served, capsys) -> None:
    feed, _, port = served
    post(port, {"keys": ["A1"]})
    post(port, {"keys": ["A1"]}, token="wrong")
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert TOKEN not in repr(feed) and TOKEN not in repr(feed.status())


# -- the syncer ---------------------------------------------------------------------------


def _report(ok: bool) -> RunReport:
    outcome = "ok" if ok else "partial"
    target = TargetReport("uf", "userflux", 1, "feed", "", outcome)
    return RunReport((target,), 1, True)


@pytest.fixture
def syncer(monkeypatch, tmp_path) -> Iterator[tuple[FeedSyncer, list[list[str]]]]:
    raw = {
        "source": {
            "kind": "sql",
            "url": f"sqlite:///{tmp_path / 's.db'}",
            "table": "t",
            "key": "id",
        },
        "targets": [userflux_target("http://127.0.0.1:9")],
        "feed_sync": {"coalesce_s": 0.2, "max_batch": 3},
    }
    config = parse_config(raw, environ=ENV)
    calls: list[list[str]] = []
    behaviour: dict[str, Any] = {"locked": 0, "ok": True}

    def fake_sync(config: Any, store: Any, keys: Sequence[str], **kwargs: Any) -> TargetedSync:
        calls.append(list(keys))
        read = TargetedRead(found=frozenset(keys))
        if behaviour["locked"]:
            behaviour["locked"] -= 1
            return TargetedSync(read, _report(False), locked=True)
        return TargetedSync(read, _report(behaviour["ok"]), {"uf": time.time()})

    monkeypatch.setattr(syncer_module, "sync_keys", fake_sync)

    class Store:
        def recent_runs(
            self, target: str, limit: int = 20, *, feed: bool | None = None
        ) -> list[Any]:
            return []

    made = FeedSyncer(config, Store())  # type: ignore[arg-type]
    made.retry_locked_s = 0.05
    made.behaviour = behaviour  # type: ignore[attr-defined]
    made.start()
    yield made, calls
    made.stop(5)


def _event(key: str) -> KeyEvent:
    return KeyEvent(key, "shop", time.time())


def test_events_for_one_key_within_the_window_become_one_read(syncer) -> None:
    made, calls = syncer
    results: list[bool] = []
    made.sink([_event("A"), _event("A")], results.append)
    made.sink([_event("A"), _event("B")], results.append)
    deadline = time.monotonic() + 5
    while len(results) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [["A", "B"]]
    assert results == [True, True]


def test_a_batch_is_at_most_max_batch_keys(syncer) -> None:
    made, calls = syncer
    results: list[bool] = []
    made.sink([_event(k) for k in "ABCDE"], results.append)
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(c) for c in calls] == [3, 2]
    assert results == [True]  # once, after its last key


def test_a_batch_not_pushed_everywhere_is_done_false(syncer) -> None:
    made, _ = syncer
    made.behaviour["ok"] = False
    results: list[bool] = []
    made.sink([_event("A")], results.append)
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results == [False]


def test_keys_a_locked_target_held_back_are_tried_again(syncer) -> None:
    made, calls = syncer
    made.behaviour["locked"] = 2
    results: list[bool] = []
    made.sink([_event("A")], results.append)
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [["A"], ["A"], ["A"]] and results == [True]


def test_keys_still_waiting_at_stop_are_not_acknowledged(syncer) -> None:
    made, calls = syncer
    made.coalesce_s = 30.0
    results: list[bool] = []
    made.sink([_event("A")], results.append)
    made.stop(5)
    assert results == [False] and calls == []


def test_status_shows_the_last_run_over_the_whole_catalog_not_a_feed_run() -> None:
    from syncd.cli import _last_real_run
    from syncd.model import RunRecord

    night = RunRecord(1, "uf", 1.0, 2.0, "incremental", "", "ok")
    feed = RunRecord(2, "uf", 3.0, 4.0, "feed", "", "blocked")
    assert _last_real_run([feed, night]) is night
    assert _last_real_run([feed]) is feed  # nothing else yet: the feed's run is all there is


def test_the_next_targeted_sync_waits_out_the_rate_limit_the_last_one_used(syncer) -> None:
    made, _ = syncer
    made.config = made.config.model_copy(
        update={"targets": [made.config.targets[0].model_copy(update={"rate_limit_per_s": 10})]}
    )
    report = RunReport((TargetReport("uf", "userflux", 1, "feed", "", "ok", requests=5),), 5, True)
    outcome = TargetedSync(TargetedRead(found=frozenset("A")), report)
    assert made._send_time(outcome) == 0.5  # 5 requests at 10/s
