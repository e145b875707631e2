"""``python -m bench.feeds``: change-feed latency, from the source commit to each target's
acknowledgement, at a sustained rate of changes.

PostgreSQL is the source (a scratch database), the daemon runs in this process with the
feed under test, and both fake targets answer after ``--latency`` seconds (their default
rate limits: none). A load thread commits ``--rate`` changes a second for ``--seconds``
(updates, inserts, deletes), each in its own transaction, and the feed driver tells syncd
(the webhook: one ``POST /feeds/bench`` per change with its commit time as ``changed_at``).
The latency of a change is measured from that commit time to the moment its target
acknowledged the targeted sync that carried it. Then a nightly reconcile runs and must
find nothing to repair. CPU time is this whole process's (the fakes and the load included).

``--feed``: ``webhook`` (one POST per change), ``postgres`` (LISTEN/NOTIFY: the trigger of
``syncd feed-trigger`` installed on the table, its notification carries the commit time;
the driver does nothing), ``rabbitmq`` (one persistent message per change, published to a
fresh queue on the local broker with the commit time in the body), or ``all`` (each in
turn, then a summary beside the goal).
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench.postgres import SERVER, ScratchDatabase
from syncd.config import parse_config
from syncd.daemon import Daemon
from syncd.logs import configure_logging
from syncd.reconcile import Reconciler, RunOptions
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.state import open_store

KEY = "bench-key-0123456789"
TOKEN = "bench-feed-token-0123456789"
ENV = {"UF_KEY": KEY, "VB_KEY": KEY, "BENCH_FEED_TOKEN": TOKEN}

Driver = Callable[[str, float], None]
"""Told of each committed change: (key, commit time)."""


def webhook_driver(port: int) -> tuple[Driver, Callable[[], None]]:
    """One POST per change, from a small pool (a backend calling a webhook on save)."""
    pool = ThreadPoolExecutor(8, thread_name_prefix="bench-post")
    local = threading.local()

    def post(key: str, committed: float) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=30
            )
        body = json.dumps({"keys": [key], "changed_at": committed}).encode()
        try:
            connection.request(
                "POST",
                "/feeds/bench",
                body=body,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
            if response.status != 202:
                print(f"bench: webhook answered {response.status}", file=sys.stderr)
        finally:
            connection.close()  # the listener closes after each POST
            local.connection = None

    def tell(key: str, committed: float) -> None:
        pool.submit(post, key, committed)

    return tell, lambda: pool.shutdown(wait=True)


def postgres_driver(_port: int) -> tuple[Driver, Callable[[], None]]:
    """Nothing to do: the trigger notifies syncd of each commit."""
    return lambda _key, _committed: None, lambda: None


RABBIT_URL = "amqp://127.0.0.1:5672/%2F"


def rabbitmq_driver(_port: int, queue_name: str) -> tuple[Driver, Callable[[], None]]:
    """One persistent message per change, published from one thread (pika's connection is
    not thread-safe) to the default exchange, routed to the feed's queue."""
    import pika

    outbox: queue.Queue[tuple[str, float] | None] = queue.Queue()
    connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    channel = connection.channel()
    channel.queue_declare(queue_name, durable=True)
    persistent = pika.BasicProperties(delivery_mode=2, content_type="application/json")

    def publish() -> None:
        while (item := outbox.get()) is not None:
            key, committed = item
            body = json.dumps({"key": key, "at": committed}).encode()
            channel.basic_publish("", queue_name, body, properties=persistent)
        connection.close()

    thread = threading.Thread(target=publish, name="bench-publish", daemon=True)
    thread.start()

    def close() -> None:
        outbox.put(None)
        thread.join(30)

    return lambda key, committed: outbox.put((key, committed)), close


DRIVERS = ("webhook", "postgres", "rabbitmq")


def _driver(feed: str, port: int, queue_name: str) -> tuple[Driver, Callable[[], None]]:
    if feed == "webhook":
        return webhook_driver(port)
    if feed == "postgres":
        return postgres_driver(port)
    return rabbitmq_driver(port, queue_name)


def _feed_table(feed: str, queue_name: str) -> dict[str, Any]:
    """The ``[[feeds]]`` table of the feed under test."""
    if feed == "webhook":
        return {"kind": "webhook", "name": "bench", "token_env": "BENCH_FEED_TOKEN"}
    if feed == "postgres":
        return {"kind": "postgres", "name": "bench"}
    return {
        "kind": "rabbitmq",
        "name": "bench",
        "url": RABBIT_URL,
        "queue": queue_name,
        "declare": True,
        "changed_at_path": "at",
    }


def _config(
    db_url: str, workdir: Path, uf: str, vb: str, block: str, args: Any, queue_name: str
) -> Any:
    mapping_uf = {
        "properties": {
            "name": "title",
            "price": {"path": "price", "type": "number"},
            "color": "color",
        }
    }
    mapping_vb = {
        "name": "title",
        "description": "body",
        "price": {"path": "price", "type": "number"},
        "currency": {"const": "USD"},
    }
    targets: list[dict[str, Any]] = [
        {
            "name": "userflux",
            "kind": "userflux",
            "base_url": uf,
            "api_key_env": "UF_KEY",
            "type_id": "product",
            "mapping": mapping_uf,
        },
        {
            "name": "vambe",
            "kind": "vambe",
            "base_url": vb,
            "api_key_env": "VB_KEY",
            "block_id": block,
            "mapping": mapping_vb,
        },
    ]
    if args.userflux_rate_limit is not None:
        targets[0]["rate_limit_per_s"] = args.userflux_rate_limit
    raw = {
        "source": {"kind": "sql", "url": db_url, "query": "SELECT * FROM products", "key": "id"},
        "state": {"url": f"sqlite:///{workdir / 'feeds-state.db'}"},
        "targets": targets,
        "schedule": {"cron": "0 3 1 1 *", "catch_up": False, "refresh_period": ""},
        "health": {"host": "127.0.0.1", "port": 0},
        "feeds": [_feed_table(args.feed, queue_name)],
    }
    return parse_config(raw, environ=ENV)


def _load(conn: psycopg.Connection[Any], n: int) -> None:
    conn.execute(
        "CREATE TABLE products (id text PRIMARY KEY, title text, price numeric(10,2), "
        "color text, body text)"
    )
    with conn.cursor() as cursor, cursor.copy("COPY products FROM STDIN") as copy:
        for i in range(n):
            copy.write_row((f"B{i:06d}", f"Product {i}", f"{i % 90 + 10}.50", "red", f"About {i}"))
    conn.commit()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


Row = tuple[str, str, int, float, float, str]
"""One line of the summary: feed, target, acknowledgements, p50, p99, verdict."""


def run(args: Any) -> tuple[int, list[Row]]:
    """One feed's measure: its exit code and its summary rows."""
    workdir = Path(args.workdir)
    queue_name = f"syncd-bench-{int(time.time())}"
    rows: list[Row] = []
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "feeds-state.db").unlink(missing_ok=True)
    latencies: dict[str, list[float]] = {"userflux": [], "vambe": []}
    cpu0 = time.process_time()
    with (
        ScratchDatabase(f"syncd_bench_feeds_{int(time.time())}") as db,
        FakeUserflux(api_key=KEY) as userflux,
        FakeVambe(api_key=KEY) as vambe,
    ):
        block = vambe.add_block()
        with psycopg.connect(f"{SERVER} dbname={db.dbname}") as conn:
            _load(conn, args.n)
        if args.feed == "postgres":
            from syncd.feeds.postgres import install_trigger

            install_trigger(db.url, "products", "id")
        config = _config(db.url, workdir, userflux.url, vambe.url, block, args, queue_name)
        # the first sync fills the targets at full speed (not measured)
        unlimited = config.model_copy(
            update={
                "targets": [t.model_copy(update={"rate_limit_per_s": 0}) for t in config.targets]
            }
        )
        store = open_store(config.state.url)
        first = Reconciler(unlimited, store, environ=ENV).sync(RunOptions())
        store.close()
        assert first.ok, "the first sync failed"
        daemon = Daemon(config, lambda: open_store(config.state.url), environ=ENV)
        original = daemon.metrics.feed_acknowledged

        def record(target: str, feed: str, latency_s: float) -> None:
            latencies.setdefault(target, []).append(latency_s)
            original(target, feed, latency_s)

        daemon.metrics.feed_acknowledged = record  # type: ignore[method-assign]
        daemon.start()
        try:
            userflux.latency = vambe.latency = args.latency
            port = int((daemon.health_url or "").rsplit(":", 1)[1])
            if args.feed != "webhook":  # the listener or consumer is up before the load
                deadline = time.monotonic() + 30
                while not all(s.connected for s in daemon.feeds.statuses()):  # type: ignore[union-attr]
                    assert time.monotonic() < deadline, "the feed did not connect"
                    time.sleep(0.05)
            tell, close = _driver(args.feed, port, queue_name)
            changes = _drive(db.dbname, args, tell)
            close()
            if args.feed != "webhook":
                time.sleep(1.0)  # the last notifications or messages reach the feed first
            assert daemon.feeds is not None and daemon.feeds.wait_idle(300), "feeds not idle"
            cpu = time.process_time() - cpu0
            night = daemon.run_once(full=False, reason="", trigger="bench")
        finally:
            daemon.shutdown()
            if args.feed == "rabbitmq":
                _delete_queue(queue_name)
    print(
        f"change feed '{args.feed}': {sum(changes.values())} changes in {args.seconds:g} s "
        f"({', '.join(f'{k} {v}' for k, v in changes.items())}) at {args.rate:g}/s, "
        f"targets answering after {args.latency * 1000:g} ms, PostgreSQL source of {args.n} "
        f"products; UserFlux rate limit {config.targets[0].rate_limit_per_s:g}/s, Vambe "
        f"{config.targets[1].rate_limit_per_s:g}/s"
    )
    print(
        f"{'target':<10} {'acks':>6} {'p50 s':>7} {'p99 s':>7} {'max s':>7}"
        "   goal p50 < 2 s, p99 < 5 s"
    )
    ok = True
    for target, values in latencies.items():
        if not values:
            print(f"{target:<10} {'0':>6}")
            rows.append((args.feed, target, 0, float("nan"), float("nan"), "no acks"))
            ok = False
            continue
        p50, p99 = statistics.median(values), _percentile(values, 0.99)
        limit = config.target(target).rate_limit_per_s
        # UserFlux takes one request per product: its rate limit caps the changes it carries
        capped = target == "userflux" and 0 < limit < args.rate
        ok = ok and (capped or (p50 < 2 and p99 < 5))
        note = (
            f"   its rate limit ({limit:g} requests/s, one per product) is below the change "
            "rate: it can't keep up, the goal does not apply"
            if capped
            else ""
        )
        print(f"{target:<10} {len(values):>6} {p50:>7.3f} {p99:>7.3f} {max(values):>7.3f}{note}")
        verdict = "rate-limited" if capped else ("met" if p50 < 2 and p99 < 5 else "MISSED")
        rows.append((args.feed, target, len(values), p50, p99, verdict))
    print(f"CPU time of the process (daemon, fakes and load together): {cpu:.1f} s")
    if night is None:
        print("nightly reconcile: did not run")
        return 1, rows
    repaired = {t.target: t.created + t.updated + t.deleted for t in night.targets}
    print(
        "nightly reconcile after the burst: repaired "
        + ", ".join(f"{t} {n}" for t, n in repaired.items())
        + (" (nothing to repair)" if not any(repaired.values()) else " (the feed missed these)")
    )
    rows = [(*row[:5], f"{row[5]}, repaired {repaired.get(row[1], 0)}") for row in rows]
    return (0 if ok and not any(repaired.values()) and night.ok else 1), rows


def _delete_queue(name: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


def _summary(rows: list[Row]) -> None:
    print()
    print(
        f"{'feed':<9} {'target':<9} {'acks':>6} {'p50 s':>7} {'p99 s':>7}"
        "  goal p50 < 2 s, p99 < 5 s"
    )
    for feed, target, acks, p50, p99, verdict in rows:
        print(f"{feed:<9} {target:<9} {acks:>6} {p50:>7.3f} {p99:>7.3f}  {verdict}")


def _drive(dbname: str, args: Any, tell: Driver) -> dict[str, int]:
    """Commit ``args.rate`` changes a second for ``args.seconds``: 80 % updates, 10 %
    inserts, 10 % deletes, each its own transaction, telling the driver after the commit."""
    rng = random.Random(7)
    live = [f"B{i:06d}" for i in range(args.n)]
    next_id = args.n
    counts = {"updates": 0, "inserts": 0, "deletes": 0}
    interval = 1.0 / args.rate
    start = time.monotonic()
    with psycopg.connect(f"{SERVER} dbname={dbname}", autocommit=True) as conn:
        i = 0
        while time.monotonic() - start < args.seconds:
            due = start + i * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            roll = rng.random()
            if roll < 0.1:
                key = f"B{next_id:06d}"
                next_id += 1
                conn.execute(
                    "INSERT INTO products VALUES (%s, %s, %s, 'blue', 'new')",
                    (key, f"New {key}", f"{rng.randint(10, 99)}.25"),
                )
                live.append(key)
                counts["inserts"] += 1
            elif roll < 0.2 and live:
                key = live.pop(rng.randrange(len(live)))
                conn.execute("DELETE FROM products WHERE id = %s", (key,))
                counts["deletes"] += 1
            else:
                key = live[rng.randrange(len(live))]
                conn.execute(
                    "UPDATE products SET price = %s WHERE id = %s",
                    (f"{rng.randint(10, 99)}.{rng.randint(10, 99)}", key),
                )
                counts["updates"] += 1
            tell(key, time.time())
            i += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feeds", description=__doc__)
    parser.add_argument("--feed", choices=[*DRIVERS, "all"], default="webhook")
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--n", type=int, default=10_000, help="products in the source")
    parser.add_argument("--latency", type=float, default=0.05, help="the targets' answer time")
    parser.add_argument(
        "--userflux-rate-limit",
        type=float,
        default=None,
        help="UserFlux's rate_limit_per_s (default: the config default); one request per "
        "product, so below the change rate it can't keep up",
    )
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "syncd-bench"))
    configure_logging("warning")
    args = parser.parse_args(argv)
    feeds = DRIVERS if args.feed == "all" else (args.feed,)
    code, rows = 0, list[Row]()
    for feed in feeds:
        one_code, one_rows = run(argparse.Namespace(**{**vars(args), "feed": feed}))
        code, rows = max(code, one_code), rows + one_rows
        if len(feeds) > 1:
            print()
    _summary(rows)
    return code


if __name__ == "__main__":
    sys.exit(main())
