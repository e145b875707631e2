"""The daemon: its schedule, one run at a time, signals, and one writer per target."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from syncd.config import parse_config
from syncd.daemon import (
    Daemon,
    crontab_day_of_week,
    missed_run,
    next_runs,
    schedule_triggers,
)
from syncd.errors import ConfigError
from syncd.model import RunRecord
from syncd.sandbox import FakeUserflux
from syncd.state import open_store

REPO = Path(__file__).resolve().parents[1]
TYPE_ID = "product"
ENV_KEYS = {"TEST_UF_KEY": "uf-secret-key"}


# -- helpers shared with the health, metrics and container tests -----------------------


def write_catalog(path: Path, count: int, *, version: int = 1) -> set[str]:
    """A JSONL catalog of ``count`` products; returns their keys."""
    keys = {f"p{i:03d}" for i in range(count)}
    with path.open("w", encoding="utf-8") as out:
        for key in sorted(keys):
            record = {
                "id": key,
                "name": f"Product {key} v{version}",
                "description": f"<p>All about {key}</p>",
                "price": 9.5,
            }
            out.write(json.dumps(record) + "\n")
    return keys


def config_toml(
    *,
    catalog: Path,
    state_url: str,
    userflux_url: str,
    schedule: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    concurrency: int = 2,
) -> str:
    """The TOML of a one-target config (UserFlux), key in ``$TEST_UF_KEY``."""

    def table(name: str, values: dict[str, Any]) -> str:
        lines = [f"[{name}]"] + [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"

    return (
        table("source", {"kind": "file", "path": str(catalog)})
        + table("state", {"url": state_url})
        + table("schedule", schedule or {})
        + table("health", health or {"enabled": False})
        + table("logging", {"format": "json"})
        + "[[targets]]\n"
        + "\n".join(
            f"{key} = {json.dumps(value)}"
            for key, value in {
                "kind": "userflux",
                "name": "uf",
                "api_key_env": "TEST_UF_KEY",
                "base_url": userflux_url,
                "type_id": TYPE_ID,
                "concurrency": concurrency,
                "rate_limit_per_s": 0,
            }.items()
        )
        + '\n[targets.mapping.properties]\nname = "name"\n'
    )


def load(toml: str) -> Any:
    import tomllib

    return parse_config(tomllib.loads(toml), environ=ENV_KEYS)


def subprocess_env() -> dict[str, str]:
    """The environment of a ``python -m syncd`` child: the repository importable, the key set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(ENV_KEYS)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def syncd(*args: str, config: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(config), *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def start_daemon(config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``syncd run`` in the background, its log (JSON lines) going to ``log``."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "syncd", "-c", str(config), "run", *args],
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def log_events(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def pushed_ids(fake: FakeUserflux, requests: list[Any] | None = None) -> list[str]:
    """The product ids POSTed to the fake, in order (one per request)."""
    return [
        r.json["id"]
        for r in (fake.requests if requests is None else requests)
        if r.method == "POST" and isinstance(r.json, dict)
    ]


# -- the schedule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crontab", "apscheduler"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,0", "sun,sat"),
        ("5-7", "sun,fri,sat"),
        ("mon-wed", "mon,tue,wed"),
    ],
)
def test_crontab_days_of_week_count_from_sunday_like_cron(crontab: str, apscheduler: str) -> None:
    assert crontab_day_of_week(crontab) == apscheduler


def test_no_full_refresh_is_scheduled_by_default_the_rolling_refresh_repairs_drift() -> None:
    config = load(_minimal_toml())
    assert schedule_triggers(config.schedule).full_refresh is None
    assert config.schedule.refresh_period == 7 * 86400


def test_a_weekly_full_refresh_falls_on_a_sunday_as_its_crontab_says() -> None:
    config = load(_minimal_toml(schedule={"full_refresh_cron": "0 4 * * 0"}))
    triggers = schedule_triggers(config.schedule)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
    fire = triggers.full_refresh.get_next_fire_time(None, now)
    assert fire.weekday() == 6  # Sunday
    assert (fire.hour, fire.minute) == (4, 0)


def test_a_bad_crontab_is_a_config_error_naming_its_key() -> None:
    config = load(_minimal_toml(schedule={"cron": "0 25 * * *"}))
    with pytest.raises(ConfigError, match=r"schedule\.cron"):
        schedule_triggers(config.schedule)


def test_an_unknown_time_zone_is_a_config_error() -> None:
    config = load(_minimal_toml(schedule={"timezone": "Mars/Olympus"}))
    with pytest.raises(ConfigError, match=r"schedule\.timezone"):
        schedule_triggers(config.schedule)


def test_next_runs_follow_the_nightly_cron_and_the_weekly_full_refresh() -> None:
    config = load(_minimal_toml(schedule={"full_refresh_cron": "0 4 * * 0"}))
    saturday_noon = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert next_runs(config, saturday_noon) == {"uf": datetime(2026, 11, 29, 3, 0, tzinfo=UTC)}
    sunday_after_the_sync = datetime(2026, 11, 29, 3, 30, tzinfo=UTC)
    assert next_runs(config, sunday_after_the_sync) == {
        "uf": datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
    }


def test_next_runs_count_an_interval_from_the_last_run() -> None:
    config = load(_minimal_toml(schedule={"interval_s": 600, "full_refresh_cron": ""}))
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    last = datetime(2026, 11, 23, 11, 55, tzinfo=UTC).timestamp()
    assert next_runs(config, now, {"uf": last}) == {"uf": datetime(2026, 11, 23, 12, 5, tzinfo=UTC)}
    assert next_runs(config, now) == {"uf": datetime(2026, 11, 23, 12, 10, tzinfo=UTC)}


def test_a_disabled_target_has_no_next_run() -> None:
    toml = _minimal_toml().replace('name = "uf"', 'name = "uf"\nenabled = false')
    config = load(toml)
    assert next_runs(config, datetime.now(UTC)) == {"uf": None}


def _minimal_toml(schedule: dict[str, Any] | None = None) -> str:
    return config_toml(
        catalog=Path("/nonexistent.jsonl"),
        state_url="sqlite://",
        userflux_url="http://127.0.0.1:9",
        schedule=schedule,
    )


# -- the daemon in this process ----------------------------------------------------------


def _daemon(tmp_path: Path, fake: FakeUserflux, count: int, **schedule: Any) -> Daemon:
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, count)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = load(
        config_toml(
            catalog=catalog,
            state_url=state_url,
            userflux_url=fake.url,
            schedule={"full_refresh_cron": "", **schedule},
            health={"host": "127.0.0.1", "port": 0},
            concurrency=1,
        )
    )
    return Daemon(config, lambda: open_store(state_url), environ=ENV_KEYS)


def test_a_daemon_with_a_short_interval_runs_twice_and_reports(tmp_path: Path) -> None:
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _daemon(tmp_path, fake, 5, interval_s=1)
        daemon.start()
        try:
            wait_until("two runs", lambda: daemon.runs_finished >= 2, timeout=10)
            assert daemon.alive()
        finally:
            daemon.request_stop()
            assert daemon.shutdown()
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        runs = store.recent_runs("uf")
        assert len(runs) >= 2
        assert {run.outcome for run in runs} == {"ok"}
        assert runs[-1].created == 5  # the first run pushed everything ...
        assert runs[-2].created == runs[-2].updated == runs[-2].requests == 0  # ... then nothing
        assert set(pushed_ids(fake)) == {f"p{i:03d}" for i in range(5)}
        assert len(pushed_ids(fake)) == 5


def test_a_write_left_in_doubt_gets_a_follow_up_run_once_its_window_has_passed(
    tmp_path: Path,
) -> None:
    from syncd.sandbox import Fault

    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 3)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        toml = config_toml(
            catalog=catalog,
            state_url=state_url,
            userflux_url=fake.url,
            schedule={"cron": "0 3 * * *", "full_refresh_cron": "", "run_at_start": True},
            concurrency=1,
        ).replace(
            "\n[targets.mapping.properties]",
            "\nin_doubt_window_s = 0.5\n[targets.mapping.properties]",
        )
        # the first write of p001 lands, but its answer is a 500: retried, acknowledged, in doubt
        fake.inject(Fault(status=500, apply_then_fail=True, match=lambda m, p, b: "p001" in str(b)))
        daemon = Daemon(load(toml), lambda: open_store(state_url), environ=ENV_KEYS)
        with capture_logs() as logs:
            daemon.start()
            try:
                wait_until("the follow-up run", lambda: daemon.runs_finished >= 2, timeout=15)
            finally:
                daemon.request_stop()
                assert daemon.shutdown()

    assert [e["products"] for e in logs if e["event"] == "syncd.daemon.reassert_scheduled"] == [1]
    triggers = [e["trigger"] for e in logs if e["event"] == "syncd.daemon.run_started"]
    assert triggers[:2] == ["schedule", "in_doubt"]  # the nightly run is hours away
    assert pushed_ids(fake).count("p001") == 3  # tried, retried, then re-asserted
    [last] = [r.json for r in fake.requests if r.method == "POST"][-1:]
    assert last["id"] == "p001" and last["propertiesUpdateType"] == "FULL_UPDATE"


def test_a_run_still_going_when_the_next_is_due_is_not_doubled(tmp_path: Path) -> None:
    with FakeUserflux(api_key="uf-secret-key") as fake:
        fake.latency = 0.05
        daemon = _daemon(tmp_path, fake, 20, interval_s=0.2)  # the first run takes ~1 s
        daemon.start()
        try:
            wait_until("four runs", lambda: daemon.runs_finished >= 4, timeout=15)
        finally:
            daemon.request_stop()
            assert daemon.shutdown()
        runs = sorted(
            open_store(f"sqlite:///{tmp_path / 'state.db'}").recent_runs("uf", limit=100),
            key=lambda run: run.started_at,
        )
        first = runs[0]
        assert first.finished_at is not None and first.finished_at - first.started_at > 0.8
        for earlier, later in itertools.pairwise(runs):
            assert earlier.finished_at is not None
            assert later.started_at >= earlier.finished_at  # never two at once
        # The ~4 ticks that fell during the first run were dropped, not queued up
        # to run back to back after it: later runs keep to the 0.2 s tick.
        for earlier, later in itertools.pairwise(runs[1:]):
            assert later.started_at - earlier.started_at >= 0.15
        assert Counter(pushed_ids(fake)).most_common(1)[0][1] == 1


def test_a_locked_target_is_logged_as_info_counted_and_not_unready(tmp_path: Path) -> None:
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _daemon(tmp_path, fake, 3)
        daemon.start()
        try:
            assert daemon.store is not None
            assert daemon.store.acquire_lease("uf", "elsewhere:1:abc", 60)
            with capture_logs() as logs:
                report = daemon.run_once(full=False, reason="", trigger="test")
            ready = daemon.not_ready()
        finally:
            daemon.request_stop()
            daemon.shutdown()
    assert report is not None and report.targets[0].outcome == "locked"
    assert fake.request_count() == 0
    assert any(
        e["event"] == "syncd.daemon.target_locked" and e["log_level"] == "info" for e in logs
    )
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    assert ready == []  # waiting for the other process is not failing
    text = daemon.metrics.render()[0].decode()
    assert 'syncd_runs_total{outcome="locked",target="uf"} 1.0' in text


# -- signals and single writer, as real processes ----------------------------------------


def test_sigterm_mid_run_exits_0_and_the_next_sync_converges(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    keys = write_catalog(catalog, 50)
    config = tmp_path / "config.toml"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        fake.latency = 0.2
        config.write_text(
            config_toml(
                catalog=catalog,
                state_url=f"sqlite:///{tmp_path / 'state.db'}",
                userflux_url=fake.url,
                schedule={"shutdown_grace_s": 5},
            )
        )
        log = tmp_path / "daemon.log"
        daemon = start_daemon(config, log, "--run-now")
        try:
            wait_until("the run to be sending", lambda: fake.request_count("POST") >= 4)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=15) == 0
        finally:
            stop_process(daemon)
        assert len(fake.products) < 50  # really stopped mid-run
        events = [e["event"] for e in log_events(log)]
        assert "syncd.daemon.stopping" in events
        assert events[-1] == "syncd.daemon.stopped"
        runs = open_store(f"sqlite:///{tmp_path / 'state.db'}").recent_runs("uf")
        assert [run.outcome for run in runs] in (["interrupted"], ["ok"])

        fake.latency = 0.0
        result = syncd("sync", config=config)
        assert result.returncode == 0, result.stderr
        assert {product_id for _, product_id in fake.products} == keys
        (status,) = json.loads(syncd("status", "--json", config=config).stdout)
        assert status["last_run"]["outcome"] == "ok"
        next_run = datetime.fromisoformat(status["next_run"])
        assert next_run > datetime.now(UTC) and (next_run.hour, next_run.minute) in ((3, 0), (4, 0))


@pytest.mark.postgres
@pytest.mark.slow
def test_two_daemons_on_postgresql_push_each_product_once_and_the_survivor_takes_over(
    tmp_path: Path, pg_url: str
) -> None:
    catalog = tmp_path / "catalog.jsonl"
    keys = write_catalog(catalog, 40)
    config = tmp_path / "config.toml"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        fake.latency = 0.15  # one full run: ~6 s at concurrency 1
        config.write_text(
            config_toml(
                catalog=catalog,
                state_url=pg_url,
                userflux_url=fake.url,
                schedule={
                    "interval_s": 1,
                    "lease_ttl_s": 5,
                    "shutdown_grace_s": 1,
                    "share_targets": False,  # a hot standby: both try the target
                },
                concurrency=1,
            )
        )
        store = open_store(pg_url)
        first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
        first = start_daemon(config, first_log, "--run-now")
        second = None
        try:
            wait_until("the first daemon to push", lambda: fake.request_count("POST") >= 3)
            holder = store.lease_holder("uf")
            assert holder is not None and holder.split(":")[1] == str(first.pid)

            second = start_daemon(config, second_log, "--run-now")
            wait_until(
                "the second daemon to find the target locked",
                lambda: any(
                    e["event"] == "syncd.daemon.target_locked" for e in log_events(second_log)
                ),
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            killed_at = time.monotonic()
            by_first = pushed_ids(fake)
            assert len(by_first) == len(set(by_first))  # one writer: nothing sent twice
            assert len(by_first) < 40  # killed mid-run

            wait_until("the survivor to push", lambda: len(pushed_ids(fake)) > len(by_first))
            assert time.monotonic() - killed_at < 5 + 1 + 1.5  # lease ttl + interval + slack
            wait_until("the survivor to finish the job", lambda: len(fake.products) == 40)
            assert {product_id for _, product_id in fake.products} == keys
            pushes = Counter(pushed_ids(fake))
            assert max(pushes.values()) <= 2
            # Re-sent only what the killed one sent but had not recorded as acknowledged.
            assert {key for key, n in pushes.items() if n == 2} <= set(by_first)

            locked = [
                e for e in log_events(second_log) if e["event"] == "syncd.daemon.target_locked"
            ]
            assert {e["level"] for e in locked} == {"info"}
            outcomes = wait_until(
                "the survivor's run to be recorded",
                lambda: (
                    o
                    if "ok" in (o := [r.outcome for r in reversed(store.recent_runs("uf"))])
                    else None
                ),
            )
            assert outcomes[0] == "interrupted"  # the killed daemon's run, marked by the survivor

            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=15) == 0
        finally:
            stop_process(first)
            if second is not None:
                stop_process(second)
            store.close()


# -- no missed night -------------------------------------------------------------------

_NIGHTLY = {"cron": "0 3 * * *", "full_refresh_cron": "0 4 * * 0"}


def _ts(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("last", "last_full", "now", "missed"),
    [
        # Wed 25th 09:00; last run Tue 03:00, Wednesday's 03:00 fell while down
        (_ts(24, 3), _ts(22, 4), _ts(25, 9), ("incremental", _ts(25, 3))),
        # the last run started after Wednesday's 03:00: nothing missed
        (_ts(25, 3, 1), _ts(22, 4), _ts(25, 9), None),
        # down over Sunday 04:00: the full refresh is caught up (it covers the sync)
        (_ts(28, 3), _ts(22, 4), _ts(30, 9), ("full", _ts(29, 4))),
        # down only until 02:00: the night is still ahead
        (_ts(24, 3), _ts(22, 4), _ts(25, 2), None),
    ],
)
def test_a_scheduled_time_that_fell_after_the_last_recorded_run_is_missed(
    last: float, last_full: float, now: float, missed: tuple[str, float] | None
) -> None:
    config = load(_minimal_toml(schedule=_NIGHTLY))
    found = missed_run(
        config.schedule, datetime.fromtimestamp(now, UTC), {"uf": last}, {"uf": last_full}
    )
    if missed is None:
        assert found is None
    else:
        assert found is not None
        assert ("full" if found.full else "incremental", found.due_at.timestamp()) == missed


def test_a_target_with_no_recorded_run_has_missed_nothing() -> None:
    config = load(_minimal_toml(schedule=_NIGHTLY))
    assert missed_run(config.schedule, datetime.now(UTC), {}) is None


def test_an_interval_schedule_catches_up_when_the_last_run_is_older_than_the_interval() -> None:
    config = load(_minimal_toml(schedule={"interval_s": 600, "full_refresh_cron": ""}))
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert missed_run(config.schedule, now, {"uf": now.timestamp() - 300}) is None
    found = missed_run(config.schedule, now, {"uf": now.timestamp() - 900})
    assert found is not None and not found.full


def _record_run(
    state_url: str,
    started_at: float,
    outcome: str = "ok",
    mode: str = "incremental",
    reason: str = "",
) -> None:
    store = open_store(state_url)
    try:
        store.upgrade()
        run_id = store.start_run("uf", mode=mode, mode_reason=reason, holder="test:1:x")
        store.finish_run(RunRecord(run_id, "uf", started_at, started_at + 1, mode, reason, outcome))
    finally:
        store.close()


def _nightly_an_hour_ago(tmp_path: Path, fake: FakeUserflux, **schedule: Any) -> Daemon:
    """A daemon whose daily cron fell an hour ago."""
    due = datetime.now(UTC) - timedelta(hours=1)
    return _daemon(tmp_path, fake, 2, cron=f"{due.minute} {due.hour} * * *", **schedule)


def _wait_a_moment_for_runs(daemon: Daemon, seconds: float = 1.5) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and daemon.runs_finished == 0:
        time.sleep(0.05)
    return daemon.runs_finished


def test_a_daemon_started_after_its_cron_time_with_no_run_since_runs_it_at_start(
    tmp_path: Path,
) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _nightly_an_hour_ago(tmp_path, fake)
        _record_run(state_url, time.time() - 2 * 86_400)  # the night before last
        with capture_logs() as logs:
            daemon.start()
            try:
                wait_until("the caught-up run", lambda: daemon.runs_finished >= 1, timeout=10)
            finally:
                daemon.request_stop()
                assert daemon.shutdown()
    [started] = [e for e in logs if e["event"] == "syncd.daemon.run_started"]
    assert started["trigger"] == "catch_up"
    assert started["reason"].startswith("scheduled sync missed (due ")
    [catching_up] = [e for e in logs if e["event"] == "syncd.daemon.catching_up"]
    assert catching_up["reason"] == started["reason"]
    assert daemon.missed is not None and not daemon.missed.full
    assert len(pushed_ids(fake)) == 2


def test_a_resend_after_the_cron_time_is_not_the_night_s_run(tmp_path: Path) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _nightly_an_hour_ago(tmp_path, fake)
        _record_run(state_url, time.time() - 2 * 86_400)  # the night before last
        _record_run(state_url, time.time() - 1800, mode="resend", reason=_RESEND_REASON)
        daemon.start()
        try:
            wait_until("the caught-up run", lambda: daemon.runs_finished >= 1, timeout=10)
        finally:
            daemon.request_stop()
            assert daemon.shutdown()
    assert daemon.missed is not None and not daemon.missed.full


_RESEND_REASON = "resend of 2 named products: sent whole"


@pytest.mark.parametrize(
    "resend_mode",
    ["resend", "full"],  # full: how a resend was recorded before it had its own mode
)
def test_a_resend_is_not_the_last_full_refresh_and_a_missed_one_is_named_so(
    tmp_path: Path, resend_mode: str
) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    now = datetime.now(UTC)
    due = now - timedelta(hours=1)
    weekly = f"{due.minute} {due.hour} * * {(due.weekday() + 1) % 7}"  # crontab: 0 = Sunday
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _daemon(
            tmp_path, fake, 2, cron=f"{due.minute} {due.hour} * * *", full_refresh_cron=weekly
        )
        _record_run(state_url, time.time() - 8 * 86_400, mode="full")  # last week's
        _record_run(state_url, time.time() - 2 * 86_400)
        _record_run(state_url, time.time() - 1800, mode=resend_mode, reason=_RESEND_REASON)
        with capture_logs() as logs:
            daemon.start()
            try:
                wait_until("the caught-up run", lambda: daemon.runs_finished >= 1, timeout=10)
            finally:
                daemon.request_stop()
                assert daemon.shutdown()
    assert daemon.missed is not None and daemon.missed.full
    [started] = [e for e in logs if e["event"] == "syncd.daemon.run_started"]
    assert started["reason"].startswith("scheduled full refresh missed (due ")


def test_a_daemon_whose_last_run_is_after_the_last_cron_time_does_not_run_at_start(
    tmp_path: Path,
) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _nightly_an_hour_ago(tmp_path, fake)
        _record_run(state_url, time.time() - 1800)  # ran half an hour after the cron time
        daemon.start()
        try:
            assert _wait_a_moment_for_runs(daemon) == 0
        finally:
            daemon.request_stop()
            assert daemon.shutdown()
    assert daemon.missed is None and fake.request_count() == 0


def test_an_interrupted_run_does_not_count_as_the_night_s_run_and_catch_up_can_be_off(
    tmp_path: Path,
) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        _record_run(state_url, time.time() - 2 * 86_400)
        _record_run(state_url, time.time() - 1800, outcome="interrupted")  # crashed mid-run
        off = _nightly_an_hour_ago(tmp_path, fake, catch_up=False)
        off.start()
        try:
            assert _wait_a_moment_for_runs(off, 0.5) == 0
        finally:
            off.request_stop()
            assert off.shutdown()
        daemon = _nightly_an_hour_ago(tmp_path, fake)
        daemon.start()
        try:
            wait_until("the caught-up run", lambda: daemon.runs_finished >= 1, timeout=10)
        finally:
            daemon.request_stop()
            assert daemon.shutdown()


# -- bounded history -------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def test_runs_are_pruned_by_age_and_count_but_never_the_latest_nor_one_still_going(
    state_url: str,
) -> None:
    now = time.time()
    starts = [now - days * 86_400 for days in (400, 300, 200, 5, 4, 3)]
    for started in starts:
        _record_run(state_url, started)
    store = open_store(state_url)
    try:
        running = store.start_run("other", mode="full", mode_reason="", holder="t:1:x")
        assert store.prune_runs("uf", before=now - 90 * 86_400, keep=0) == 3
        assert [round((now - r.started_at) / 86_400) for r in store.recent_runs("uf")] == [3, 4, 5]
        assert store.prune_runs("uf", before=0, keep=2) == 1
        assert len(store.recent_runs("uf")) == 2
        # everything is old: the latest run stays all the same
        assert store.prune_runs("uf", before=now + 1, keep=0) == 1
        assert [round((now - r.started_at) / 86_400) for r in store.recent_runs("uf")] == [3]
        assert store.prune_runs("other", before=now + 1, keep=1) == 0
        assert [r.id for r in store.recent_runs("other")] == [running]
    finally:
        store.close()


def test_only_local_rejections_no_run_has_seen_for_long_are_pruned(state_url: str) -> None:
    from syncd.model import Rejection

    now = time.time()
    store = open_store(state_url)
    try:
        old = now - 100 * 86_400
        store.record_rejections(
            "uf",
            [Rejection("gone", "no name"), Rejection("refused", "400", by_target=True)],
            old,
        )
        store.record_rejections("uf", [Rejection("recent", "no name")], now - 86_400)
        assert store.prune_stale_rejections("uf", before=now - 90 * 86_400) == 0  # no run yet
        _record_run(state_url, now - 60)
        assert store.prune_stale_rejections("uf", before=now - 90 * 86_400) == 1
        assert [r.key for r in store.open_rejections("uf")] == ["recent", "refused"]
    finally:
        store.close()


def test_the_daemon_prunes_history_after_a_run(tmp_path: Path) -> None:
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _daemon(tmp_path, fake, 2)
        daemon.config = daemon.config.model_copy(
            update={"state": daemon.config.state.model_copy(update={"keep_runs": 2})}
        )
        daemon.start()
        try:
            for _ in range(4):
                daemon.run_once(full=False, reason="", trigger="test")
            assert daemon.store is not None
            ids = [run.id for run in daemon.store.recent_runs("uf", limit=10)]
        finally:
            daemon.request_stop()
            assert daemon.shutdown()
    assert ids == [4, 3]


# -- several replicas share the targets ------------------------------------------------


def shared_toml(
    *, catalog: Path, state_url: str, fakes: dict[str, FakeUserflux], schedule: dict[str, Any]
) -> str:
    """A config with one UserFlux target per fake (named by the dict's keys)."""
    base = config_toml(
        catalog=catalog, state_url=state_url, userflux_url="http://unused", schedule=schedule
    )
    head = base[: base.index("[[targets]]")]
    blocks = [
        "[[targets]]\n"
        + "\n".join(
            f"{key} = {json.dumps(value)}"
            for key, value in {
                "kind": "userflux",
                "name": name,
                "api_key_env": "TEST_UF_KEY",
                "base_url": fake.url,
                "type_id": TYPE_ID,
                "concurrency": 1,
                "rate_limit_per_s": 0,
            }.items()
        )
        + '\n[targets.mapping.properties]\nname = "name"\n'
        for name, fake in fakes.items()
    ]
    return head + "\n".join(blocks)


def _names(fake: FakeUserflux) -> dict[str, object]:
    return {pid: p["properties"].get("name") for (_, pid), p in fake.products.items()}


@pytest.mark.parametrize("how", ["stopped", "died"])
def test_a_daemon_runs_only_its_share_and_takes_over_a_departed_replicas_at_once(
    tmp_path: Path, how: str
) -> None:
    from syncd.leases import assign_targets

    catalog = tmp_path / "catalog.jsonl"
    keys = write_catalog(catalog, 3)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    peer = "elsewhere:1:peer"
    with FakeUserflux(api_key="uf-secret-key") as one, FakeUserflux(api_key="uf-secret-key") as two:
        fakes = {"uf-1": one, "uf-2": two}
        schedule = {"cron": "0 3 * * *", "full_refresh_cron": "", "lease_ttl_s": 1}
        config = load(
            shared_toml(catalog=catalog, state_url=state_url, fakes=fakes, schedule=schedule)
        )
        store = open_store(state_url)
        store.beat_replica(peer, ttl=600)  # another daemon is alive on this state
        daemon = Daemon(config, lambda: open_store(state_url), environ=ENV_KEYS)
        daemon.start()
        try:
            assigned = assign_targets(list(fakes), [daemon.replica, peer])
            [mine] = [name for name, replica in assigned.items() if replica == daemon.replica]
            [theirs] = [name for name, replica in assigned.items() if replica == peer]

            report = daemon.run_once(full=False, reason="", trigger="schedule")

            assert report is not None and [t.target for t in report.targets] == [mine]
            assert set(_names(fakes[mine])) == keys
            assert fakes[theirs].request_count() == 0  # the peer's share is left to it

            if how == "stopped":
                store.leave_replica(peer)
            else:  # its heartbeat runs out on the database's clock
                with store.engine.begin() as conn:  # type: ignore[attr-defined]
                    conn.exec_driver_sql("UPDATE replicas SET expires_at = expires_at - 601")
            gone_at = time.monotonic()
            wait_until(
                "the departed replica's target to be taken over",
                lambda: set(_names(fakes[theirs])) == keys,
                timeout=10,
            )
            assert time.monotonic() - gone_at < 1 + 2  # a heartbeat (ttl / 4) and a run
        finally:
            daemon.request_stop()
            assert daemon.shutdown()
            store.close()
    assert Counter(pushed_ids(fakes[mine])) == dict.fromkeys(keys, 1)  # never run twice
    assert Counter(pushed_ids(fakes[theirs])) == dict.fromkeys(keys, 1)


def test_a_replica_given_no_target_runs_nothing(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 2)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        config = load(
            shared_toml(
                catalog=catalog,
                state_url=state_url,
                fakes={"uf": fake},
                schedule={"cron": "0 3 * * *", "full_refresh_cron": ""},
            )
        )
        store = open_store(state_url)
        daemon = Daemon(config, lambda: open_store(state_url), environ=ENV_KEYS)
        daemon.start()
        try:
            from syncd.leases import assign_targets

            # a peer that ranks the only target above this daemon: the first such name (the
            # daemon's own is random; among a fixed hundred, it ranked first once in ~101)
            peer = next(
                name
                for name in (f"elsewhere:{i}:peer" for i in itertools.count())
                if assign_targets(["uf"], [daemon.replica, name])["uf"] == name
            )
            store.beat_replica(peer, ttl=600)
            with capture_logs() as logs:
                report = daemon.run_once(full=False, reason="", trigger="schedule")
        finally:
            daemon.request_stop()
            assert daemon.shutdown()
            store.close()
    assert report is None
    assert fake.request_count() == 0
    assert "syncd.daemon.run_skipped" in [e["event"] for e in logs]


@pytest.mark.postgres
@pytest.mark.slow
def test_three_replicas_share_six_targets_and_take_over_a_killed_ones_within_the_lease_ttl(
    tmp_path: Path, pg_url: str
) -> None:
    import contextlib

    catalog = tmp_path / "catalog.jsonl"
    keys = write_catalog(catalog, 3)
    config = tmp_path / "config.toml"
    ttl, interval = 2.0, 1.5
    with contextlib.ExitStack() as stack:
        fakes = {
            f"uf-{i}": stack.enter_context(FakeUserflux(api_key="uf-secret-key")) for i in range(6)
        }
        config.write_text(
            shared_toml(
                catalog=catalog,
                state_url=pg_url,
                fakes=fakes,
                schedule={
                    "interval_s": interval,
                    "full_refresh_cron": "",
                    "lease_ttl_s": ttl,
                    "shutdown_grace_s": 1,
                },
            )
        )
        logs = [tmp_path / f"replica-{i}.log" for i in range(3)]
        replicas = [start_daemon(config, log) for log in logs]
        for replica in replicas:
            stack.callback(stop_process, replica)

        def shares() -> list[set[str]] | None:
            """Each replica's share at its last run while all three were live."""
            found = []
            for log in logs:
                shared = [
                    e
                    for e in log_events(log)
                    if e["event"] == "syncd.daemon.targets_shared" and e["replicas"] == 3
                ]
                if not shared:
                    return None
                found.append(set(shared[-1]["mine"].split(",")) - {""})
            return found

        mine = wait_until("every replica to run with all three live", shares, timeout=60)
        wait_until(
            "every target to hold the catalog",
            lambda: all(set(_names(fake)) == keys for fake in fakes.values()),
        )
        assert all(mine)  # the work is spread: every replica ran at least one target
        assert sorted(name for share in mine for name in share) == sorted(fakes)  # disjoint
        for fake in fakes.values():  # one push per product and target: nobody ran one twice
            assert Counter(pushed_ids(fake)) == dict.fromkeys(keys, 1)
        for log in logs:  # and nobody waited on another's lease
            assert "syncd.daemon.target_locked" not in [e["event"] for e in log_events(log)]

        killed, survivors = replicas[2], replicas[:2]
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        killed_at = time.monotonic()
        new = tmp_path / "catalog.new"
        write_catalog(new, 3, version=2)
        os.replace(new, catalog)

        def caught_up(names: set[str]) -> bool:
            return all(
                set(_names(fakes[name]).values()) == {f"Product {k} v2" for k in keys}
                for name in names
            )

        wait_until("the killed replica's targets to be taken over", lambda: caught_up(mine[2]))
        assert time.monotonic() - killed_at < ttl + interval + 3  # its heartbeat ran out
        wait_until("every target to hold the new catalog", lambda: caught_up(set(fakes)))
        for fake in fakes.values():  # still one push per product, target and change
            assert Counter(pushed_ids(fake)) == dict.fromkeys(keys, 2)
        taken = {
            name
            for log in logs[:2]
            for e in log_events(log)
            if e["event"] == "syncd.daemon.targets_taken_over"
            for name in e["targets"].split(",")
        }
        assert mine[2] <= taken

        for survivor in survivors:
            survivor.send_signal(signal.SIGTERM)
        assert [survivor.wait(timeout=15) for survivor in survivors] == [0, 0]
