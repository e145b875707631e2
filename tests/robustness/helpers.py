"""Shared helpers of the robustness tests: a sandbox of fakes, configs, catalogs, checks.

``Sandbox`` starts the fake UserFlux and Vambe servers on loopback, writes a catalog
(JSON Lines) and a TOML config pointing at them, and runs syncd either in-process
(``sync``/``plan``) or as the real CLI in a subprocess (``cli``). The expected target
contents are computed here independently of ``syncd.mapping`` from a small, fixed
mapping, so a mapping bug can't hide a sync bug.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from syncd.config import SyncdConfig, load_config
from syncd.reconcile import Reconciler, RunOptions, RunReport
from syncd.sandbox import FakeUserflux, FakeVambe, RecordedRequest
from syncd.state import StateStore, open_store

UF_KEY_ENV = "ROBUST_USERFLUX_KEY"
VB_KEY_ENV = "ROBUST_VAMBE_KEY"
UF_KEY = "uf-test-key-7f3a91c2"
VB_KEY = "vb-test-key-0d84be57"
UF_NAME = "uf"
VB_NAME = "vb"
TYPE_ID = "product"
BLOCK_ID = "6f1c2a0e-9a47-4c55-8a1e-2f7b9d3e4c10"

FAST_RETRY: dict[str, Any] = {
    "max_attempts": 3,
    "initial_delay_s": 0.01,
    "max_delay_s": 0.05,
    "budget_s": 2,
}
"""Small retry settings, so fault tests never sleep long."""

DEFAULT_PROPERTIES: dict[str, str] = {
    "name": "title",
    "price": "price",
    "brand": "brand",
    "color": "color",
}
"""UserFlux property name → source field (``price`` is typed as a number)."""

VAMBE_METADATA = ("brand", "color")

BRANDS = ("Acme", "Globex", "Initech", "Umbrella")
COLORS = ("red", "green", "blue", "black", "white")


# --------------------------------------------------------------------------------------
# Catalogs
# --------------------------------------------------------------------------------------


def make_record(i: int, version: int = 0) -> dict[str, Any]:
    """Product number ``i``; a higher ``version`` changes its price and title."""
    record: dict[str, Any] = {
        "id": f"P{i:05d}",
        "title": f"Product {i}" + (f" v{version}" if version else ""),
        "description": f"A fine product, number {i}, for everyday use.",
        "price": round(5 + i * 1.25 + version * 0.5, 2),
        "brand": BRANDS[i % len(BRANDS)],
    }
    if i % 7:
        record["color"] = COLORS[i % len(COLORS)]
    return record


def make_records(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [make_record(i) for i in range(start, start + n)]


def keys_of(records: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(r["id"]) for r in records}


# --------------------------------------------------------------------------------------
# The expected target contents, computed independently of syncd.mapping
# --------------------------------------------------------------------------------------


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


def map_userflux(record: Mapping[str, Any], properties: Mapping[str, str]) -> dict[str, Any]:
    """What fake UserFlux must hold for ``record``: ``{"properties", "aiPropertyOverrides"}``."""
    mapped: dict[str, Any] = {}
    for name, source_field in properties.items():
        value = record.get(source_field)
        if not _present(value):
            continue
        if source_field == "price":
            value = _number(value)
        elif isinstance(value, str):
            value = value.strip()
        mapped[name] = value
    return {"properties": mapped, "aiPropertyOverrides": {}}


def map_vambe(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Vambe product for ``record``, or None when Vambe's contract refuses it."""
    title, description, price = record.get("title"), record.get("description"), record.get("price")
    if not (_present(title) and _present(description) and _present(price)):
        return None
    try:
        number = _number(price)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    metadata = [
        {"key": name, "value": str(record[name]).strip()}
        for name in VAMBE_METADATA
        if _present(record.get(name))
    ]
    return {
        "external_id": str(record["id"]),
        "name": str(title).strip(),
        "description": str(description).strip(),
        "price": number,
        "currency": "USD",
        "type": "vambe",
        "metadata": metadata,
    }


def expected_userflux(
    records: Iterable[Mapping[str, Any]], properties: Mapping[str, str] = DEFAULT_PROPERTIES
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(TYPE_ID, str(r["id"])): map_userflux(r, properties) for r in records}


def expected_vambe(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for record in records:
        product = map_vambe(record)
        if product is not None:
            out[product["external_id"]] = product
    return out


# --------------------------------------------------------------------------------------
# TOML
# --------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A TOML literal for a small Python value (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML for {type(value).__name__}")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _property_spec(source_field: str) -> Any:
    return {"path": source_field, "type": "number"} if source_field == "price" else source_field


# --------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    """Fakes on loopback plus a work folder with a catalog, a config and a state database."""

    root: Path
    userflux: FakeUserflux | None = None
    vambe: FakeVambe | None = None
    block: str = BLOCK_ID
    properties: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROPERTIES))
    environ: dict[str, str] = field(default_factory=dict)
    _marks: dict[str, int] = field(default_factory=dict)

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.jsonl"

    @property
    def state_path(self) -> Path:
        return self.root / "state.db"

    @property
    def config_path(self) -> Path:
        return self.root / "syncd.toml"

    @property
    def state_url(self) -> str:
        return f"sqlite:///{self.state_path}"

    # -- files -------------------------------------------------------------------------

    def write_catalog(self, records: Sequence[Mapping[str, Any]]) -> None:
        tmp = self.catalog.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        tmp.replace(self.catalog)

    def configure(
        self,
        *,
        targets: Sequence[str] = (UF_NAME, VB_NAME),
        properties: Mapping[str, str] | None = None,
        retry: Mapping[str, Any] | None = FAST_RETRY,
        guards: Mapping[str, Any] | None = None,
        mirror_block: bool = False,
        batch_size: int = 50,
        concurrency: int = 4,
        timeout_s: float = 5.0,
        source: str | None = None,
        state: str | None = None,
        extra_target: str = "",
        log_level: str = "info",
    ) -> Path:
        """Write the TOML config; ``source`` replaces the whole ``[source]`` table."""
        if properties is not None:
            self.properties = dict(properties)
        common: dict[str, Any] = {
            "concurrency": concurrency,
            "rate_limit_per_s": 0,
            "timeout_s": timeout_s,
        }
        if retry is not None:
            common["retry"] = dict(retry)
        if guards is not None:
            common["guards"] = dict(guards)
        lines = [
            source or (f'[source]\nkind = "file"\npath = {toml_value(self.catalog)}\nkey = "id"\n'),
            "[state]",
            state or f"url = {toml_value(self.state_url)}",
            "",
            "[logging]",
            'format = "json"',
            f'level = "{log_level}"',
            "",
        ]
        if UF_NAME in targets:
            assert self.userflux is not None
            lines += [
                "[[targets]]",
                f'name = "{UF_NAME}"',
                'kind = "userflux"',
                f"base_url = {toml_value(self.userflux.url)}",
                f'api_key_env = "{UF_KEY_ENV}"',
                f'type_id = "{TYPE_ID}"',
                *(f"{k} = {toml_value(v)}" for k, v in common.items()),
                extra_target,
                "",
                "[targets.mapping.properties]",
                *(
                    f"{_toml_key(name)} = {toml_value(_property_spec(src))}"
                    for name, src in self.properties.items()
                ),
                "",
            ]
        if VB_NAME in targets:
            assert self.vambe is not None
            lines += [
                "[[targets]]",
                f'name = "{VB_NAME}"',
                'kind = "vambe"',
                f"base_url = {toml_value(self.vambe.url)}",
                f'api_key_env = "{VB_KEY_ENV}"',
                f'block_id = "{self.block}"',
                f"batch_size = {batch_size}",
                f"mirror_block = {toml_value(mirror_block)}",
                *(f"{k} = {toml_value(v)}" for k, v in common.items() if k != "concurrency"),
                f"concurrency = {min(concurrency, 4)}",
                extra_target,
                "",
                "[targets.mapping]",
                'name = "title"',
                'description = "description"',
                'price = { path = "price", type = "number" }',
                'currency = { const = "USD" }',
                f"metadata = {toml_value(list(VAMBE_METADATA))}",
                "",
            ]
        self.config_path.write_text("\n".join(lines), encoding="utf-8")
        return self.config_path

    # -- running -----------------------------------------------------------------------

    def load(self) -> SyncdConfig:
        return load_config(self.config_path, environ=self.environ)

    def store(self) -> StateStore:
        return open_store(self.state_url)

    def reconciler(self, store: StateStore, **kwargs: Any) -> Reconciler:
        return Reconciler(self.load(), store, environ=self.environ, **kwargs)

    def sync(self, options: RunOptions | None = None, **kwargs: Any) -> RunReport:
        """One in-process run (real HTTP to the fakes), its own store opened and closed."""
        given = kwargs.pop("store", None)
        store = given or self.store()
        try:
            return self.reconciler(store, **kwargs).sync(options or RunOptions())
        finally:
            if given is None:
                store.close()

    def plan(self, options: RunOptions | None = None) -> list[Any]:
        store = self.store()
        try:
            return self.reconciler(store).plan(options or RunOptions())
        finally:
            store.close()

    def cli_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "syncd", "--config", str(self.config_path), *args]

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "ROBUST_"))}
        env.update(self.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cli_command(*args),
            env=self.cli_env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def history(self) -> list[dict[str, Any]]:
        result = self.cli("history", "--json", "--limit", "1000")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    # -- what the fakes hold and received ----------------------------------------------

    def uf_products(self) -> dict[tuple[str, str], dict[str, Any]]:
        assert self.userflux is not None
        return self.userflux.products

    def vb_products(self) -> dict[str, dict[str, Any]]:
        assert self.vambe is not None
        return self.vambe.block_products(self.block)

    def assert_converged(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Each target holds exactly the mapped catalog."""
        if self.userflux is not None:
            want = expected_userflux(records, self.properties)
            got = self.uf_products()
            _assert_same("UserFlux", want, got)
        if self.vambe is not None:
            _assert_same("Vambe", expected_vambe(records), self.vb_products())

    def mark(self) -> None:
        """Remember how many requests each fake has seen (see ``new_requests``)."""
        if self.userflux is not None:
            self._marks["uf"] = len(self.userflux.requests)
        if self.vambe is not None:
            self._marks["vb"] = len(self.vambe.requests)

    def new_requests(self) -> tuple[list[RecordedRequest], list[RecordedRequest]]:
        """Requests (UserFlux, Vambe) received since the last ``mark``."""
        uf = self.userflux.requests[self._marks.get("uf", 0) :] if self.userflux else []
        vb = self.vambe.requests[self._marks.get("vb", 0) :] if self.vambe else []
        return uf, vb

    def assert_no_wrong_delete(
        self, source_keys: set[str], vambe_keys: set[str] | None = None
    ) -> None:
        """No request since ``mark`` deleted a key present in the source.

        Checks UserFlux DELETEs, Vambe delete bodies, and that every Vambe whole-block
        upsert carried every product Vambe should hold (``vambe_keys``, default all).
        """
        uf, vb = self.new_requests()
        wrong = sorted(set(deleted_keys(uf, vb)) & source_keys)
        assert not wrong, f"deleted keys present in the source: {wrong[:10]}"
        wanted = source_keys if vambe_keys is None else vambe_keys
        for request in vb:
            if request.method == "POST" and "/upsert/" in request.path:
                sent = {
                    str(p.get("external_id")) for p in request.json or [] if isinstance(p, dict)
                }
                missing = sorted(wanted - sent)
                assert not missing, f"a block upsert left out source keys: {missing[:10]}"


def deleted_keys(uf: Iterable[RecordedRequest], vb: Iterable[RecordedRequest]) -> Iterator[str]:
    """Every product key a DELETE (UserFlux) or delete body (Vambe) named."""
    from urllib.parse import unquote

    for request in uf:
        if request.method == "DELETE":
            yield unquote(request.path.rsplit("/", 1)[-1])
    for request in vb:
        if (
            request.method == "POST"
            and "/delete/" in request.path
            and isinstance(request.json, list)
        ):
            for item in request.json:
                if isinstance(item, dict):
                    yield str(item.get("external_id"))


def _assert_same(what: str, want: Mapping[Any, Any], got: Mapping[Any, Any]) -> None:
    missing = sorted(set(want) - set(got), key=str)
    extra = sorted(set(got) - set(want), key=str)
    differ = sorted((k for k in set(want) & set(got) if want[k] != got[k]), key=str)
    detail = ""
    if differ:
        k = differ[0]
        detail = f"; first differing {k}: want {want[k]!r}, got {got[k]!r}"
    assert not (missing or extra or differ), (
        f"{what} is not the mapped source: {len(missing)} missing {missing[:5]}, "
        f"{len(extra)} extra {extra[:5]}, {len(differ)} differ {differ[:5]}{detail}"
    )


@contextlib.contextmanager
def sandbox(
    root: Path, *, userflux: bool = True, vambe: bool = True, latency: float = 0.0
) -> Iterator[Sandbox]:
    """Start the fakes (Vambe with one empty block) and yield a sandbox in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    box = Sandbox(root, environ={UF_KEY_ENV: UF_KEY, VB_KEY_ENV: VB_KEY})
    with contextlib.ExitStack() as stack:
        if userflux:
            box.userflux = stack.enter_context(FakeUserflux(UF_KEY))
            box.userflux.latency = latency
        if vambe:
            box.vambe = stack.enter_context(FakeVambe(VB_KEY))
            box.vambe.add_block(BLOCK_ID, name="robustness")
            box.vambe.latency = latency
        yield box


@contextlib.contextmanager
def shared_tls_context() -> Iterator[None]:
    """Build each distinct TLS context once instead of once per client.

    ``ssl.create_default_context`` loads the system CA store, about 0.1 s per target
    per run; the fakes speak plain HTTP, so sharing it changes nothing they see and makes
    in-process runs several times faster. Verification settings are untouched.
    """
    from syncd import httpclient

    real = getattr(httpclient, "_ssl_context", None)
    if real is None:
        yield
        return
    cache: dict[Any, Any] = {}

    def cached(http: Any) -> Any:
        key = http.ca_bundle
        if key not in cache:
            cache[key] = real(http)
        return cache[key]

    httpclient._ssl_context = cached  # type: ignore[attr-defined]
    try:
        yield
    finally:
        httpclient._ssl_context = real  # type: ignore[attr-defined]


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    """Both fakes running, nothing configured yet (TLS contexts shared, see above)."""
    with shared_tls_context(), sandbox(tmp_path / "box") as created:
        yield created


# --------------------------------------------------------------------------------------
# The state database, read directly
# --------------------------------------------------------------------------------------


UNACKNOWLEDGED = b""
"""The hash of a state row whose write was sent but not (yet) answered 2xx."""


def state_rows(path: Path, target: str) -> dict[str, tuple[bytes, str]]:
    """``key -> (hash, payload)`` of a target's rows, in-flight (unacknowledged) ones too."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT key, hash, payload FROM products WHERE target = ?", (target,)
        ).fetchall()
    return {key: (bytes(h), payload) for key, h, payload in rows}


def acked_rows(path: Path, target: str) -> dict[str, tuple[bytes, str]]:
    """Only the rows that claim an acknowledgement (a real hash)."""
    return {k: row for k, row in state_rows(path, target).items() if row[0] != UNACKNOWLEDGED}


def integrity_check(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def dump_database(path: Path) -> str:
    """Every table of an SQLite database as SQL text (``sqlite3`` ``.dump``)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return "\n".join(db.iterdump())


def run_in_thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------------------
# Faults: which requests they hit, what was acknowledged
# --------------------------------------------------------------------------------------


def _key_in_path(path: str) -> str:
    from urllib.parse import unquote

    return unquote(path.split("?", 1)[0].rsplit("/", 1)[-1])


def touches(*keys: str) -> Any:
    """A ``Fault.match`` for writes naming any of ``keys`` (UserFlux or Vambe)."""
    wanted = set(keys)

    def match(method: str, path: str, body: object) -> bool:
        if method == "DELETE":
            return _key_in_path(path) in wanted
        if isinstance(body, dict):
            return body.get("id") in wanted
        if isinstance(body, list):
            return any(isinstance(i, dict) and i.get("external_id") in wanted for i in body)
        return False

    return match


def writes(method: str, path: str, body: object) -> bool:
    """A ``Fault.match`` for every write (not Vambe's ``product-blocks`` GET)."""
    return method != "GET"


def acknowledged(requests: Iterable[RecordedRequest]) -> set[str]:
    """Keys of products some write answered 2xx for (upserts, creates, deletes)."""
    keys: set[str] = set()
    for request in requests:
        if not 200 <= request.status < 300 or request.method == "GET":
            continue
        if request.method == "DELETE":
            keys.add(_key_in_path(request.path))
        elif isinstance(request.json, dict):
            keys.add(str(request.json.get("id")))
        elif isinstance(request.json, list):
            keys.update(str(i.get("external_id")) for i in request.json if isinstance(i, dict))
    return keys


class Timeline:
    """``Events`` recording when each answer and retry happened (monotonic seconds)."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, str, str, str]] = []
        self.retries: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    def request(self, target: str, endpoint: str, status: str, seconds: float) -> None:
        import time

        with self._lock:
            self.answers.append((time.monotonic(), target, endpoint, status))

    def retry(self, target: str, status: str) -> None:
        import time

        with self._lock:
            self.retries.append((time.monotonic(), target, status))

    def gaps(self, target: str) -> list[float]:
        times = [t for t, name, _, _ in self.answers if name == target]
        return [b - a for a, b in itertools.pairwise(times)]
