"""Fixtures of the feed tests: a recording sink, a feed run in a thread, and the local
RabbitMQ (127.0.0.1:5672, guest/guest) behind a fresh queue name per test."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from syncd.feeds.base import ChangeFeed, Done, KeyEvent
from tests.conftest import _unavailable

RABBIT_URL = os.environ.get("SYNCD_TEST_RABBITMQ", "amqp://127.0.0.1:5672/%2F")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


@dataclass
class RecordingSink:
    """A fake of the daemon's queue: records each batch and its ``Done``; ``answer``
    (True/False/None) is what it says at once (None: it never calls Done itself)."""

    answer: bool | None = True
    batches: list[list[KeyEvent]] = field(default_factory=list)
    dones: list[Done] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, events: Sequence[KeyEvent], done: Done) -> None:
        with self.lock:
            self.batches.append(list(events))
            self.dones.append(done)
        if self.answer is not None:
            done(self.answer)

    @property
    def keys(self) -> list[str]:
        with self.lock:
            return [event.key for batch in self.batches for event in batch]


@dataclass
class Running:
    feed: ChangeFeed
    sink: RecordingSink
    stop: threading.Event
    thread: threading.Thread

    def halt(self, within: float = 3.0) -> float:
        """Set stop; the seconds ``run`` took to return (fails past ``within``)."""
        started = time.monotonic()
        self.stop.set()
        self.thread.join(within)
        assert not self.thread.is_alive(), f"run() still running {within} s after stop"
        return time.monotonic() - started


@pytest.fixture
def start_feed() -> Iterator[Callable[..., Running]]:
    """Starts a feed's ``run`` in a thread; every one still running is stopped after."""
    running: list[Running] = []

    def start(feed: ChangeFeed, sink: RecordingSink | None = None) -> Running:
        sink = sink or RecordingSink()
        stop = threading.Event()
        thread = threading.Thread(target=feed.run, args=(sink, stop), daemon=True)
        thread.start()
        one = Running(feed, sink, stop, thread)
        running.append(one)
        return one

    yield start
    for one in running:
        one.stop.set()
    for one in running:
        one.thread.join(5)


@pytest.fixture
def rabbit() -> Iterator[Any]:
    """A channel on the local RabbitMQ; queues and exchanges named ``t.<hex>.*`` made
    through it are deleted after the test."""
    pika = pytest.importorskip("pika")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    except Exception as exc:
        _unavailable("RabbitMQ on 127.0.0.1:5672", exc)
    channel = conn.channel()
    made: dict[str, list[str]] = {"queues": [], "exchanges": []}
    yield _Broker(conn, channel, made)
    try:
        cleanup = conn.channel() if not channel.is_open else channel
        for queue in made["queues"]:
            cleanup.queue_delete(queue)
        for exchange in made["exchanges"]:
            cleanup.exchange_delete(exchange)
    finally:
        conn.close()


@dataclass
class _Broker:
    conn: Any
    channel: Any
    made: dict[str, list[str]]
    prefix: str = field(default_factory=lambda: f"t.{uuid.uuid4().hex[:10]}")

    def name(self, what: str) -> str:
        """A queue name of this test (deleted after it)."""
        name = f"{self.prefix}.{what}"
        self.made["queues"].append(name)
        return name

    def exchange(self, what: str, kind: str = "topic") -> str:
        name = f"{self.prefix}.{what}"
        self.channel.exchange_declare(name, exchange_type=kind, auto_delete=False)
        self.made["exchanges"].append(name)
        return name

    def publish(self, queue: str, body: bytes | str, exchange: str = "", **props: Any) -> None:
        import pika

        data = body.encode() if isinstance(body, str) else body
        self.channel.basic_publish(
            exchange, queue, data, properties=pika.BasicProperties(**props) if props else None
        )

    def count(self, queue: str) -> int:
        """Messages ready in ``queue`` (not delivered to a consumer)."""
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def get(self, queue: str) -> tuple[Any, bytes] | None:
        method, _, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else (method, body)
