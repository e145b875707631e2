"""The daemon with a change feed: a change reaches both fake targets within seconds, the
scheduled reconcile then repairs nothing; with the feed cut, it repairs exactly what was
missed. PostgreSQL is the source."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import parse_config
from syncd.daemon import Daemon
from syncd.sandbox import FakeUserflux, FakeVambe
from syncd.state import open_store
from syncd.state.schema import runs as runs_table
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

TOKEN = "feed-token-abcdefghijklmnop"


def _execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def _current(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM products ORDER BY sku")).mappings().all()
    engine.dispose()
    return [{**row, "price": f"{row['price']:.2f}"} for row in rows]


def _post(port: int, keys: list[str], wait: bool = True) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "POST",
        "/feeds/shop" + ("?wait=1" if wait else ""),
        body=json.dumps({"keys": keys, "changed_at": time.time()}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    return response.status, payload


def _metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_a_change_reaches_both_targets_via_the_feed_and_the_reconcile_repairs_only_what_it_missed(
    pg_url: str, tmp_path: Path
) -> None:
    load_table(pg_url, catalog(30))
    environ = {**ENV, "FEED_TOKEN": TOKEN}
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block()
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
            "feeds": [{"kind": "webhook", "name": "shop", "token_env": "FEED_TOKEN"}],
            "feed_sync": {"coalesce_s": 0.1},
        }
        config = parse_config(raw, environ=environ)
        daemon = Daemon(config, lambda: open_store(config.state.url), environ=environ)
        daemon.start()
        try:
            port = int(daemon.health_url.rsplit(":", 1)[1])  # type: ignore[union-attr]
            first = daemon.run_once(full=False, reason="", trigger="test")
            assert first is not None and first.ok

            # through the feed: an update, an insert and a delete, each within seconds
            _execute(
                pg_url,
                "UPDATE products SET price = 55.50 WHERE sku = 'P00001'",
                "INSERT INTO products VALUES ('P00100', 'Fresh', 20.50, 'red', '<p>New</p>', 1)",
                "DELETE FROM products WHERE sku = 'P00002'",
            )
            started = time.monotonic()
            status, payload = _post(port, ["P00001", "P00100", "P00002"])
            took = time.monotonic() - started
            assert (status, payload["status"]) == (200, "pushed")
            assert took < 5
            records = _current(pg_url)
            assert userflux.products == expected_userflux(records)
            assert vambe.block_products(block) == expected_vambe(records)
            assert _metric(port, "syncd_feed_latency_seconds_count", target="uf", feed="shop") == 3
            assert _metric(port, "syncd_feed_gone_events_total", feed="shop") == 1
            assert _metric(port, "syncd_feed_connected", feed="shop") == 1
            # the targeted syncs are counted apart from the scheduled runs
            assert _metric(port, "syncd_feed_runs_total", target="uf", outcome="ok") >= 1
            assert _metric(port, "syncd_runs_total", target="uf", outcome="ok") == 1
            assert _metric(port, "syncd_feed_products_total", target="uf", operation="deleted") == 1
            assert _metric(port, "syncd_feed_products_total", target="vb", operation="created") == 1

            # the nightly reconcile: nothing to repair
            night = daemon.run_once(full=False, reason="", trigger="test")
            assert night is not None and night.ok
            assert [(t.created, t.updated, t.deleted) for t in night.targets] == [(0, 0, 0)] * 2
            assert _metric(port, "syncd_feed_repaired_products", target="uf") == 0

            # the feed cut: changes nobody posts; the reconcile repairs exactly them
            _execute(
                pg_url,
                "UPDATE products SET title = 'Missed' WHERE sku IN ('P00003', 'P00004')",
                "DELETE FROM products WHERE sku = 'P00005'",
            )
            night = daemon.run_once(full=False, reason="", trigger="test")
            assert night is not None and night.ok
            assert [(t.updated, t.deleted) for t in night.targets] == [(2, 1), (2, 1)]
            assert _metric(port, "syncd_feed_repaired_products", target="uf") == 3
            assert _metric(port, "syncd_feed_repaired_products", target="vb") == 3
            records = _current(pg_url)
            assert userflux.products == expected_userflux(records)
            assert vambe.block_products(block) == expected_vambe(records)

            # the status page lists the feed
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as page:
                html = page.read().decode()
            assert 'id="feeds"' in html and "shop" in html and TOKEN not in html
        finally:
            assert daemon.shutdown()


def test_a_missed_scheduled_run_is_found_behind_many_feed_runs(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from syncd.daemon import find_missed_run
    from syncd.model import RunRecord

    raw = {
        "source": {"kind": "sql", "url": "sqlite:///x.db", "table": "t", "key": "sku"},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "targets": [userflux_target("http://127.0.0.1:9")],
        "schedule": {"cron": "0 3 * * *"},
    }
    config = parse_config(raw, environ=ENV)
    store = open_store(config.state.url)
    two_days_ago = time.time() - 2 * 86_400

    def record(mode: str, at: float) -> None:
        run_id = store.start_run("uf", mode=mode, mode_reason="", holder="h")
        store.finish_run(RunRecord(run_id, "uf", at, at + 1, mode, "", "ok", source_complete=True))

    record("incremental", two_days_ago)
    for i in range(60):  # a busy feed since
        record("feed", two_days_ago + 3600 + i)
    missed = find_missed_run(store, config, datetime.now(UTC))
    store.close()
    assert missed is not None and not missed.full


def test_the_live_demo_shows_a_change_reaching_both_fakes(tmp_path: Path) -> None:
    from syncd.demo.live import run_live_demo

    assert run_live_demo(tmp_path / "live") == 0


def test_a_daemon_killed_mid_burst_loses_nothing_after_the_next_reconcile(
    pg_url: str, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from syncd.reconcile import Reconciler, RunOptions
    from tests.test_daemon import free_port, subprocess_env

    load_table(pg_url, catalog(200))
    environ = {**ENV, "FEED_TOKEN": TOKEN}
    port = free_port()
    with FakeUserflux(api_key=KEY) as userflux, FakeVambe(api_key=KEY) as vambe:
        block = vambe.add_block()
        raw: dict[str, Any] = {
            "source": {
                "kind": "sql",
                "url": pg_url,
                "query": "SELECT * FROM products",
                "key": "sku",
            },
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "targets": [userflux_target(userflux.url), vambe_target(vambe.url, block)],
            "schedule": {"cron": "0 3 1 1 *", "catch_up": False, "lease_ttl_s": 1},
            "health": {"host": "127.0.0.1", "port": port},
            "feeds": [{"kind": "webhook", "name": "shop", "token_env": "FEED_TOKEN"}],
            "feed_sync": {"coalesce_s": 0.05, "max_batch": 5},
        }
        config = parse_config(raw, environ=environ)
        store = open_store(config.state.url)
        assert Reconciler(config, store, environ=ENV).sync(RunOptions()).ok
        store.close()
        toml = tmp_path / "config.toml"
        toml.write_text(_toml(raw), encoding="utf-8")
        userflux.latency = vambe.latency = 0.2  # slow enough to be killed mid-burst
        env = {**subprocess_env(), "FEED_TOKEN": TOKEN, **ENV}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(toml), "run"], env=env, cwd=tmp_path
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            statements = []
            for i in range(1, 61):
                sku = f"P{i:05d}"
                if i % 10 == 0:
                    statements.append(f"DELETE FROM products WHERE sku = '{sku}'")
                else:
                    statements.append(
                        f"UPDATE products SET title = 'Burst {i}' WHERE sku = '{sku}'"
                    )
            for i, statement in enumerate(statements, start=1):
                _execute(pg_url, statement)
                assert _post(port, [f"P{i:05d}"], wait=False)[0] == 202
            time.sleep(0.3)  # some batches pushed, others in flight or waiting
        finally:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
        time.sleep(1.5)  # the dead daemon's leases expire (lease_ttl_s = 1)
        store = open_store(config.state.url)
        night = Reconciler(config, store, environ=ENV).sync(RunOptions())
        store.close()
        assert night.ok
        # the kill left work undone, which the reconcile repaired
        assert sum(t.created + t.updated + t.deleted for t in night.targets) > 0
        # no product the source still has was ever deleted
        deleted = {r.path.rsplit("/", 1)[-1] for r in userflux.requests if r.method == "DELETE"}
        assert deleted <= {f"P{i:05d}" for i in range(10, 61, 10)}
        records = _current(pg_url)
        assert len(records) == 194
        assert userflux.products == expected_userflux(records)
        assert vambe.block_products(block) == expected_vambe(records)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _toml(raw: dict[str, Any]) -> str:
    """A config as TOML (every table inline)."""
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in raw.items())


def test_a_busy_feed_hides_no_scheduled_run_from_pruning_metrics_alerts_or_status(
    tmp_path: Path,
) -> None:
    from syncd.alerts import recorded_state
    from syncd.metrics import SyncdMetrics
    from syncd.model import RunRecord
    from syncd.statuspage import collect_status
    from tests.test_metrics import samples, value

    raw = {
        "source": {"kind": "sql", "url": "sqlite:///x.db", "table": "t", "key": "sku"},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "targets": [userflux_target("http://127.0.0.1:9")],
        "schedule": {"cron": "0 3 * * *"},
    }
    config = parse_config(raw, environ=ENV)
    store = open_store(config.state.url)
    try:
        run_id = store.start_run("uf", mode="incremental", mode_reason="", holder="h")
        store.finish_run(
            RunRecord(run_id, "uf", 1e9, 1e9 + 1, "incremental", "", "failed", error="boom")
        )
        feed_run = {
            "target": "uf", "started_at": 1e9 + 2, "finished_at": 1e9 + 3, "mode": "feed",
            "mode_reason": "feed: 1 changed products", "outcome": "ok", "created": 0,
            "updated": 1, "deleted": 0, "unchanged": 0, "rejected": 0, "failed": 0, "held": 0,
            "requests": 1, "retries": 0, "source_complete": True, "holder": "h",
        }  # fmt: skip
        with store.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(runs_table.insert(), [feed_run] * 6000)

        assert store.prune_runs("uf", before=0, keep=100) == 5900
        assert [r.mode for r in store.recent_runs("uf", limit=500, feed=False)] == ["incremental"]

        metrics = SyncdMetrics(["uf"])
        metrics.refresh_from_state(store, ["uf"])
        found = samples(metrics)
        assert value(found, "syncd_last_run_outcome", target="uf", outcome="failed") == 1
        assert recorded_state(store, "uf") == "failed"

        snapshot = collect_status(config, store, now=1e9 + 10)
        [target] = snapshot.targets
        assert target.last is not None and target.last.mode == "incremental"
        assert [r.mode for r in snapshot.runs] == ["incremental"]
    finally:
        store.close()
