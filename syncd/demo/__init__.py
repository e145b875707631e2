"""``syncd demo``: the real CLI, end to end, against loopback fakes of UserFlux and Vambe.

Offline and account-free: it copies the shipped sample catalog (300 made-up
products) into ``.demo/``, starts both fakes on 127.0.0.1, and runs ``syncd plan``
and ``syncd sync`` as subprocesses, editing the catalog between runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from syncd.sandbox import FakeUserflux, FakeVambe

CATALOG = Path(__file__).with_name("catalog.jsonl")
API_KEY = "demo-key-not-a-secret"

CONFIG = """\
# Written by `syncd demo`: a file source fanned out to one UserFlux and one Vambe target.
[source]
kind = "file"
path = "catalog.jsonl"
key = "id"

[state]
url = "sqlite:///{state}"

[logging]
format = "console"
level = "warning"

[[targets]]
name = "userflux-demo"
kind = "userflux"
base_url = "{userflux}"
api_key_env = "DEMO_USERFLUX_KEY"
type_id = "product"
concurrency = 8
rate_limit_per_s = 0

[targets.mapping.properties]
name = "title"
"description.text" = {{ path = "description", html = true }}
price = {{ path = "price", type = "number" }}
brand = "brand"
category = "category"
color = "color"
size = "size"
stock = {{ path = "stock", type = "integer" }}
tags = {{ path = "tags", type = "list" }}

[[targets]]
name = "vambe-demo"
kind = "vambe"
base_url = "{vambe}"
api_key_env = "DEMO_VAMBE_KEY"
block_id = "{block}"
batch_size = 100
mirror_block = true

[targets.mapping]
name = "title"
description = {{ path = "description", html = true, max_length = 8192 }}
price = {{ path = "price", type = "number" }}
currency = {{ const = "USD" }}
file_url = "image"
sku = "id"
metadata = ["brand", "category", "color", "size"]
"""


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def _syncd(workdir: Path, env: dict[str, str], *args: str) -> int:
    command = [sys.executable, "-m", "syncd", "--config", str(workdir / "config.toml"), *args]
    print("$ syncd " + " ".join(args), flush=True)
    return subprocess.run(command, env=env, cwd=workdir, check=False).returncode


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _save(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text(
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8"
    )


def _edit(path: Path) -> str:
    records = _load(path)
    by_id = {r["id"]: r for r in records}
    for key in ("SKU-0003", "SKU-0010", "SKU-0042", "SKU-0100", "SKU-0200"):
        by_id[key]["price"] = f"{float(by_id[key]['price']) + 1:.2f}"
    with_color = [r for r in records if "color" in r][:3]
    for record in with_color:
        del record["color"]
    gone = {"SKU-0005", "SKU-0006", "SKU-0150", "SKU-0299"}
    records = [r for r in records if r["id"] not in gone]
    for number in (301, 302, 303):
        new = dict(records[0], id=f"SKU-{number:04d}", title=f"New Arrival {number}")
        records.append(new)
    _save(path, records)
    return (
        "5 price changes, 'color' removed from "
        + ", ".join(r["id"] for r in with_color)
        + ", 4 products deleted, 3 added"
    )


def run_demo(workdir: Path = Path(".demo")) -> int:
    """Run the demo; returns the exit code (0 when the fakes end equal to the catalog)."""
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    catalog = workdir / "catalog.jsonl"
    shutil.copyfile(CATALOG, catalog)
    env = dict(os.environ, DEMO_USERFLUX_KEY=API_KEY, DEMO_VAMBE_KEY=API_KEY)
    with FakeUserflux(api_key=API_KEY) as userflux, FakeVambe(api_key=API_KEY) as vambe:
        block = vambe.add_block(name="demo catalog")
        (workdir / "config.toml").write_text(
            CONFIG.format(
                state=(workdir / "state.db").resolve(),
                userflux=userflux.url,
                vambe=vambe.url,
                block=block,
            ),
            encoding="utf-8",
        )
        print(f"fake UserFlux on {userflux.url}, fake Vambe on {vambe.url} (block {block})")
        print(f"working folder: {workdir.resolve()}")

        _say("1. First sync: state is empty, so every product is sent in full")
        _syncd(workdir, env, "plan", "--sample", "2")
        status = _syncd(workdir, env, "sync")
        print(
            f"fake UserFlux received {userflux.request_count()} requests, holds "
            f"{len(userflux.products)} products; fake Vambe received {vambe.request_count()} "
            f"requests, block holds {len(vambe.block_products(block))} products"
        )

        _say("2. Edit the catalog: " + _edit(catalog))
        userflux.reset_requests()
        vambe.reset_requests()
        _syncd(workdir, env, "plan", "--sample", "3")
        status |= _syncd(workdir, env, "sync")
        modes = Counter(
            (
                r.method,
                (r.json or {}).get("propertiesUpdateType") if isinstance(r.json, dict) else None,
            )
            for r in userflux.requests
        )
        print(
            "UserFlux requests this run: "
            + ", ".join(
                f"{method} {mode or ''}".strip() + f" x{n}"
                for (method, mode), n in sorted(modes.items(), key=str)
            )
        )
        print(
            "Vambe requests this run: "
            + ", ".join(
                f"POST {r.path.split('/')[4]} "
                f"({len(r.json) if isinstance(r.json, list) else 0} items)"
                for r in vambe.requests
                if r.method == "POST"
            )
        )
        example = userflux.products.get(("product", "SKU-0001"), {})
        properties = example.get("properties", {})
        print(
            "SKU-0001 in fake UserFlux now has properties: "
            + ", ".join(sorted(properties))
            + (" — 'color' is still there!" if "color" in properties else " — 'color' is gone")
        )

        _say("3. Nothing changed: a third sync sends nothing")
        userflux.reset_requests()
        vambe.reset_requests()
        status |= _syncd(workdir, env, "sync")
        print(
            f"writes sent: UserFlux {userflux.request_count()}, "
            f"Vambe {vambe.request_count(method='POST')} "
            f"(plus {vambe.request_count(method='GET')} GET product-blocks, the drift check)"
        )

        _say("4. Run history")
        _syncd(workdir, env, "history", "--limit", "6")

        expected = {r["id"] for r in _load(catalog)}
        in_userflux = {product_id for _, product_id in userflux.products}
        in_vambe = set(vambe.block_products(block))
        same = expected == in_userflux == in_vambe
        _say(
            "Result: both fakes hold exactly the catalog's products"
            if same
            else f"Result: MISMATCH (catalog {len(expected)}, UserFlux {len(in_userflux)}, "
            f"Vambe {len(in_vambe)})"
        )
    return 0 if same and status == 0 else 1
