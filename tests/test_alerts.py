"""Alerts: one per change of a target's outcome, delivered in the background, retried,
never failing the sync; the previous outcome comes from state, so it survives a restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from syncd.alerts import Alert, Alerter, alert_state
from syncd.daemon import Daemon
from syncd.errors import ConfigError
from syncd.model import RunRecord
from syncd.runs import RunReport, TargetReport
from syncd.sandbox import FakeUserflux, Fault
from syncd.state import StateStore, open_store
from tests.test_daemon import ENV_KEYS, config_toml, load, write_catalog

HOOK_TOKEN = "T0KEN-b3c9f1e2a7d4"


class Hook:
    """A loopback webhook endpoint: records each POST's JSON, answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                hook.paths.append(self.path)
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{HOOK_TOKEN}"

    def __enter__(self) -> Hook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    with Hook() as server:
        yield server


def _config(tmp_path: Path, fake: FakeUserflux, alerts: str) -> Any:
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 3)
    toml = config_toml(
        catalog=catalog,
        state_url=f"sqlite:///{tmp_path / 'state.db'}",
        userflux_url=fake.url,
        schedule={"full_refresh_cron": "", "catch_up": False},
        concurrency=1,
    )
    return toml.replace("[logging]", alerts + "\n[logging]")


def _daemon(tmp_path: Path, fake: FakeUserflux, hook_url: str, alerts: str = "") -> Daemon:
    toml = _config(
        tmp_path,
        fake,
        alerts or '[alerts]\nwebhook_url_env = "TEST_HOOK"\nbackoff_s = 0\n',
    )
    environ = {**ENV_KEYS, "TEST_HOOK": hook_url, "TEST_SLACK": hook_url}
    config = load_with(toml, environ)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    return Daemon(config, lambda: open_store(state_url), environ=environ)


def load_with(toml: str, environ: dict[str, str]) -> Any:
    import tomllib

    from syncd.config import parse_config

    return parse_config(tomllib.loads(toml), environ=environ)


_versions = iter(range(2, 1000))


def _runs(daemon: Daemon, fake: FakeUserflux, failing: list[bool]) -> list[str]:
    """One run per entry, each with changed products to send, the target answering 401
    to everything when ``True``."""
    outcomes = []
    for fail in failing:
        write_catalog(Path(daemon.config.source.path), 3, version=next(_versions))
        fake.clear_faults()
        if fail:
            fake.inject(Fault(status=401, times=None))
        report = daemon.run_once(full=False, reason="", trigger="test")
        assert report is not None
        outcomes.append(report.targets[0].outcome)
    fake.clear_faults()
    return outcomes


@pytest.mark.parametrize(
    ("outcome", "rejected", "state"),
    [
        ("ok", 0, "ok"),
        ("ok", 2, "rejecting"),
        ("partial", 1, "partial"),
        ("blocked", 0, "blocked"),
        ("failed", 0, "failed"),
        ("locked", 0, None),
        ("interrupted", 0, None),
    ],
)
def test_a_run_puts_its_target_in_a_state_and_locked_or_interrupted_ones_say_nothing(
    outcome: str, rejected: int, state: str | None
) -> None:
    assert alert_state(outcome, rejected) == state


def test_a_target_that_starts_failing_sends_exactly_one_webhook_and_one_more_on_recovery(
    tmp_path: Path, hook: Hook
) -> None:
    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _daemon(tmp_path, fake, hook.url)
        daemon.start()
        try:
            outcomes = _runs(daemon, fake, [False, True, True, True])
            assert daemon.alerter.close(5)
            after_failing = list(hook.bodies)
        finally:
            daemon.request_stop()
            assert daemon.shutdown()

        assert outcomes == ["ok", "failed", "failed", "failed"]
        [failed] = after_failing
        assert failed["target"] == "uf"
        assert (failed["previous_state"], failed["state"]) == ("ok", "failed")
        assert failed["event"] == "syncd.target.degraded"
        assert failed["command"] == "syncd history --target uf"
        assert "401" in failed["error"]
        assert set(failed["figures"]) >= {"created", "updated", "deleted", "rejected", "failed"}
        assert "syncd history --target uf" in failed["text"]

        # a new process: the failing streak is read back from state, not from memory
        daemon = _daemon(tmp_path, fake, hook.url)
        daemon.start()
        try:
            outcomes = _runs(daemon, fake, [True, False, False])
            assert daemon.alerter.close(5)
        finally:
            daemon.request_stop()
            assert daemon.shutdown()

    assert outcomes == ["failed", "ok", "ok"]
    assert [(b["previous_state"], b["state"]) for b in hook.bodies] == [
        ("ok", "failed"),
        ("failed", "ok"),
    ]
    assert hook.bodies[1]["event"] == "syncd.target.recovered"


def test_a_webhook_answering_500_is_retried_then_given_up_and_the_sync_is_still_ok(
    tmp_path: Path,
) -> None:
    with Hook(status=500) as hook, FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _daemon(tmp_path, fake, hook.url)
        daemon.start()
        try:
            with capture_logs() as logs:
                outcomes = _runs(daemon, fake, [True, False])
                assert daemon.alerter.close(5)
        finally:
            daemon.request_stop()
            assert daemon.shutdown()

    assert outcomes == ["failed", "ok"]  # the recovery run is ok although its alert failed
    assert len(hook.bodies) == 2 * 3  # two alerts, three attempts each
    assert daemon.alerter.given_up == 2 and daemon.alerter.delivered == 0
    given_up = [e for e in logs if e["event"] == "syncd.alerts.given_up"]
    assert [e["error"] for e in given_up] == ["HTTP 500 Internal Server Error"] * 2
    assert [e["channel"] for e in given_up] == ["alerts.webhook_url_env"] * 2
    assert HOOK_TOKEN not in repr(logs)  # the URL is a secret


def test_a_slack_webhook_gets_one_line_of_text_and_a_target_s_own_table_wins(
    tmp_path: Path, hook: Hook
) -> None:
    with FakeUserflux(api_key="uf-secret-key") as fake:
        toml = _config(tmp_path, fake, '[alerts]\nwebhook_url_env = "TEST_HOOK"\n').replace(
            "\n[targets.mapping.properties]",
            '\nalerts = { slack_webhook_url_env = "TEST_SLACK", backoff_s = 0 }'
            "\n[targets.mapping.properties]",
        )
        environ = {**ENV_KEYS, "TEST_HOOK": hook.url + "/global", "TEST_SLACK": hook.url}
        state_url = f"sqlite:///{tmp_path / 'state.db'}"
        daemon = Daemon(load_with(toml, environ), lambda: open_store(state_url), environ=environ)
        daemon.start()
        try:
            _runs(daemon, fake, [True])
            assert daemon.alerter.close(5)
        finally:
            daemon.request_stop()
            assert daemon.shutdown()

    [body] = hook.bodies
    assert set(body) == {"text"}
    assert body["text"].startswith("syncd: target uf is FAILED (was ok)")
    assert "`syncd history --target uf`" in body["text"]
    assert [path.endswith("/global") for path in hook.paths] == [False]


def _config_with_hook(attempts: int = 1, backoff_s: float = 0.0) -> Any:
    config = load(
        config_toml(
            catalog=Path("/x.jsonl"), state_url="sqlite://", userflux_url="http://127.0.0.1:9"
        )
    )
    return config.model_copy(
        update={
            "alerts": config.alerts.model_copy(
                update={"webhook_url_env": "HOOK", "attempts": attempts, "backoff_s": backoff_s}
            )
        }
    )


def _alerter(config: Any, answer: Any = None, slept: list[float] | None = None) -> Alerter:
    return Alerter(
        config,
        environ={"HOOK": "http://hooks.invalid/secret-path-123456"},
        transport=httpx.MockTransport(answer or (lambda request: httpx.Response(200))),
        sleep=(slept if slept is not None else []).append,
    )


def _run(
    store: StateStore,
    outcome: str,
    *,
    mode: str = "incremental",
    mode_reason: str = "",
    rejected: int = 0,
    error: str | None = None,
    **figures: int,
) -> RunReport:
    """One run of target ``uf`` recorded in state, as the reconciler records it."""
    run_id = store.start_run("uf", mode=mode, mode_reason=mode_reason, holder="test")
    now = time.time()
    store.finish_run(
        RunRecord(
            id=run_id,
            target="uf",
            started_at=now,
            finished_at=now,
            mode=mode,
            mode_reason=mode_reason,
            outcome=outcome,
            rejected=rejected,
            error=error,
        )
    )
    target = TargetReport(
        "uf",
        "userflux",
        run_id,
        mode,
        mode_reason,
        outcome,
        rejected=rejected,
        error=error,
        **figures,
    )
    return RunReport(targets=(target,), source_count=0, source_complete=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    opened.upgrade()
    yield opened
    opened.close()


def test_retries_back_off_exponentially_and_a_4xx_is_not_retried(store: StateStore) -> None:
    statuses = iter([503, 429, 200, 404])
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(next(statuses))

    slept: list[float] = []
    alerter = _alerter(_config_with_hook(attempts=4, backoff_s=0.5), answer, slept)
    report = _run(store, "failed", error="boom")
    [alert] = alerter.observe(report, store)
    assert alert == Alert(
        "uf",
        "ok",
        "failed",
        alert.at,
        report.targets[0].run_id,
        "incremental",
        alert.figures,
        "boom",
    )
    assert alerter.observe(_run(store, "failed", error="boom"), store) == []  # same state
    assert [a.current for a in alerter.observe(_run(store, "ok"), store)] == ["ok"]
    assert alerter.close(5)
    assert slept == [0.5, 1.0]  # 503, 429 retried; the recovery's 404 is not
    assert len(seen) == 4
    assert (alerter.delivered, alerter.given_up) == (1, 1)


def test_two_replicas_on_one_state_announce_each_change_once(store: StateStore) -> None:
    config = _config_with_hook()
    first, second = _alerter(config), _alerter(config)  # two daemons, or a CLI run beside one
    announced = [
        *first.observe(_run(store, "ok"), store),
        *second.observe(_run(store, "failed", error="HTTP 401"), store),
        *first.observe(_run(store, "failed", error="HTTP 401"), store),  # not news
        *second.observe(_run(store, "ok"), store),
        *first.observe(_run(store, "ok"), store),  # not news either
        *first.observe(_run(store, "blocked"), store),
    ]
    assert [(a.previous, a.current) for a in announced] == [
        ("ok", "failed"),
        ("failed", "ok"),
        ("ok", "blocked"),
    ]
    assert first.close(5) and second.close(5)


@pytest.mark.parametrize("mode", ["resend", "full"])
def test_a_resend_is_not_a_telling_run_it_neither_alerts_nor_hides_a_change(
    store: StateStore, mode: str
) -> None:
    # ``full`` with a resend's reason: how a resend was recorded before it had its own mode
    reason = "resend of 2 named products: sent whole"
    alerter = _alerter(_config_with_hook())
    announced = [
        *alerter.observe(_run(store, "failed", error="HTTP 503"), store),
        *alerter.observe(_run(store, "ok", mode=mode, mode_reason=reason), store),
        *alerter.observe(_run(store, "failed", error="HTTP 503"), store),
        *alerter.observe(_run(store, "failed", mode=mode, mode_reason=reason), store),
        *alerter.observe(_run(store, "ok"), store),
    ]
    assert [(a.previous, a.current) for a in announced] == [("ok", "failed"), ("failed", "ok")]
    assert alerter.close(5)


def test_recovering_from_failed_with_rejections_open_says_so(store: StateStore) -> None:
    alerter = _alerter(_config_with_hook())
    alerter.observe(_run(store, "failed", error="HTTP 401"), store)
    [alert] = alerter.observe(_run(store, "ok", rejected=3, refreshed=4, not_attempted=0), store)
    assert alerter.close(5)
    assert (alert.previous, alert.current) == ("failed", "rejecting")
    assert alert.text().startswith(
        "syncd: target uf recovered from failed; still rejecting 3 products"
    )
    body = alert.payload()
    assert body["event"] == "syncd.target.recovered"
    assert body["figures"]["refreshed"] == 4
    assert "not_attempted" in body["figures"]


def test_a_webhook_s_timestamp_is_iso_8601_utc_with_a_z(store: StateStore) -> None:
    alerter = _alerter(_config_with_hook())
    [alert] = alerter.observe(_run(store, "blocked"), store)
    assert alerter.close(5)
    at = alert.payload()["at"]
    assert at.endswith("Z") and "+" not in at
    assert datetime.fromisoformat(at) == datetime.fromtimestamp(alert.at, UTC)


def test_a_run_that_raises_again_and_again_is_recorded_failed_and_alerted_once(
    tmp_path: Path, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BrokenReconciler:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def sync(self, options: Any) -> RunReport:
            raise RuntimeError("the source adapter crashed")

    with FakeUserflux(api_key="uf-secret-key") as fake:
        daemon = _daemon(tmp_path, fake, hook.url)
        daemon.start()
        try:
            assert _runs(daemon, fake, [False]) == ["ok"]
            monkeypatch.setattr("syncd.daemon.Reconciler", BrokenReconciler)
            for _ in range(3):
                assert daemon.run_once(full=False, reason="", trigger="test") is None
            assert daemon.alerter.close(5)
            runs = daemon.store.recent_runs("uf") if daemon.store else []
        finally:
            daemon.request_stop()
            assert daemon.shutdown()

    assert [(b["previous_state"], b["state"]) for b in hook.bodies] == [("ok", "failed")]
    assert [r.outcome for r in runs] == ["failed", "failed", "failed", "ok"]
    assert "the source adapter crashed" in (runs[0].error or "")


def test_an_alert_webhook_named_but_not_set_is_a_config_error_naming_its_key() -> None:
    toml = config_toml(
        catalog=Path("/x.jsonl"), state_url="sqlite://", userflux_url="http://127.0.0.1:9"
    ).replace("[logging]", '[alerts]\nslack_webhook_url_env = "NOPE_SLACK"\n[logging]')
    with pytest.raises(ConfigError, match=r"alerts\.slack_webhook_url_env.*NOPE_SLACK"):
        load(toml)
