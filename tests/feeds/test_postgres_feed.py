"""The PostgreSQL LISTEN/NOTIFY feed against the local server: the trigger, the listener,
reconnects and what its status says about missed changes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from syncd.config.feeds_more import PostgresFeedConfig
from syncd.errors import SourceError
from syncd.feeds.pgtrigger import trigger_sql
from syncd.feeds.postgres import PostgresFeed, install_trigger, libpq_url, parse_payload
from tests.feeds.conftest import RecordingSink, wait_until

pytestmark = pytest.mark.postgres


def _config(**changes: Any) -> PostgresFeedConfig:
    values: dict[str, Any] = {
        "kind": "postgres",
        "name": f"pg-{uuid.uuid4().hex[:8]}",
        "reconnect_delay_s": 0.05,
        "reconnect_max_delay_s": 0.2,
    }
    values.update(changes)
    return PostgresFeedConfig(**values)


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A scratch database with a ``products`` table and the feed's trigger on it."""
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE products (sku text PRIMARY KEY, price numeric)")
        install_trigger(pg_url, "products", "sku")
        yield conn


def _listening(running: Any) -> None:
    wait_until(lambda: running.feed.status().connected, what="the feed to connect")


def test_inserts_updates_and_deletes_each_deliver_the_key(db, pg_url, start_feed) -> None:
    running = start_feed(PostgresFeed(_config(), pg_url))
    _listening(running)
    before = time.time()
    db.execute("INSERT INTO products VALUES ('A-1', 10)")
    db.execute("UPDATE products SET price = 12 WHERE sku = 'A-1'")
    db.execute("UPDATE products SET sku = 'A-2' WHERE sku = 'A-1'")  # the old key is gone
    db.execute("DELETE FROM products WHERE sku = 'A-2'")
    wait_until(lambda: len(running.sink.keys) >= 5, what="five notifications")
    assert running.sink.keys == ["A-1", "A-1", "A-2", "A-1", "A-2"]
    events = [event for batch in running.sink.batches for event in batch]
    for event in events:
        assert event.feed == running.feed.name
        assert event.changed_at is not None
        assert before - 1 <= event.changed_at <= event.received_at + 1
    assert running.feed.status().last_event_at == events[-1].received_at


def test_the_trigger_notifies_at_commit_with_the_commit_time(db, pg_url, start_feed) -> None:
    running = start_feed(PostgresFeed(_config(), pg_url))
    _listening(running)
    with db.transaction():
        db.execute("INSERT INTO products VALUES ('B-1', 1)")
        time.sleep(0.5)
        assert running.sink.keys == []  # nothing before the commit
        committing = time.time()
    event = wait_until(lambda: running.sink.batches and running.sink.batches[0][0])
    assert event.key == "B-1"
    # the deferred trigger runs at commit: its time is the commit's, not the insert's
    assert event.changed_at is not None and event.changed_at >= committing - 0.05


def test_a_rolled_back_change_notifies_nothing(db, pg_url, start_feed) -> None:
    running = start_feed(PostgresFeed(_config(), pg_url))
    _listening(running)
    with pytest.raises(RuntimeError), db.transaction():
        db.execute("INSERT INTO products VALUES ('C-1', 1)")
        raise RuntimeError("roll back")
    db.execute("INSERT INTO products VALUES ('C-2', 1)")
    wait_until(lambda: running.sink.keys, what="a notification")
    time.sleep(0.2)
    assert running.sink.keys == ["C-2"]


def test_an_integer_key_column_is_notified_as_text(pg_url, start_feed) -> None:
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop")
        conn.execute('CREATE TABLE shop."Items" (id bigint PRIMARY KEY, name text)')
        install_trigger(pg_url, "shop.Items", "id", "items_feed")
        running = start_feed(PostgresFeed(_config(channel="items_feed"), pg_url))
        _listening(running)
        conn.execute("""INSERT INTO shop."Items" VALUES (42, 'x')""")
        wait_until(lambda: running.sink.keys, what="a notification")
    assert running.sink.keys == ["42"]


def test_installing_twice_keeps_one_trigger(db, pg_url, start_feed) -> None:
    install_trigger(pg_url, "products", "sku")  # the fixture installed it once already
    count = db.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'products'::regclass AND NOT tgisinternal"
    ).fetchone()
    assert count == (1,)
    running = start_feed(PostgresFeed(_config(), pg_url))
    _listening(running)
    db.execute("INSERT INTO products VALUES ('D-1', 1)")
    wait_until(lambda: running.sink.keys, what="a notification")
    time.sleep(0.2)
    assert running.sink.keys == ["D-1"]  # once, not once per install


def test_install_errors_name_what_failed(pg_url) -> None:
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE products (sku text)")
    with pytest.raises(SourceError, match=r"column 'code' of table products.*code"):
        install_trigger(pg_url, "products", "code")
    with pytest.raises(SourceError, match=r"table missing.*does not exist"):
        install_trigger(pg_url, "missing", "sku")
    with pytest.raises(SourceError, match="could not connect"):
        install_trigger("postgresql://postgres@127.0.0.1:1/test", "products", "sku")


def test_bad_payloads_are_logged_and_skipped(db, pg_url, start_feed) -> None:
    config = _config()
    running = start_feed(PostgresFeed(config, pg_url))
    _listening(running)
    with capture_logs() as logs:
        for payload in ('{"op": "insert"}', "{not json", '{"key": ""}', "[1]", "  "):
            db.execute("SELECT pg_notify(%s, %s)", (config.channel, payload))
        db.execute("SELECT pg_notify(%s, %s)", (config.channel, "E-1"))  # a bare key
        wait_until(lambda: running.sink.keys, what="the good notification")
        time.sleep(0.1)
    assert running.sink.keys == ["E-1"]
    skipped = [log for log in logs if log["event"] == "syncd.feed.payload_skipped"]
    assert len(skipped) == 5  # the blank one too ("empty payload")
    assert {log["feed"] for log in skipped} == {config.feed_name}


def test_a_killed_connection_reconnects_and_status_says_changes_were_missed(
    db, pg_url, start_feed
) -> None:
    feed = PostgresFeed(_config(), pg_url)
    running = start_feed(feed)
    _listening(running)
    first = feed.status()
    assert first.missed_since is not None  # what changed before syncd listened is unknown
    assert feed.reconciled(time.time())  # a reconcile that started after the connect
    assert feed.status().missed_since is None

    killed_at = time.time()
    terminated = db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (f"syncd feed {feed.name}",),
    ).fetchall()
    assert terminated == [(True,)]
    db.execute("INSERT INTO products VALUES ('F-1', 1)")  # while it may be disconnected

    status = wait_until(
        lambda: (s := feed.status()).connected and s.missed_since is not None and s,
        what="the feed to reconnect",
    )
    assert status.missed_since is not None and status.missed_since >= killed_at
    db.execute("INSERT INTO products VALUES ('F-2', 1)")
    wait_until(lambda: "F-2" in running.sink.keys, what="a notification after the reconnect")
    # a reconcile that started before the reconnect does not clear it; a later one does
    assert not feed.reconciled(killed_at - 1)
    assert feed.status().missed_since is not None
    assert feed.reconciled(time.time())
    assert feed.status().missed_since is None


def test_a_batch_the_targets_did_not_take_marks_the_feed_as_having_missed(
    db, pg_url, start_feed
) -> None:
    feed = PostgresFeed(_config(), pg_url)
    running = start_feed(feed, RecordingSink(answer=None))
    _listening(running)
    feed.reconciled(time.time())
    db.execute("INSERT INTO products VALUES ('G-1', 1)")
    wait_until(lambda: running.sink.dones, what="a batch")
    assert feed.status().missed_since is None
    running.sink.dones[0](False)  # NOTIFY can't redeliver: the reconcile must repair it
    assert feed.status().missed_since is not None
    running.sink.dones[0](True)  # a second call is ignored (logged)
    assert feed.status().missed_since is not None


def test_stop_ends_run_promptly(db, pg_url, start_feed) -> None:
    running = start_feed(PostgresFeed(_config(), pg_url))
    _listening(running)
    assert running.halt() < 2.0
    assert not running.feed.status().connected


def test_an_unreachable_server_is_retried_and_stop_still_ends_run_promptly(start_feed) -> None:
    secret = "s3cret-pg-password-1234"
    feed = PostgresFeed(
        _config(reconnect_delay_s=30, reconnect_max_delay_s=60),
        "postgresql://syncd@127.0.0.1:1/shop",
        password=secret,
    )
    running = start_feed(feed)
    status = wait_until(lambda: (s := feed.status()).error and s, what="a connection error")
    assert not status.connected
    assert "127.0.0.1" in (status.error or "")
    assert secret not in (status.error or "")
    assert running.halt() < 2.0  # the 30 s back-off is cut short by stop


def test_parse_payload_reads_the_triggers_json_or_a_bare_key() -> None:
    assert parse_payload('{"key": "A", "op": "update", "at": 1700000000.5}') == (
        "A",
        1700000000.5,
    )
    assert parse_payload('{"key": 7}') == ("7", None)
    assert parse_payload(" SKU-1 ") == ("SKU-1", None)
    for bad in ("", "{", '{"key": null}', '{"key": true}', '{"key": ["A"]}'):
        with pytest.raises(ValueError):
            parse_payload(bad)


def test_trigger_sql_quotes_names_and_refuses_what_it_cannot_quote() -> None:
    script = trigger_sql("shop.Products", 'weird "key"', "chan_1")
    assert 'ON "shop"."Products"' in script
    assert "'chan_1', 'weird \"key\"'" in script
    assert "DEFERRABLE INITIALLY DEFERRED" in script
    for table in ("a b", "x;drop", "a.b.c", ""):
        with pytest.raises(ValueError, match="table"):
            trigger_sql(table, "sku")
    with pytest.raises(ValueError, match="channel"):
        trigger_sql("products", "sku", "bad-channel")


def test_a_long_key_is_not_notified_and_the_transaction_still_commits(
    db, pg_url, start_feed
) -> None:
    running = start_feed(PostgresFeed(_config(), pg_url))
    _listening(running)
    db.execute("INSERT INTO products VALUES (%s, 1)", ("K" * 9000,))
    db.execute("INSERT INTO products VALUES ('H-1', 1)")
    wait_until(lambda: running.sink.keys, what="a notification")
    time.sleep(0.1)
    assert running.sink.keys == ["H-1"]
    assert db.execute("SELECT count(*) FROM products").fetchone() == (2,)


def test_many_changes_arrive_in_batches_of_at_most_batch_max(db, pg_url, start_feed) -> None:
    running = start_feed(PostgresFeed(_config(batch_max=50), pg_url))
    _listening(running)
    db.execute("INSERT INTO products SELECT 'M-' || i, i FROM generate_series(1, 400) AS i")
    wait_until(lambda: len(running.sink.keys) >= 400, what="400 notifications")
    assert sorted(running.sink.keys) == sorted(f"M-{i}" for i in range(1, 401))
    assert max(len(batch) for batch in running.sink.batches) <= 50
    assert len(running.sink.batches) < 400  # gathered, not one by one


def test_status_is_readable_from_another_thread_while_running(db, pg_url, start_feed) -> None:
    feed = PostgresFeed(_config(), pg_url)
    running = start_feed(feed)
    _listening(running)
    seen: list[bool] = []
    reader = threading.Thread(
        target=lambda: seen.extend(feed.status().connected for _ in range(200))
    )
    reader.start()
    reader.join()
    assert all(seen)


def test_a_database_without_the_trigger_is_reported_in_the_status(pg_url, start_feed) -> None:
    running = start_feed(PostgresFeed(_config(channel="syncd_nothing_here"), pg_url))
    _listening(running)
    wait_until(lambda: running.feed.status().error, what="the status to say so")
    error = running.feed.status().error
    assert "no trigger syncd_notify_syncd_nothing_here" in error
    assert "feed-trigger" in error


def test_a_database_with_the_trigger_reports_no_problem(db, pg_url, start_feed) -> None:
    running = start_feed(PostgresFeed(_config(), pg_url))
    _listening(running)
    time.sleep(0.3)
    assert running.feed.status().error is None
