"""What the container image does, without Docker: the wheel in a fresh venv runs ``syncd run``.

The Dockerfile builds the wheel, installs it into a venv and starts ``syncd run`` with
``SYNCD_CONFIG`` set; this test does the same with the machine's Python. The venv gets
the third-party dependencies through a ``.pth`` file naming this virtualenv's
site-packages (no network here), but syncd itself only from the wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.sandbox import FakeUserflux, FakeVambe
from tests.test_daemon import ENV_KEYS, REPO, free_port, log_events, wait_until, write_catalog


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=True, **kwargs
    )  # type: ignore[call-overload]


def _install_wheel(tmp_path: Path) -> Path:
    """Build the wheel, install it into a fresh venv; return the venv."""
    dist = tmp_path / "dist"
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, REPO
    )
    (wheel,) = dist.glob("syncd-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    site = Path(
        _run(
            venv / "bin" / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ).stdout.strip()
    )
    (site / "zz_syncd_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        wheel,
    )
    return venv


def _container_env(config: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("SYNCD_")
    }
    env.update(ENV_KEYS, VB_TEST_KEY="vb-secret-key", SYNCD_CONFIG=str(config))
    return env


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _runs(found: Samples, target: str) -> float:
    """Successful runs of a target, as counted by ``/metrics``."""
    return found.get(("syncd_runs_total", frozenset({("target", target), ("outcome", "ok")})), 0)


def _healthz(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_the_wheel_installs_syncd_compiled_to_bytecode(tmp_path: Path) -> None:
    venv = _install_wheel(tmp_path)
    located = _run(
        venv / "bin" / "python",
        "-c",
        "import syncd; print(syncd.__file__)",
        cwd=tmp_path,
        env=_container_env(tmp_path / "none.toml"),
    )
    package = Path(located.stdout.strip()).parent
    modules = list(package.rglob("*.py"))

    assert package.is_relative_to(venv) and len(modules) > 50
    uncompiled = [m for m in modules if not Path(importlib.util.cache_from_source(str(m))).exists()]
    assert uncompiled == []


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_the_daemon_as_the_container_does(tmp_path: Path) -> None:
    venv = _install_wheel(tmp_path)
    home = tmp_path / "home"  # the container's WORKDIR: nothing of the repository here
    home.mkdir()
    located = _run(
        venv / "bin" / "python",
        "-c",
        "import syncd, syncd.state.migrate as m; print(syncd.__file__); print(m.migrations_dir())",
        cwd=home,
        env=_container_env(home / "none.toml"),
    ).stdout.split()
    package, migrations = Path(located[0]).parent, Path(located[1])
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO / "syncd")
    assert migrations == package / "_migrations"
    assert (migrations / "env.py").is_file() and list((migrations / "versions").glob("0001_*.py"))

    data = tmp_path / "data"  # the /data volume
    data.mkdir()
    catalog = tmp_path / "catalog.jsonl"
    keys = write_catalog(catalog, 8)
    port = free_port()
    with FakeUserflux(api_key="uf-secret-key") as userflux, FakeVambe("vb-secret-key") as vambe:
        block = vambe.add_block()
        config = tmp_path / "config.toml"
        config.write_text(
            f"""
[source]
kind = "file"
path = "{catalog}"

[state]
url = "sqlite:///{data}/syncd-state.db"

[schedule]
interval_s = 2

[health]
host = "127.0.0.1"
port = {port}

[[targets]]
kind = "userflux"
name = "uf"
api_key_env = "TEST_UF_KEY"
base_url = "{userflux.url}"
type_id = "product"
rate_limit_per_s = 0
[targets.mapping.properties]
name = "name"

[[targets]]
kind = "vambe"
name = "vb"
api_key_env = "VB_TEST_KEY"
base_url = "{vambe.url}"
block_id = "{block}"
"""
        )
        env = _container_env(config)
        syncd = str(venv / "bin" / "syncd")
        log = tmp_path / "daemon.log"
        with log.open("wb") as err:
            daemon = subprocess.Popen([syncd, "run"], cwd=data, env=env, stdout=err, stderr=err)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until("/healthz", lambda: _healthz(url), timeout=20)
            assert (
                subprocess.run([syncd, "healthcheck"], env=env, cwd=data, timeout=30).returncode
                == 0
            )

            def ran_both() -> Samples | None:
                found = _samples(url + "/metrics")
                return found if _runs(found, "uf") and _runs(found, "vb") else None

            before = wait_until("a successful run of both targets", ran_both)
            history = json.loads(_run(syncd, "history", "--json", cwd=data, env=env).stdout)
            after = _samples(url + "/metrics")

            for target in ("uf", "vb"):
                recorded = [r for r in history if r["target"] == target]
                ok = sum(1 for r in recorded if r["outcome"] == "ok")
                assert _runs(before, target) <= ok <= _runs(after, target)
                for field in ("created", "updated", "deleted", "rejected", "failed", "held"):
                    labels = frozenset({("target", target), ("operation", field)})
                    assert after[("syncd_products_total", labels)] == sum(
                        r[field] for r in recorded
                    )
                assert after[("syncd_products_in_state", frozenset({("target", target)}))] == 8
            assert {product_id for _, product_id in userflux.products} == keys
            assert set(vambe.block_products(block)) == keys

            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(timeout=10)
    events = log_events(log)
    assert events[-1]["event"] == "syncd.daemon.stopped"
    started = next(e for e in events if e["event"] == "syncd.daemon.started")
    assert started["interval_s"] == 2
    assert (data / "syncd-state.db").is_file()
