"""The health listener: /healthz, /readyz, /metrics, readiness of runs, ``syncd healthcheck``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from syncd.daemon import Daemon
from syncd.errors import ConfigError
from syncd.health import HealthServer, Probes, local_address, probe
from syncd.model import RunRecord
from syncd.sandbox import FakeUserflux
from syncd.state import open_store
from tests.test_daemon import (
    ENV_KEYS,
    config_toml,
    free_port,
    load,
    subprocess_env,
    write_catalog,
)


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def _server(alive: bool = True, reasons: list[str] | None = None) -> HealthServer:
    return HealthServer(
        "127.0.0.1",
        0,
        Probes(
            alive=lambda: alive,
            ready=lambda: list(reasons or []),
            metrics=lambda: (b"syncd_up 1\n", "text/plain; version=0.0.4"),
        ),
    )


def test_healthz_answers_200_while_alive_and_503_when_not() -> None:
    with _server(alive=True) as server:
        assert get(server.url + "/healthz")[0] == 200
    with _server(alive=False) as server:
        status, body, _ = get(server.url + "/healthz")
        assert status == 503
        assert json.loads(body)["status"] == "dead"


def test_readyz_says_why_it_is_not_ready() -> None:
    with _server(reasons=[]) as server:
        assert get(server.url + "/readyz")[0] == 200
    with _server(reasons=["state database unreachable: refused"]) as server:
        status, body, ctype = get(server.url + "/readyz")
    assert status == 503
    assert ctype == "application/json"
    assert json.loads(body) == {
        "status": "unready",
        "reasons": ["state database unreachable: refused"],
    }


def test_metrics_are_served_with_their_content_type_and_other_paths_are_404() -> None:
    with _server() as server:
        assert get(server.url + "/metrics") == (200, b"syncd_up 1\n", "text/plain; version=0.0.4")
        assert get(server.url + "/nope")[0] == 404


def test_a_probe_that_raises_answers_503_and_the_listener_goes_on() -> None:
    def broken() -> list[str]:
        raise RuntimeError("probe broke")

    with HealthServer("127.0.0.1", 0, Probes(alive=lambda: True, ready=broken)) as server:
        status, body, _ = get(server.url + "/readyz")
        assert status == 503 and b"probe broke" in body
        assert get(server.url + "/healthz")[0] == 200


def test_a_port_already_taken_is_a_config_error_naming_health_port() -> None:
    with _server() as server, pytest.raises(ConfigError, match=r"health\.port"):
        HealthServer("127.0.0.1", server.port, Probes(alive=lambda: True, ready=list)).start()


def test_a_wildcard_bind_is_probed_on_loopback() -> None:
    assert local_address("0.0.0.0") == "127.0.0.1"
    assert local_address("::") == "[::1]"
    assert local_address("10.1.2.3") == "10.1.2.3"


def test_probe_reports_failure_when_nothing_listens() -> None:
    healthy, message = probe(f"http://127.0.0.1:{free_port()}/healthz", timeout=1)
    assert not healthy and "127.0.0.1" in message


@pytest.mark.postgres
def test_readyz_fails_when_the_state_database_is_unreachable(tmp_path: Path, pg_url: str) -> None:
    import sqlalchemy as sa

    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 1)
    with FakeUserflux(api_key="uf-secret-key") as fake:
        config = load(
            config_toml(
                catalog=catalog,
                state_url=pg_url,
                userflux_url=fake.url,
                health={"host": "127.0.0.1", "port": 0},
            )
        )
        daemon = Daemon(config, lambda: open_store(pg_url), environ=ENV_KEYS)
        daemon.start()
        try:
            assert daemon.health_url is not None
            assert get(daemon.health_url + "/readyz")[0] == 200
            url = sa.make_url(pg_url)
            admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE {url.database} WITH (FORCE)"))
            admin.dispose()
            status, body, _ = get(daemon.health_url + "/readyz")
            assert status == 503
            assert "state database unreachable" in json.loads(body)["reasons"][0]
            assert get(daemon.health_url + "/healthz")[0] == 200  # alive, just not ready
        finally:
            daemon.request_stop()
            daemon.shutdown()


def _drop_every_table(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            tables = sa.MetaData()
            tables.reflect(conn)
            tables.drop_all(conn)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite_url", id="sqlite"),
        pytest.param("pg_url", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def test_a_state_database_emptied_under_the_daemon_is_unready_then_migrated_by_the_next_run(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    from syncd.state.migrate import head_revision

    url = request.getfixturevalue(backend)
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 2)
    with FakeUserflux(api_key="uf-secret-key") as fake:
        config = load(
            config_toml(
                catalog=catalog,
                state_url=url,
                userflux_url=fake.url,
                health={"host": "127.0.0.1", "port": 0},
            )
        )
        daemon = Daemon(config, lambda: open_store(url), environ=ENV_KEYS)
        daemon.start(run_at_start=False)
        try:
            assert daemon.health_url is not None
            assert get(daemon.health_url + "/readyz")[0] == 200

            _drop_every_table(url)

            status, body, _ = get(daemon.health_url + "/readyz")
            assert status == 503
            [reason] = json.loads(body)["reasons"]
            assert f"schema missing (no revision), expected {head_revision()}" in reason
            assert "the next run migrates it" in reason

            report = daemon.run_once(full=False, reason="", trigger="test")

            assert report is not None and report.ok, report
            assert get(daemon.health_url + "/readyz")[0] == 200
            assert len(fake.products) == 2
        finally:
            daemon.request_stop()
            daemon.shutdown()


# -- syncd healthcheck ---------------------------------------------------------------------


def healthcheck(*options: str, config: Path | None = None) -> int:
    """The exit code of ``syncd [-c CONFIG] healthcheck [OPTIONS]``."""
    head = ["-c", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "syncd", *head, "healthcheck", "--timeout", "2", *options],
        env=subprocess_env(),
        capture_output=True,
        timeout=30,
    ).returncode


def test_healthcheck_exits_0_when_healthz_answers_200_and_1_otherwise(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    with _server(alive=True) as alive:
        config.write_text(
            config_toml(
                catalog=tmp_path / "catalog.jsonl",
                state_url="sqlite://",
                userflux_url="http://127.0.0.1:9",
                health={"host": "0.0.0.0", "port": alive.port},  # probed on loopback
            )
        )
        assert healthcheck(config=config) == 0
        with _server(alive=False) as dead:
            assert healthcheck("--port", str(dead.port)) == 1
    broken = tmp_path / "broken.toml"
    broken.write_text("[source]\n")
    assert healthcheck(config=broken) == 1  # never 2: Docker reserves it


def test_a_daemon_whose_runs_keep_failing_stays_live_and_ready_and_says_so_in_metrics(
    tmp_path: Path,
) -> None:
    from syncd.sandbox import Fault

    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(state_url)
    for days_ago in (4, 3, 2):  # failing for longer than health.max_failing_s
        run_id = store.start_run("uf", mode="incremental", mode_reason="", holder="t:1:x")
        started = time.time() - days_ago * 86_400
        store.finish_run(RunRecord(run_id, "uf", started, started + 1, "incremental", "", "failed"))
    store.close()
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 2)
    with FakeUserflux(api_key="uf-secret-key") as fake:
        fake.inject(Fault(status=401, times=None))
        config = load(
            config_toml(
                catalog=catalog,
                state_url=state_url,
                userflux_url=fake.url,
                schedule={"catch_up": False},
                health={"host": "127.0.0.1", "port": 0, "max_failing_s": 1},
            )
        )
        daemon = Daemon(config, lambda: open_store(state_url), environ=ENV_KEYS)
        daemon.start()
        try:
            assert daemon.health_url is not None
            metrics = get(daemon.health_url + "/metrics")[1].decode()
            report = daemon.run_once(full=False, reason="", trigger="test")
            assert report is not None and report.targets[0].outcome == "failed"
            assert get(daemon.health_url + "/readyz")[:2] == (200, b'{"status": "ok"}\n')
            assert get(daemon.health_url + "/healthz")[0] == 200
            after = get(daemon.health_url + "/metrics")[1].decode()
        finally:
            daemon.request_stop()
            daemon.shutdown()
    # the failing streak recorded in state shows from the first scrape, then counts on
    assert 'syncd_last_run_outcome{outcome="failed",target="uf"} 1.0' in metrics
    assert 'syncd_runs_total{outcome="failed",target="uf"} 0.0' in metrics
    assert 'syncd_runs_total{outcome="failed",target="uf"} 1.0' in after


def test_healthz_is_503_once_the_scheduler_thread_died(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 1)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = load(
        config_toml(
            catalog=catalog,
            state_url=state_url,
            userflux_url="http://127.0.0.1:9",
            health={"host": "127.0.0.1", "port": 0},
        )
    )
    daemon = Daemon(config, lambda: open_store(state_url), environ=ENV_KEYS)
    daemon.start()
    try:
        assert daemon.health_url is not None
        assert get(daemon.health_url + "/healthz")[0] == 200
        assert daemon._scheduler is not None
        daemon._scheduler.shutdown(wait=False)
        assert daemon._scheduler_thread is not None
        daemon._scheduler_thread.join(timeout=5)
        assert get(daemon.health_url + "/healthz")[0] == 503
        assert get(daemon.health_url + "/readyz")[0] == 200  # the state database is fine
    finally:
        daemon.request_stop()
        daemon.shutdown()
