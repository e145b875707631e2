"""Helpers for whole-loop tests: a JSONL catalog on disk, configs aimed at the fakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.config import SyncdConfig, parse_config
from syncd.model import UNACKNOWLEDGED
from syncd.reconcile import Reconciler, RunOptions, RunReport
from syncd.state import StateStore, open_store

KEY = "test-key-0123456789"
ENV = {"UF_KEY": KEY, "VB_KEY": KEY}

STATE_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}
"""Each state backend's URL fixture (``tests/conftest.py``)."""
STATE_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]
"""The state backends, to parametrize a test over (the servers' marked)."""
FAST_RETRY = {"max_attempts": 3, "initial_delay_s": 0.01, "max_delay_s": 0.05, "budget_s": 2}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def catalog(n: int, start: int = 1) -> list[dict[str, Any]]:
    """``n`` simple products with a few properties each."""
    return [
        {
            "sku": f"P{i:05d}",
            "title": f"Product {i}",
            "price": f"{i % 90 + 10}.50",
            "color": ["red", "green", "blue"][i % 3],
            "body": f"<p>Useful product number {i}</p>",
            "stock": i % 7,
        }
        for i in range(start, start + n)
    ]


def userflux_target(url: str, name: str = "uf", **extra: Any) -> dict[str, Any]:
    target = {
        "name": name,
        "kind": "userflux",
        "base_url": url,
        "api_key_env": "UF_KEY",
        "type_id": "product",
        "rate_limit_per_s": 0,
        "retry": FAST_RETRY,
        "mapping": {
            "properties": {
                "name": "title",
                "price": {"path": "price", "type": "number"},
                "color": "color",
                "stock": {"path": "stock", "type": "integer"},
            }
        },
    }
    target.update(extra)
    return target


def vambe_target(url: str, block: str, name: str = "vb", **extra: Any) -> dict[str, Any]:
    target = {
        "name": name,
        "kind": "vambe",
        "base_url": url,
        "api_key_env": "VB_KEY",
        "block_id": block,
        "rate_limit_per_s": 0,
        "retry": FAST_RETRY,
        "mapping": {
            "name": "title",
            "description": {"path": "body", "html": True},
            "price": {"path": "price", "type": "number"},
            "currency": {"const": "USD"},
            "metadata": ["color"],
        },
    }
    target.update(extra)
    return target


def expected_userflux(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the fake UserFlux must hold for ``userflux_target``'s mapping (written by hand)."""
    out = {}
    for r in records:
        properties: dict[str, Any] = {"name": r["title"], "price": float(r["price"])}
        if r.get("color"):
            properties["color"] = r["color"]
        if r.get("stock") is not None:
            properties["stock"] = int(r["stock"])
        out[("product", r["sku"])] = {"properties": properties, "aiPropertyOverrides": {}}
    return out


def expected_vambe(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the fake Vambe block must hold for ``vambe_target``'s mapping."""
    out = {}
    for r in records:
        metadata = [{"key": "color", "value": r["color"]}] if r.get("color") else []
        out[r["sku"]] = {
            "external_id": r["sku"],
            "name": r["title"],
            "description": r["body"].replace("<p>", "").replace("</p>", "").strip(),
            "price": float(r["price"]),
            "currency": "USD",
            "type": "vambe",
            "metadata": metadata,
        }
    return out


def acknowledged(store: StateStore, target: str) -> dict[str, Any]:
    """The state rows a target acknowledged (rows of writes in flight left out)."""
    return {a.key: a for a in store.iter_acked(target) if a.hash != UNACKNOWLEDGED}


class Harness:
    """A config, a state store and a catalog file, for running syncs in-process."""

    def __init__(
        self,
        tmp_path: Path,
        targets: list[dict[str, Any]],
        environ: dict[str, str] | None = None,
        **source: Any,
    ) -> None:
        self.environ = ENV if environ is None else environ
        self.path = tmp_path / "catalog.jsonl"
        self.raw: dict[str, Any] = {
            "source": {"kind": "file", "path": str(self.path), "key": "sku", **source},
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "targets": targets,
        }
        self.config: SyncdConfig = parse_config(self.raw, environ=self.environ)
        self.store: StateStore = open_store(self.config.state.url)

    def write(self, records: list[dict[str, Any]]) -> None:
        write_jsonl(self.path, records)

    def sync(self, **options: Any) -> RunReport:
        return Reconciler(self.config, self.store, environ=self.environ).sync(RunOptions(**options))

    def plan(self, **options: Any) -> list[Any]:
        return Reconciler(self.config, self.store, environ=self.environ).plan(RunOptions(**options))

    def close(self) -> None:
        self.store.close()


def load_table(url: str, records: list[dict[str, Any]]) -> None:
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    table = sa.Table(
        "products",
        metadata,
        sa.Column("sku", sa.String(32), primary_key=True),
        sa.Column("title", sa.String(200)),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("color", sa.String(20)),
        sa.Column("body", sa.Text),
        sa.Column("stock", sa.Integer),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
        conn.execute(sa.insert(table), records)
    engine.dispose()
