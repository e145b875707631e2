"""The daemon with the PostgreSQL and the RabbitMQ feeds, PostgreSQL the source: a stream
of updates, inserts and deletes reaches both fake targets within seconds and the scheduled
reconcile then repairs nothing; with the feed's connection cut, the postgres feed's misses
are repaired exactly by the reconcile, and the RabbitMQ feed misses nothing (the durable
messages published meanwhile are delivered once it is back)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import parse_config
from syncd.daemon import Daemon
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.state import open_store
from tests.feeds.conftest import wait_until
from tests.support import (
    ENV,
    KEY,
    catalog,
    expected_userflux,
    expected_vambe,
    load_table,
    userflux_target,
    vambe_target,
)
from tests.test_feeds_daemon import _current, _execute, _metric


def _stream(start: int) -> list[str]:
    """Four updates, two inserts and two deletes, one statement (one commit) each."""
    return [
        f"UPDATE products SET price = {start}.25 WHERE sku = 'P{start:05d}'",
        f"UPDATE products SET title = 'Stream {start}' WHERE sku = 'P{start + 1:05d}'",
        f"INSERT INTO products VALUES ('N{start:05d}', 'New', 9.50, 'red', '<p>n</p>', 3)",
        f"DELETE FROM products WHERE sku = 'P{start + 2:05d}'",
        f"UPDATE products SET color = 'blue' WHERE sku = 'P{start + 3:05d}'",
        f"INSERT INTO products VALUES ('N{start + 1:05d}', 'New', 8.50, 'red', '<p>n</p>', 2)",
        f"DELETE FROM products WHERE sku = 'P{start + 4:05d}'",
        f"UPDATE products SET price = 77.10 WHERE sku = 'P{start + 5:05d}'",
    ]


@contextmanager
def _fakes() -> Iterator[tuple[FakeUserflux, FakeVambe, str]]:
    """Both fake targets at 50 ms a request, and the Vambe block."""
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        userflux.latency = vambe.latency = 0.05
        yield userflux, vambe, vambe.add_block()


@contextmanager
def _daemon(
    pg_url: str, tmp_path: Path, feed: dict[str, Any], fakes: tuple[FakeUserflux, FakeVambe, str]
) -> Iterator[tuple[Daemon, int, Callable[[], bool]]]:
    """A daemon over the PostgreSQL source with ``feed``; yields it, its listener's port,
    and a check that both fakes equal the source."""
    userflux, vambe, block = fakes
    raw = {
        "source": {
            "kind": "sql",
            "url": pg_url,
            "query": "SELECT * FROM products",
            "key": "sku",
        },
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "targets": [userflux_target(userflux.url), vambe_target(vambe.url, block)],
        "schedule": {"cron": "0 3 1 1 *", "catch_up": False},
        "health": {"host": "127.0.0.1", "port": 0},
        "feeds": [feed],
        "feed_sync": {"coalesce_s": 0.1},
    }
    config = parse_config(raw, environ=ENV)

    def in_line() -> bool:
        records = _current(pg_url)
        return bool(
            userflux.products == expected_userflux(records)
            and vambe.block_products(block) == expected_vambe(records)
        )

    daemon = Daemon(config, lambda: open_store(config.state.url), environ=ENV)
    daemon.start()
    try:
        port = int(daemon.health_url.rsplit(":", 1)[1])  # type: ignore[union-attr]
        yield daemon, port, in_line
    finally:
        assert daemon.shutdown()


def _night(daemon: Daemon) -> list[tuple[int, int, int]]:
    report = daemon.run_once(full=False, reason="", trigger="test")
    assert report is not None and report.ok
    return [(t.created, t.updated, t.deleted) for t in report.targets]


def _connected(daemon: Daemon) -> bool:
    assert daemon.feeds is not None
    return all(s.connected for s in daemon.feeds.statuses())


# -- PostgreSQL LISTEN/NOTIFY -------------------------------------------------------------


def _listeners(pg_url: str) -> list[int]:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        found: list[int] = list(
            conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'syncd feed shop' "
                    "AND datname = current_database()"
                )
            ).scalars()
        )
    engine.dispose()
    return found


def test_the_postgres_feed_pushes_a_stream_and_the_reconcile_repairs_exactly_what_a_cut_missed(
    pg_url: str, tmp_path: Path
) -> None:
    from syncd.feeds.postgres import install_trigger

    load_table(pg_url, catalog(60))
    install_trigger(pg_url, "products", "sku")
    feed = {
        "kind": "postgres",
        "name": "shop",
        "reconnect_delay_s": 6,
        "reconnect_max_delay_s": 6,
    }
    with _fakes() as fakes, _daemon(pg_url, tmp_path, feed, fakes) as (daemon, port, in_line):
        assert _night(daemon) == [(60, 0, 0)] * 2
        wait_until(lambda: _connected(daemon) and _listeners(pg_url), what="the listener")

        # a stream through the trigger, one commit every 50 ms
        started = time.monotonic()
        for statement in _stream(1) + _stream(11):
            _execute(pg_url, statement)
            time.sleep(0.05)
        wait_until(in_line, timeout=10, what="both fakes to equal the source")
        assert time.monotonic() - started < 5
        wait_until(  # observed just after the acknowledgement is recorded
            lambda: _metric(port, "syncd_feed_latency_seconds_count", target="uf", feed="shop")
            == 16,
            what="16 latencies observed",
        )
        assert _metric(port, "syncd_feed_gone_events_total", feed="shop") == 4
        assert _night(daemon) == [(0, 0, 0)] * 2
        assert _metric(port, "syncd_feed_repaired_products", target="uf") == 0

        # the listener's connection cut: what is committed before it reconnects is missed
        _execute(pg_url, *(f"SELECT pg_terminate_backend({pid})" for pid in _listeners(pg_url)))
        wait_until(lambda: not _listeners(pg_url), what="the listener to be gone")
        wait_until(lambda: not _connected(daemon), what="the feed to notice")
        missed = _stream(31)  # 2 creates, 4 updates, 2 deletes
        for statement in missed:
            _execute(pg_url, statement)
        assert not _listeners(pg_url), "the listener came back before the missed changes"
        status = daemon.feeds.statuses()[0]  # type: ignore[union-attr]
        assert status.missed_since is not None and status.error
        wait_until(lambda: _connected(daemon), timeout=15, what="the listener to reconnect")
        time.sleep(0.5)
        assert not in_line()  # nothing redelivered them
        assert _night(daemon) == [(2, 4, 2)] * 2  # exactly what was missed
        assert _metric(port, "syncd_feed_repaired_products", target="uf") == 8
        assert _metric(port, "syncd_feed_repaired_products", target="vb") == 8
        assert in_line()
        assert daemon.feeds.statuses()[0].missed_since is None  # type: ignore[union-attr]


# -- RabbitMQ -----------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> str:
    try:
        done = subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"rabbitmqctl not usable: {exc}")
    return done.stdout


def _close_feed_connections() -> int:
    """Closes the broker connections of syncd's feed (rabbitmqctl close_connection)."""
    closed = 0
    for line in _rabbitmqctl("-q", "list_connections", "pid", "client_properties").splitlines():
        if "syncd feed shop" in line:
            _rabbitmqctl("close_connection", line.split()[0], "test: the feed cut")
            closed += 1
    return closed


def test_the_rabbitmq_feed_pushes_a_stream_and_a_cut_misses_nothing(
    pg_url: str, tmp_path: Path, rabbit: Any
) -> None:
    import pika

    load_table(pg_url, catalog(60))
    queue = rabbit.name("products")
    feed = {
        "kind": "rabbitmq",
        "name": "shop",
        "url": "amqp://127.0.0.1:5672/%2F",
        "queue": queue,
        "declare": True,
        "durable": True,
        "key_path": "sku",
        "reconnect_delay_s": 2,
        "reconnect_max_delay_s": 2,
    }
    durable = pika.BasicProperties(delivery_mode=2)

    def change(statements: list[str]) -> None:
        """Each statement committed, then its key published durably (as a backend would)."""
        for statement in statements:
            _execute(pg_url, statement)
            sku = statement.split("'")[1] if "INSERT" in statement else statement.split("'")[-2]
            body = json.dumps({"sku": sku, "at": time.time()})
            rabbit.channel.basic_publish("", queue, body.encode(), properties=durable)
            time.sleep(0.05)

    with _fakes() as fakes:
        _rabbit_phases(pg_url, tmp_path, feed, fakes, change, rabbit, queue)


def _rabbit_phases(
    pg_url: str,
    tmp_path: Path,
    feed: dict[str, Any],
    fakes: tuple[FakeUserflux, FakeVambe, str],
    change: Callable[[list[str]], None],
    rabbit: Any,
    queue: str,
) -> None:
    with _daemon(pg_url, tmp_path, feed, fakes) as (daemon, port, in_line):
        assert _night(daemon) == [(60, 0, 0)] * 2
        wait_until(lambda: _connected(daemon), what="the consumer")

        started = time.monotonic()
        change(_stream(1) + _stream(11))
        wait_until(in_line, timeout=10, what="both fakes to equal the source")
        assert time.monotonic() - started < 5
        wait_until(  # observed just after the acknowledgement is recorded
            lambda: _metric(port, "syncd_feed_latency_seconds_count", target="uf", feed="shop")
            == 16,
            what="16 latencies observed",
        )
        assert _night(daemon) == [(0, 0, 0)] * 2
        wait_until(lambda: rabbit.count(queue) == 0, what="every message acknowledged")

        # the broker closes the feed's connection; changes published meanwhile wait in
        # the queue and are delivered when it reconnects
        assert _close_feed_connections() == 1
        wait_until(lambda: not _connected(daemon), what="the feed to notice")
        change(_stream(31))
        wait_until(lambda: _connected(daemon), timeout=15, what="the consumer to reconnect")
        wait_until(in_line, timeout=10, what="the queued changes to be pushed")
        assert daemon.feeds.statuses()[0].missed_since is None  # type: ignore[union-attr]
        assert _night(daemon) == [(0, 0, 0)] * 2  # nothing missed: nothing to repair
        assert _metric(port, "syncd_feed_repaired_products", target="uf") == 0

    # consumption stopped (the daemon down): durable messages wait for the next one
    change(_stream(41))
    with _daemon(pg_url, tmp_path, feed, fakes) as (daemon, _, in_line):
        wait_until(in_line, timeout=15, what="the queued changes to be pushed")
        assert _night(daemon) == [(0, 0, 0)] * 2
