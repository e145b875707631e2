"""What importing syncd sets up for the process (one OpenBLAS thread, unless told otherwise),
and what a plan leaves unloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import KEY

PROBE = (
    "import syncd, numpy, os, pathlib;"
    "tasks = pathlib.Path('/proc/self/task');"
    "count = len(list(tasks.iterdir())) if tasks.is_dir() else -1;"
    "print(os.environ['OPENBLAS_NUM_THREADS'], count)"
)


def _probe(**env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    ).stdout.split()
    return out[0], int(out[1])


def test_importing_syncd_keeps_numpy_to_one_blas_thread() -> None:
    setting, threads = _probe()
    assert setting == "1"
    if threads < 0:
        pytest.skip("no /proc/self/task to count the threads")
    assert threads == 1, "NumPy's OpenBLAS started threads syncd never uses"


def test_an_explicit_blas_thread_count_is_kept() -> None:
    setting, _ = _probe(OPENBLAS_NUM_THREADS="2")
    assert setting == "2"


PLAN_PROBE = (
    "import atexit, pathlib, sys;"
    "out = pathlib.Path(sys.argv.pop());"
    "atexit.register(lambda: out.write_text('\\n'.join(sorted(sys.modules))));"
    "from syncd.cli import entry;"
    "sys.argv = ['syncd', 'plan', '--config', sys.argv[1]];"
    "entry()"
)

NOT_FOR_A_PLAN = (
    "sqlalchemy.dialects.mysql",  # a MySQL/MariaDB state's only (~50 M instructions)
    "sqlalchemy.dialects.postgresql",  # a PostgreSQL state's or source's only
    "alembic",  # `syncd db` and an upgrade only
    "apscheduler",  # the daemon's only
    "prometheus_client",  # /metrics only
    "syncd.daemon",
    "syncd.feeds",
    "syncd.health",
    "syncd.metrics",
    "syncd.alerts",
    "syncd.statuspage",
)
"""Modules (and their packages' submodules) a plan on a SQLite state never needs."""


def _plan_modules(tmp_path: Path, userflux: Any, vambe: Any, line: str) -> list[str]:
    """The modules ``syncd plan`` loaded, on an SQLite state not there yet, of a JSON Lines
    catalog of ``line``, to the sandbox's two targets."""
    from bench.config import write_config

    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(line + "\n", encoding="utf-8")
    config = write_config(
        tmp_path / "syncd.toml",
        source="jsonl",
        location=str(catalog),
        state=tmp_path / "state.db",
        userflux=userflux.url,
        vambe=vambe.url,
        block=vambe.add_block(name="bench"),
    )
    modules = tmp_path / "modules.txt"
    done = subprocess.run(
        [sys.executable, "-c", PLAN_PROBE, str(config), str(modules)],
        env={**os.environ, "BENCH_UF_KEY": KEY, "BENCH_VB_KEY": KEY},
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert "block.create create: 1 requests, 1 products" in done.stdout, done.stdout
    loaded = modules.read_text().split()
    assert "syncd.reconcile" in loaded  # the probe saw the plan's modules
    return loaded


RECORD = {"id": "SKU-1", "title": "Shoe", "description": "<p>Light</p>", "price": "12.50"}


def test_a_plan_on_sqlite_state_loads_nothing_only_other_commands_or_databases_need(
    tmp_path, userflux, vambe
) -> None:
    loaded = _plan_modules(tmp_path, userflux, vambe, json.dumps(RECORD))
    within = tuple(f"{name}." for name in NOT_FOR_A_PLAN)
    assert [m for m in loaded if m in NOT_FOR_A_PLAN or m.startswith(within)] == []


def test_a_first_plan_of_compact_json_lines_loads_no_numpy(tmp_path, userflux, vambe) -> None:
    """NumPy (~60 ms to load) counts the colons of lines not written compact and looks up
    fingerprints state holds: a full refresh of lines as orjson writes them needs neither."""
    loaded = _plan_modules(tmp_path, userflux, vambe, json.dumps(RECORD, separators=(",", ":")))
    assert [m for m in loaded if m == "numpy" or m.startswith("numpy.")] == []


HEALTHCHECK_PROBE = (
    "import atexit, pathlib, sys;"
    "out = pathlib.Path(sys.argv.pop());"
    "atexit.register(lambda: out.write_text('\\n'.join(sorted(sys.modules))));"
    "from syncd.cli import entry;"
    "sys.argv = ['syncd', '--config', sys.argv[1], 'healthcheck', '--timeout', '0.5'];"
    "entry()"
)


def test_a_healthcheck_loads_neither_the_run_nor_the_state_database(tmp_path) -> None:
    """Docker's HEALTHCHECK runs `syncd healthcheck` every few seconds: the config, the probe
    and nothing of a run (NumPy, httpx, the mappers) or of the state (SQLAlchemy)."""
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[source]\nkind = "file"\npath = "catalog.jsonl"\nkey = "id"\n\n'
        "[health]\nport = 9\n\n"
        '[[targets]]\nname = "uf"\nkind = "userflux"\nbase_url = "http://127.0.0.1:9"\n'
        'api_key_env = "UF_KEY"\ntype_id = "product"\n\n'
        '[targets.mapping.properties]\nname = "title"\n',
        encoding="utf-8",
    )
    modules = tmp_path / "modules.txt"
    done = subprocess.run(
        [sys.executable, "-c", HEALTHCHECK_PROBE, str(config), str(modules)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 1, done.stderr  # nothing listens on port 9
    assert "/healthz" in done.stderr
    loaded = modules.read_text().split()
    assert "syncd.health" in loaded and "syncd.config" in loaded
    heavy = ("numpy", "httpx", "sqlalchemy", "syncd.reconcile", "syncd.mapping", "syncd.stages")
    assert [m for m in loaded if m in heavy or m.startswith(tuple(f"{h}." for h in heavy))] == []
