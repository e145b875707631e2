"""``syncd demo --live``: a change reaching the fake targets within seconds, through the
webhook change feed of a running ``syncd run``.

Offline: the sample catalog goes into a SQLite database (a SQL source can be read by
key; a file can't), both fakes start on 127.0.0.1, a first ``syncd sync`` fills them,
then ``syncd run`` starts as a subprocess with a webhook feed. The demo changes a price
in the database, posts the key to ``/feeds/live?wait=1`` and shows the fakes holding
the new price, with the time it took; then a deleted product disappears the same way.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from syncd.demo import API_KEY, CATALOG, _load, _say, _syncd
from syncd.sandbox import FakeUserflux, FakeVambe

TOKEN = "demo-feed-token-not-a-secret"  # noqa: S105 (a demo against loopback fakes)
COLUMNS = (
    "id",
    "title",
    "description",
    "price",
    "brand",
    "category",
    "color",
    "size",
    "stock",
    "image",
)

CONFIG = """\
# Written by `syncd demo --live`: a SQLite source, two fake targets, a webhook feed.
[source]
kind = "sql"
url = "sqlite:///{database}"
table = "products"
key = "id"

[state]
url = "sqlite:///{state}"

[logging]
format = "console"
level = "warning"

[schedule]
cron = "0 3 1 1 *"     # the nightly reconcile (far away here): the feed does the work
catch_up = false

[health]
host = "127.0.0.1"
port = {port}

[[feeds]]
kind = "webhook"
name = "live"
token_env = "DEMO_FEED_TOKEN"

[feed_sync]
coalesce_s = 0.1

[[targets]]
name = "userflux-demo"
kind = "userflux"
base_url = "{userflux}"
api_key_env = "DEMO_USERFLUX_KEY"
type_id = "product"
rate_limit_per_s = 0

[targets.mapping.properties]
name = "title"
price = {{ path = "price", type = "number" }}
brand = "brand"

[[targets]]
name = "vambe-demo"
kind = "vambe"
base_url = "{vambe}"
api_key_env = "DEMO_VAMBE_KEY"
block_id = "{block}"

[targets.mapping]
name = "title"
description = {{ path = "description", html = true, max_length = 8192 }}
price = {{ path = "price", type = "number" }}
currency = {{ const = "USD" }}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE products ({', '.join(COLUMNS)}, PRIMARY KEY (id))")
        conn.executemany(
            f"INSERT INTO products VALUES ({', '.join('?' for _ in COLUMNS)})",
            [tuple(record.get(c) for c in COLUMNS) for record in _load(CATALOG)],
        )


def _post(port: int, keys: list[str]) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(
        "POST",
        "/feeds/live?wait=1",
        body=json.dumps({"keys": keys, "changed_at": time.time()}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    return response.status, payload


def _ready(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def run_live_demo(workdir: Path = Path(".demo-live")) -> int:
    """Run the live demo; 0 when both changes reached both fakes."""
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    database = workdir / "catalog.db"
    _database(database)
    env = dict(
        os.environ,
        DEMO_USERFLUX_KEY=API_KEY,
        DEMO_VAMBE_KEY=API_KEY,
        DEMO_FEED_TOKEN=TOKEN,
    )
    port = _free_port()
    ok = False
    with FakeUserflux(api_key=API_KEY) as userflux, FakeVambe(api_key=API_KEY) as vambe:
        block = vambe.add_block(name="live demo")
        config = workdir / "config.toml"
        config.write_text(
            CONFIG.format(
                database=database,
                state=workdir / "state.db",
                port=port,
                userflux=userflux.url,
                vambe=vambe.url,
                block=block,
            ),
            encoding="utf-8",
        )
        _say("1. A first sync fills both fakes from the SQLite catalog")
        status = _syncd(workdir, env, "sync")
        print(f"fake UserFlux holds {len(userflux.products)} products")
        _say("2. `syncd run` starts with a webhook change feed on /feeds/live")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "--config", str(config), "run"], cwd=workdir, env=env
        )
        try:
            if not _ready(port):
                print("the daemon did not become ready")
                return 1
            _say("3. A price changes in the database; the backend posts the key")
            with sqlite3.connect(database) as conn:
                conn.execute("UPDATE products SET price = '9.99' WHERE id = 'SKU-0001'")
            started = time.monotonic()
            answer, payload = _post(port, ["SKU-0001"])
            took = time.monotonic() - started
            price_uf = userflux.products[("product", "SKU-0001")]["properties"].get("price")
            price_vb = vambe.block_products(block)["SKU-0001"].get("price")
            print(
                f"POST /feeds/live?wait=1 answered {answer} ({payload.get('status')}) after "
                f"{took:.2f} s; SKU-0001's price is now {price_uf} in fake UserFlux and "
                f"{price_vb} in fake Vambe"
            )
            _say("4. A product is deleted in the database; the feed removes it")
            with sqlite3.connect(database) as conn:
                conn.execute("DELETE FROM products WHERE id = 'SKU-0002'")
            started = time.monotonic()
            answer_2, _ = _post(port, ["SKU-0002"])
            took = time.monotonic() - started
            gone = ("product", "SKU-0002") not in userflux.products and "SKU-0002" not in (
                vambe.block_products(block)
            )
            print(
                f"answered {answer_2} after {took:.2f} s; SKU-0002 "
                + ("is gone from both fakes" if gone else "is STILL on a fake")
            )
            ok = answer == answer_2 == 200 and price_uf == price_vb == 9.99 and gone
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        _say("5. Run history: the feed's targeted syncs are recorded as mode `feed`")
        _syncd(workdir, env, "history", "--limit", "6")
    _say("Result: " + ("both changes reached both fakes within seconds" if ok else "FAILED"))
    return 0 if ok and status == 0 else 1
