"""How long the database and broker feeds take to hand a change over: from the source's
commit (PostgreSQL: the trigger's commit time; RabbitMQ: the publisher's clock just before
publishing) to the sink receiving the key, at a sustained rate of changes.

Only the feed's share of the latency: the push to the targets comes after. Needs the
local PostgreSQL and RabbitMQ. ``python -m bench.feeds_handover [--rate 100] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from syncd.config.feeds_more import PostgresFeedConfig, RabbitFeedConfig
from syncd.feeds.base import ChangeFeed, Done, KeyEvent

PG = "postgresql://postgres@127.0.0.1:5432/test"
RABBIT = "amqp://127.0.0.1:5672/%2F"


class _Sink:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.batches = 0

    def __call__(self, events: Sequence[KeyEvent], done: Done) -> None:
        self.batches += 1
        self.lags.extend(e.received_at - e.changed_at for e in events if e.changed_at)
        done(True)


def _measure(
    feed: ChangeFeed, write: Callable[[int], None], rate: float, seconds: float
) -> dict[str, float]:
    sink, stop = _Sink(), threading.Event()
    thread = threading.Thread(target=feed.run, args=(sink, stop))
    thread.start()
    while not feed.status().connected:
        time.sleep(0.01)
    total = int(rate * seconds)
    cpu, start = time.process_time(), time.monotonic()
    for i in range(total):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        write(i)
    deadline = time.monotonic() + 10
    while len(sink.lags) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu = time.process_time() - cpu
    stop.set()
    thread.join()
    lags = sorted(sink.lags)
    return {
        "changes": total,
        "received": len(lags),
        "batches": sink.batches,
        "p50_ms": 1000 * statistics.median(lags),
        "p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "max_ms": 1000 * lags[-1],
        "cpu_s": cpu,
    }


def bench_postgres(rate: float, seconds: float) -> dict[str, float]:
    import psycopg

    from syncd.feeds.postgres import PostgresFeed, install_trigger

    table, channel = f"bench_feed_{uuid.uuid4().hex[:8]}", f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (sku text PRIMARY KEY, price int)")
        try:
            install_trigger(PG, table, "sku", channel)
            feed = PostgresFeed(PostgresFeedConfig(kind="postgres", channel=channel), PG)

            def write(i: int) -> None:  # one transaction per change, as a backend saves
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (f"SKU-{i}", i))

            return _measure(feed, write, rate, seconds)
        finally:
            conn.execute(f"DROP TABLE {table}")


def bench_rabbitmq(rate: float, seconds: float) -> dict[str, float]:
    import pika

    from syncd.feeds.rabbitmq import RabbitFeed

    queue = f"bench.feed.{uuid.uuid4().hex[:8]}"
    config = RabbitFeedConfig(
        kind="rabbitmq", queue=queue, declare=True, durable=False, changed_at_path="at"
    )
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT))
    channel = conn.channel()
    try:
        feed = RabbitFeed(config, RABBIT)

        def write(i: int) -> None:
            body = json.dumps({"key": f"SKU-{i}", "at": time.time()})
            channel.basic_publish("", queue, body.encode())

        return _measure(feed, write, rate, seconds)
    finally:
        channel.queue_delete(queue)
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    for name, bench in (("postgres", bench_postgres), ("rabbitmq", bench_rabbitmq)):
        result = bench(args.rate, args.seconds)
        print(
            f"{name:9} {result['received']}/{result['changes']} changes at {args.rate:g}/s in "
            f"{result['batches']} batches: commit -> sink p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms; "
            f"CPU {result['cpu_s']:.2f} s (feed + writer)"
        )


if __name__ == "__main__":
    main()
