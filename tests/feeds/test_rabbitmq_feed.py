"""The RabbitMQ feed against the local broker: delivery, acknowledgement only after the
push, requeue on failure, redelivery after a crash, dead-lettering, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

pytest.importorskip("pika")

from syncd.config.feeds_more import RabbitFeedConfig
from syncd.feeds.rabbitmq import RabbitFeed, parse_message
from tests.feeds.conftest import RABBIT_URL, RecordingSink, wait_until

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).resolve().parents[2]


def _config(queue: str, **changes: Any) -> RabbitFeedConfig:
    values: dict[str, Any] = {
        "kind": "rabbitmq",
        "url": RABBIT_URL,
        "queue": queue,
        "declare": True,
        "durable": False,
        "key_path": "sku",
        "reconnect_delay_s": 0.05,
        "reconnect_max_delay_s": 0.2,
        "nack_delay_s": 0.05,
    }
    values.update(changes)
    return RabbitFeedConfig(**values)


def _feed(config: RabbitFeedConfig) -> RabbitFeed:
    return RabbitFeed(config, config.url or "")


def _connected(running: Any) -> None:
    wait_until(lambda: running.feed.status().connected, what="the feed to connect")


def test_a_published_message_reaches_the_sink_and_is_acked_after_done(rabbit, start_feed) -> None:
    queue = rabbit.name("products")
    running = start_feed(_feed(_config(queue)), RecordingSink(answer=None))
    _connected(running)
    rabbit.publish(queue, json.dumps({"sku": "A-1", "price": 10}), timestamp=1_700_000_000)
    wait_until(lambda: running.sink.dones, what="a batch")
    [[event]] = running.sink.batches
    assert (event.key, event.feed, event.changed_at) == ("A-1", "rabbitmq", 1_700_000_000.0)
    assert running.feed.status().last_event_at == event.received_at
    running.halt()
    # not acknowledged yet when the consumer went away: the message is back in the queue
    assert rabbit.count(queue) == 1

    running = start_feed(_feed(_config(queue)), RecordingSink(answer=None))
    wait_until(lambda: running.sink.dones, what="the redelivery")
    running.sink.dones[0](True)
    time.sleep(0.3)  # the ack goes out on the feed's own thread
    running.halt()
    assert rabbit.count(queue) == 0  # acknowledged: gone for good


def test_done_false_requeues_the_batch_and_it_is_delivered_again(rabbit, start_feed) -> None:
    queue = rabbit.name("failing")
    sink = RecordingSink(answer=False)
    running = start_feed(_feed(_config(queue)), sink)
    _connected(running)
    rabbit.publish(queue, json.dumps({"sku": "B-1"}))
    wait_until(lambda: len(sink.batches) >= 3, what="three deliveries")
    sink.answer = True
    count = len(sink.batches)
    time.sleep(0.5)
    assert sink.keys == ["B-1"] * len(sink.batches)
    assert len(sink.batches) <= count + 1  # taken once it is pushed: no more redelivery
    running.halt()
    assert rabbit.count(queue) == 0


def test_requeues_back_off_while_the_targets_keep_failing(rabbit, start_feed) -> None:
    queue = rabbit.name("backoff")
    sink = RecordingSink(answer=False)
    config = _config(queue, nack_delay_s=0.2, reconnect_max_delay_s=5)
    running = start_feed(_feed(config), sink)
    _connected(running)
    rabbit.publish(queue, json.dumps({"sku": "C-1"}))
    time.sleep(2.0)
    running.halt()
    # no back-off would mean hundreds of deliveries in 2 s; 0.2 s doubling gives a handful
    assert 2 <= len(sink.batches) <= 6


def test_a_consumer_killed_before_done_has_its_message_redelivered(rabbit, start_feed) -> None:
    queue = rabbit.name("crash")
    script = textwrap.dedent(
        f"""
        import sys, threading
        from syncd.config.feeds_more import RabbitFeedConfig
        from syncd.feeds.rabbitmq import RabbitFeed
        config = RabbitFeedConfig(kind="rabbitmq", url={RABBIT_URL!r}, queue={queue!r},
                                  declare=True, durable=False, key_path="sku")
        def sink(events, done):  # never says done: killed mid-push
            print("got", *[e.key for e in events], flush=True)
        RabbitFeed(config, config.url).run(sink, threading.Event())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while rabbit_consumers(rabbit, queue) == 0:
            assert time.monotonic() < deadline and child.poll() is None, "child never consumed"
            time.sleep(0.05)
        rabbit.publish(queue, json.dumps({"sku": "D-1"}))
        assert child.stdout is not None
        lines = iter(child.stdout.readline, "")
        assert next(line for line in lines if line.startswith("got")).split() == ["got", "D-1"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    running = start_feed(_feed(_config(queue)))
    wait_until(lambda: running.sink.keys, what="the redelivery")
    assert running.sink.keys == ["D-1"]
    time.sleep(0.3)
    running.halt()
    assert rabbit.count(queue) == 0


def rabbit_consumers(rabbit: Any, queue: str) -> int:
    try:
        return int(rabbit.channel.queue_declare(queue, passive=True).method.consumer_count)
    except Exception:  # not declared yet: the passive declare closed the channel
        rabbit.channel = rabbit.conn.channel()
        return 0


def test_done_after_the_connection_closed_does_not_raise(rabbit, start_feed) -> None:
    queue = rabbit.name("late")
    running = start_feed(_feed(_config(queue)), RecordingSink(answer=None))
    _connected(running)
    rabbit.publish(queue, json.dumps({"sku": "E-1"}))
    wait_until(lambda: running.sink.dones, what="a batch")
    running.halt()
    running.sink.dones[0](True)  # too late: logged, the broker redelivers it
    assert rabbit.count(queue) == 1


def test_an_unreadable_message_is_dead_lettered_and_the_rest_flow(rabbit, start_feed) -> None:
    dlx = rabbit.exchange("dlx", kind="fanout")
    dead = rabbit.name("dead")
    rabbit.channel.queue_declare(dead)
    rabbit.channel.queue_bind(dead, dlx)
    queue = rabbit.name("mixed")
    running = start_feed(_feed(_config(queue, dead_letter_exchange=dlx)))
    _connected(running)
    with capture_logs() as logs:
        rabbit.publish(queue, b"{not json")
        rabbit.publish(queue, json.dumps({"price": 1}))  # no sku
        rabbit.publish(queue, json.dumps({"sku": "F-1"}))
        wait_until(lambda: running.sink.keys, what="the good message")
        wait_until(lambda: rabbit.count(dead) == 2, what="two dead letters")
    assert running.sink.keys == ["F-1"]
    bodies = sorted(body for _, body in filter(None, (rabbit.get(dead), rabbit.get(dead))))
    assert bodies == [b'{"price": 1}', b"{not json"]
    rejected = [log for log in logs if log["event"] == "syncd.feed.message_rejected"]
    assert [log["reason"] for log in rejected][1] == "message: no key at 'sku'"
    time.sleep(0.2)
    running.halt()
    assert rabbit.count(queue) == 0


def test_a_queue_bound_to_the_backends_exchange_gets_its_events(rabbit, start_feed) -> None:
    events = rabbit.exchange("catalog")
    queue = rabbit.name("bound")
    config = _config(queue, exchange=events, routing_key="product.*")
    running = start_feed(_feed(config))
    _connected(running)
    rabbit.publish("product.updated", json.dumps({"sku": "G-1"}), exchange=events)
    rabbit.publish("order.created", json.dumps({"sku": "not-a-product"}), exchange=events)
    rabbit.publish("product.deleted", json.dumps({"sku": "G-2"}), exchange=events)
    wait_until(lambda: len(running.sink.keys) >= 2, what="two events")
    time.sleep(0.2)
    assert running.sink.keys == ["G-1", "G-2"]


def test_text_messages_name_one_key_per_line(rabbit, start_feed) -> None:
    queue = rabbit.name("text")
    running = start_feed(_feed(_config(queue, format="text")))
    _connected(running)
    rabbit.publish(queue, "H-1\n\nH-2\n")
    wait_until(lambda: len(running.sink.keys) >= 2, what="two keys")
    assert running.sink.keys == ["H-1", "H-2"]


def test_a_missing_queue_is_reported_by_name_and_retried(rabbit, start_feed) -> None:
    queue = rabbit.name("absent")
    feed = _feed(_config(queue, declare=False))
    running = start_feed(feed)
    status = wait_until(lambda: (s := feed.status()).error and s, what="an error")
    assert not status.connected
    assert f"looking up queue {queue!r}" in (status.error or "")
    assert "NOT_FOUND" in (status.error or "")
    rabbit.channel.queue_declare(queue)  # created later: the feed then connects
    _connected(running)
    rabbit.publish(queue, json.dumps({"sku": "I-1"}))
    wait_until(lambda: running.sink.keys, what="a key")


def test_a_wrong_password_is_reported_without_the_password(rabbit, start_feed) -> None:
    secret = "wrong-rabbit-password-987"
    config = _config(rabbit.name("auth"), url="amqp://guest@127.0.0.1:5672/%2F",
                     password_env="RABBIT_PASSWORD")  # fmt: skip
    feed = RabbitFeed(config, config.url or "", password=secret)
    running = start_feed(feed)
    status = wait_until(lambda: (s := feed.status()).error and s, what="an error")
    assert not status.connected
    assert secret not in (status.error or "")
    assert "connecting" in (status.error or "")
    assert running.halt() < 2.0


def test_stop_ends_run_promptly_connected_or_not(rabbit, start_feed) -> None:
    running = start_feed(_feed(_config(rabbit.name("stop"))))
    _connected(running)
    assert running.halt() < 2.0
    assert not running.feed.status().connected
    down = start_feed(
        _feed(
            _config(
                "q", url="amqp://127.0.0.1:1/%2F", reconnect_delay_s=30, reconnect_max_delay_s=60
            )
        )
    )
    wait_until(lambda: down.feed.status().error, what="a connection error")
    assert down.halt() < 2.0


def test_a_burst_is_handed_over_in_batches_and_every_message_acked(rabbit, start_feed) -> None:
    queue = rabbit.name("burst")
    running = start_feed(_feed(_config(queue, prefetch=50)))
    _connected(running)
    for i in range(300):
        rabbit.publish(queue, json.dumps({"sku": f"J-{i}"}))
    wait_until(lambda: len(running.sink.keys) >= 300, what="300 keys")
    assert sorted(running.sink.keys) == sorted(f"J-{i}" for i in range(300))
    assert len(running.sink.batches) < 300
    assert max(len(batch) for batch in running.sink.batches) <= 50
    time.sleep(0.3)
    running.halt()
    assert rabbit.count(queue) == 0


# ------------------------------------------------------------------------------------
# Reading messages (no broker)


def _parse(body: str, **changes: Any) -> list[tuple[str, float | None]]:
    config = RabbitFeedConfig(kind="rabbitmq", queue="q", **changes)
    return parse_message(body.encode(), config, 5.0)


def test_json_messages_name_keys_at_the_configured_path() -> None:
    assert _parse('{"key": "A"}') == [("A", 5.0)]
    assert _parse('{"data": {"sku": 12}}', key_path="data.sku") == [("12", 5.0)]
    assert _parse('{"skus": ["A", "B"]}', key_path="skus") == [("A", 5.0), ("B", 5.0)]
    assert _parse('["A", 7]') == [("A", 5.0), ("7", 5.0)]
    assert _parse('[{"id": "A", "at": 9}, {"id": "B"}]', key_path="id", changed_at_path="at") == [
        ("A", 9.0),
        ("B", 5.0),
    ]
    assert _parse('{"id": "A", "at": "2026-01-01T00:00:00Z"}', key_path="id",
                  changed_at_path="at") == [("A", 1767225600.0)]  # fmt: skip


def test_unreadable_messages_say_what_is_wrong() -> None:
    cases = {
        "{": "not JSON",
        '{"sku": "A"}': "no key at 'key'",
        '{"key": null}': "no key at 'key'",
        '{"key": {"a": 1}}': "a key must be a string or an integer, not dict",
        '{"key": true}': "not bool",
        '{"key": " "}': "an empty key",
        "[]": "no key",
        '{"key": "' + "x" * 2000 + '"}': "2000 characters",
    }
    for body, reason in cases.items():
        with pytest.raises(ValueError, match=reason):
            _parse(body)
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_message(b"\xff\xfe", RabbitFeedConfig(kind="rabbitmq", queue="q"))
    with pytest.raises(ValueError, match="ISO 8601"):
        _parse('{"key": "A", "at": "yesterday"}', changed_at_path="at")
    with pytest.raises(ValueError, match="empty message"):
        _parse("\n \n", format="text")


def test_a_deleted_queue_is_declared_again_and_consumed(rabbit, start_feed) -> None:
    queue = rabbit.name("deleted")
    feed = _feed(_config(queue))
    running = start_feed(feed)
    _connected(running)
    with capture_logs() as logs:
        rabbit.channel.queue_delete(queue)  # the broker cancels the consumer
        wait_until(
            lambda: any(log["event"] == "syncd.feed.disconnected" for log in logs),
            what="the cancellation",
        )
        wait_until(lambda: rabbit_consumers(rabbit, queue) == 1, what="a new consumer")
    [lost] = [log for log in logs if log["event"] == "syncd.feed.disconnected"]
    assert "cancelled the consumer" in lost["error"]
    _connected(running)
    rabbit.publish(queue, json.dumps({"sku": "K-1"}))
    wait_until(lambda: running.sink.keys == ["K-1"], what="a key after the new declare")
