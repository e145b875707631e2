"""Prometheus metrics: their own registry, what a report and the executor's events count."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from syncd import __version__
from syncd.daemon import Daemon, sync_once
from syncd.metrics import OPERATIONS, OUTCOMES, Progress, SyncdMetrics
from syncd.model import RunRecord
from syncd.reconcile import RunOptions, RunReport, TargetReport
from syncd.sandbox import FakeUserflux, Fault
from syncd.state import open_store
from tests.test_daemon import config_toml, free_port, load, wait_until, write_catalog

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: SyncdMetrics) -> Samples:
    """Every sample of the exposition, parsed back from the text format."""
    text = metrics.render()[0].decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples over every label not given."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def _target(name: str = "uf", outcome: str = "ok", **counts: int) -> TargetReport:
    return TargetReport(
        target=name,
        kind="userflux",
        run_id=1,
        mode="incremental",
        mode_reason="",
        outcome=outcome,
        **counts,
    )


def test_metrics_live_in_their_own_registry_not_the_global_default_one() -> None:
    first, second = SyncdMetrics(), SyncdMetrics()  # a second one can't clash either
    first.request("uf", "product.upsert", "2xx", 0.01)
    assert (
        REGISTRY.get_sample_value(
            "syncd_http_requests_total",
            {"target": "uf", "endpoint": "product.upsert", "status": "2xx"},
        )
        is None
    )
    assert (
        value(
            samples(first),
            "syncd_http_requests_total",
            target="uf",
            endpoint="product.upsert",
            status="2xx",
        )
        == 1
    )
    assert (
        value(
            samples(second),
            "syncd_http_requests_total",
            target="uf",
            endpoint="product.upsert",
            status="2xx",
        )
        is None
    )


def test_a_report_counts_runs_products_duration_and_drift() -> None:
    metrics = SyncdMetrics()
    report = RunReport(
        (
            _target(
                created=3,
                updated=2,
                refreshed=1,
                deleted=1,
                rejected=4,
                failed=5,
                held=6,
                duration_ms=1500,
            ),
            TargetReport("vb", "vambe", 2, "full", "", "failed", drift=-7, error="boom"),
        ),
        source_count=10,
        source_complete=True,
    )
    metrics.observe_report(report, now=1000.0)
    found = samples(metrics)
    assert value(found, "syncd_runs_total", target="uf", outcome="ok") == 1
    assert value(found, "syncd_runs_total", target="vb", outcome="failed") == 1
    expected = {"created": 3, "updated": 3, "deleted": 1, "rejected": 4, "failed": 5, "held": 6}
    assert set(expected) == set(OPERATIONS)
    for operation, count in expected.items():
        assert value(found, "syncd_products_total", target="uf", operation=operation) == count
    assert value(found, "syncd_run_duration_seconds_sum", target="uf") == 1.5
    assert value(found, "syncd_run_duration_seconds_count", target="uf") == 1
    assert value(found, "syncd_last_success_timestamp_seconds", target="uf") == 1000.0
    assert value(found, "syncd_last_success_timestamp_seconds", target="vb") is None
    assert value(found, "syncd_last_run_timestamp_seconds", target="vb") == 1000.0
    assert value(found, "syncd_drift_products", target="vb") == -7
    assert value(found, "syncd_drift_products", target="uf") is None  # unknown, not zero


def test_a_locked_target_counts_a_run_and_nothing_else() -> None:
    metrics = SyncdMetrics()
    metrics.observe_report(RunReport((_target(outcome="locked"),), 0, True))
    found = samples(metrics)
    assert value(found, "syncd_runs_total", target="uf", outcome="locked") == 1
    assert total(found, "syncd_products_total", target="uf") == 0
    assert value(found, "syncd_run_duration_seconds_count", target="uf") is None
    assert value(found, "syncd_last_run_timestamp_seconds", target="uf") is None


def test_requests_and_retries_are_counted_by_target_endpoint_and_status() -> None:
    metrics = SyncdMetrics()
    metrics.request("vb", "block.create", "2xx", 0.2)
    metrics.request("vb", "block.create", "503", 0.1)
    metrics.retry("vb", "503")
    metrics.observe_state("vb", products=12, open_rejections=2)
    found = samples(metrics)
    assert (
        value(
            found, "syncd_http_requests_total", target="vb", endpoint="block.create", status="2xx"
        )
        == 1
    )
    assert (
        value(
            found, "syncd_http_requests_total", target="vb", endpoint="block.create", status="503"
        )
        == 1
    )
    assert (
        value(
            found, "syncd_http_request_duration_seconds_count", target="vb", endpoint="block.create"
        )
        == 2
    )
    assert value(found, "syncd_retries_total", target="vb", status="503") == 1
    assert value(found, "syncd_products_in_state", target="vb") == 12
    assert value(found, "syncd_open_rejections", target="vb") == 2


def test_the_counters_match_the_run_records_of_real_runs(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 10)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    with FakeUserflux(api_key="uf-secret-key") as fake:
        config = load(config_toml(catalog=catalog, state_url=state_url, userflux_url=fake.url))
        store = open_store(state_url)
        metrics = SyncdMetrics()
        environ = {"TEST_UF_KEY": "uf-secret-key"}
        sync_once(config, store, RunOptions(), metrics=metrics, environ=environ)
        lines = catalog.read_text().splitlines()
        lines[0] = lines[0].replace("v1", "v2")  # one update ...
        catalog.write_text("\n".join(lines[:-1]) + "\n")  # ... and one delete
        sync_once(config, store, RunOptions(), metrics=metrics, environ=environ)
        runs = store.recent_runs("uf")
        store.close()
    found = samples(metrics)
    assert [run.outcome for run in runs] == ["ok", "ok"]
    assert value(found, "syncd_runs_total", target="uf", outcome="ok") == len(runs)
    for field in ("created", "updated", "deleted", "rejected", "failed", "held"):
        recorded = sum(getattr(run, field) for run in runs)
        assert value(found, "syncd_products_total", target="uf", operation=field) == recorded
    assert sum(run.updated for run in runs) == 1 and sum(run.deleted for run in runs) == 1
    assert total(found, "syncd_http_requests_total", target="uf") == sum(r.requests for r in runs)


def test_sync_once_serves_metrics_while_the_run_lasts(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 10)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    port = free_port()
    with FakeUserflux(api_key="uf-secret-key") as fake:
        fake.latency = 0.1
        config = load(
            config_toml(
                catalog=catalog,
                state_url=state_url,
                userflux_url=fake.url,
                health={"host": "127.0.0.1"},
                concurrency=1,
            )
        )
        store = open_store(state_url)
        reports: list[RunReport] = []
        run = threading.Thread(
            target=lambda: reports.append(
                sync_once(
                    config,
                    store,
                    RunOptions(),
                    metrics_port=port,
                    environ={"TEST_UF_KEY": "uf-secret-key"},
                )
            )
        )
        run.start()
        try:

            def scraped() -> str | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                        text = r.read().decode()
                except OSError:
                    return None
                return text if "syncd_http_requests_total{" in text else None

            text = wait_until("a scrape during the run", scraped, timeout=10)
        finally:
            run.join(timeout=20)
            store.close()
    assert reports and reports[0].ok
    assert {family.name for family in text_string_to_metric_families(text)} >= {
        "syncd_http_requests",
        "syncd_runs",
    }


# -- several replicas: the state gauges come from state ------------------------------


def _record(store: Any, outcome: str, *, mode: str = "incremental", rejected: int = 0) -> int:
    run_id = store.start_run("uf", mode=mode, mode_reason="", holder="other:1:x")
    if outcome != "running":
        now = time.time()
        store.finish_run(
            RunRecord(run_id, "uf", now - 1, now, mode, "", outcome, rejected=rejected)
        )
    return int(run_id)


def test_a_replica_whose_run_was_locked_reports_what_the_other_replica_did(
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "catalog.jsonl"
    write_catalog(catalog, 3)
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    environ = {"TEST_UF_KEY": "uf-secret-key"}
    with FakeUserflux(api_key="uf-secret-key") as fake:
        config = load(
            config_toml(
                catalog=catalog,
                state_url=state_url,
                userflux_url=fake.url,
                # both replicas run every target (hot standby): one is refused the lease
                schedule={"full_refresh_cron": "", "catch_up": False, "share_targets": False},
                concurrency=1,
            )
        )
        first = Daemon(config, lambda: open_store(state_url), environ=environ)
        second = Daemon(config, lambda: open_store(state_url), environ=environ)
        first.start()
        second.start()
        try:
            assert first.run_once(full=False, reason="", trigger="test") is not None
            succeeded = first.store.recent_runs("uf")[0].finished_at if first.store else None
            write_catalog(catalog, 3, version=2)
            fake.inject(Fault(status=401, times=None))
            failed = first.run_once(full=False, reason="", trigger="test")
            assert failed is not None and failed.targets[0].outcome == "failed"
            assert second.store is not None
            assert second.store.acquire_lease("uf", "other:1:x", 60)
            locked = second.run_once(full=False, reason="", trigger="test")
            assert locked is not None and locked.targets[0].outcome == "locked"
        finally:
            for daemon in (first, second):
                daemon.request_stop()
                assert daemon.shutdown()
    mine, theirs = samples(first.metrics), samples(second.metrics)
    assert value(theirs, "syncd_last_run_outcome", target="uf", outcome="failed") == 1
    assert value(theirs, "syncd_last_run_outcome", target="uf", outcome="ok") == 0
    assert value(theirs, "syncd_last_success_timestamp_seconds", target="uf") == succeeded
    assert value(theirs, "syncd_products_in_state", target="uf") == 3
    for name in (
        "syncd_last_run_outcome",
        "syncd_last_success_timestamp_seconds",
        "syncd_open_rejections",
        "syncd_products_in_state",
    ):
        assert {k: v for k, v in mine.items() if k[0] == name} == {
            k: v for k, v in theirs.items() if k[0] == name
        }


def test_a_target_that_never_succeeded_has_its_last_success_at_zero() -> None:
    found = samples(SyncdMetrics(["uf"]))
    # 0: ``time() - syncd_last_success_timestamp_seconds`` is then huge and the rule fires
    assert value(found, "syncd_last_success_timestamp_seconds", target="uf") == 0


def test_the_state_gauges_are_read_back_from_state_and_a_resend_tells_nothing(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store.upgrade()
    try:
        metrics = SyncdMetrics(["uf"])
        _record(store, "ok")
        ok_at = store.recent_runs("uf")[0].finished_at
        _record(store, "failed")
        _record(store, "ok", mode="resend")  # two keys by hand: not a successful run
        metrics.refresh_from_state(store, ["uf"])
        found = samples(metrics)
        assert value(found, "syncd_last_run_outcome", target="uf", outcome="failed") == 1
        assert value(found, "syncd_last_success_timestamp_seconds", target="uf") == ok_at
        metrics.observe_report(
            RunReport(
                (
                    TargetReport(
                        target="uf",
                        kind="userflux",
                        run_id=9,
                        mode="resend",
                        mode_reason="",
                        outcome="ok",
                    ),
                ),
                1,
                True,
            )
        )
        found = samples(metrics)
        assert value(found, "syncd_last_run_outcome", target="uf", outcome="failed") == 1
        assert value(found, "syncd_last_success_timestamp_seconds", target="uf") == ok_at
    finally:
        store.close()


def test_a_run_recorded_as_running_by_another_replica_shows_as_in_progress(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store.upgrade()
    try:
        metrics = SyncdMetrics(["uf"])
        _record(store, "ok")
        metrics.refresh_from_state(store, ["uf"])
        assert value(samples(metrics), "syncd_run_in_progress") == 0
        assert store.acquire_lease("uf", "other:1:x", 60)
        _record(store, "running")
        metrics.refresh_from_state(store, ["uf"])
        assert value(samples(metrics), "syncd_run_in_progress") == 1
        store.release_lease("uf", "other:1:x")  # its holder died: the row is stale
        metrics.refresh_from_state(store, ["uf"])
        assert value(samples(metrics), "syncd_run_in_progress") == 0
    finally:
        store.close()


def test_progress_forwards_events_and_prints_a_line_now_and_then(capsys) -> None:  # type: ignore[no-untyped-def]
    metrics = SyncdMetrics()
    with Progress(metrics, interval_s=0.05) as progress:
        progress.request("uf", "product.upsert", "2xx", 0.01)
        progress.retry("uf", "503")
        wait_until("a progress line", lambda: "1 requests answered" in capsys.readouterr().err)
    found = samples(metrics)
    assert value(found, "syncd_retries_total", target="uf", status="503") == 1


# -- Prometheus conventions ------------------------------------------------------------

RULES = Path(__file__).resolve().parents[1] / "examples" / "monitoring" / "syncd-alerts.yml"
_UNITS_NOT_BASE = (
    "milliseconds",
    "millis",
    "_ms",
    "minutes",
    "hours",
    "days",
    "kilobytes",
    "megabytes",
    "percent",
)


def test_every_target_and_outcome_exists_at_zero_from_the_start() -> None:
    found = samples(SyncdMetrics(["uf", "vambe"]))
    for target in ("uf", "vambe"):
        for outcome in OUTCOMES:
            assert value(found, "syncd_runs_total", target=target, outcome=outcome) == 0
        for operation in OPERATIONS:
            assert value(found, "syncd_products_total", target=target, operation=operation) == 0
        assert value(found, "syncd_run_duration_seconds_count", target=target) == 0
        assert value(found, "syncd_open_rejections", target=target) == 0


def test_there_are_no_created_series_and_there_are_build_info_and_process_metrics() -> None:
    metrics = SyncdMetrics(["uf"])
    metrics.observe_report(RunReport((_target(created=1),), 1, True))
    text = metrics.render()[0].decode()
    assert "_created" not in text
    assert f'syncd_build_info{{version="{__version__}"}} 1.0' in text
    found = samples(metrics)
    assert total(found, "process_resident_memory_bytes") > 0
    assert total(found, "process_cpu_seconds_total") >= 0
    assert ("process_start_time_seconds", frozenset()) in found


def test_the_last_telling_outcome_is_one_and_the_others_zero() -> None:
    metrics = SyncdMetrics(["uf"])
    metrics.observe_report(RunReport((_target(outcome="failed"),), 1, True))
    metrics.observe_report(RunReport((_target(outcome="locked"),), 1, True))  # says nothing
    found = samples(metrics)
    assert value(found, "syncd_last_run_outcome", target="uf", outcome="failed") == 1
    assert value(found, "syncd_last_run_outcome", target="uf", outcome="ok") == 0
    metrics.observe_report(RunReport((_target(outcome="ok"),), 1, True))
    found = samples(metrics)
    assert value(found, "syncd_last_run_outcome", target="uf", outcome="failed") == 0
    assert value(found, "syncd_last_run_outcome", target="uf", outcome="ok") == 1


def _every_family(metrics: SyncdMetrics) -> list[Any]:
    metrics.observe_report(RunReport((_target(created=1, drift=0),), 1, True))
    metrics.request("uf", "product", "2xx", 0.1)
    metrics.retry("uf", "503")
    return list(text_string_to_metric_families(metrics.render()[0].decode()))


def test_metric_names_follow_the_prometheus_naming_conventions() -> None:
    problems = []
    for family in _every_family(SyncdMetrics(["uf"])):
        name = family.name
        if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", name):
            problems.append(f"{name}: not snake_case")
        if not name.startswith(("syncd_", "process_")):
            problems.append(f"{name}: no syncd_ prefix")
        if any(unit in name for unit in _UNITS_NOT_BASE):
            problems.append(f"{name}: not in base units (seconds, bytes)")
        if ("duration" in name or "timestamp" in name) and not name.endswith("_seconds"):
            problems.append(f"{name}: a time without the _seconds suffix")
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_total"):
                problems.append(f"{sample.name}: a counter without _total")
            if family.type != "counter" and sample.name.endswith("_total"):
                problems.append(f"{sample.name}: _total on a {family.type}")
    assert problems == []


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def test_promtool_finds_nothing_to_say_about_the_metrics() -> None:
    promtool = _promtool()
    text = SyncdMetrics(["uf"]).render()[0]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_shipped_alert_rules() -> None:
    promtool = _promtool()
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_rule_uses_metrics_syncd_exports() -> None:
    exported = {
        sample.name for family in _every_family(SyncdMetrics(["uf"])) for sample in family.samples
    }
    expressions = re.findall(r"^\s+expr:\s*(.+)$", RULES.read_text(), flags=re.MULTILINE)
    alerts = re.findall(r"^\s+- alert:\s*(\w+)$", RULES.read_text(), flags=re.MULTILINE)
    assert len(expressions) == len(alerts) >= 5
    used = {name for expr in expressions for name in re.findall(r"\bsyncd_[a-z0-9_]+", expr)}
    assert used and used <= exported, used - exported
    # the same conditions as syncd's own alerts: failed, blocked, partial, rejecting
    text = "\n".join(expressions)
    for condition in ('"failed"', '"blocked"', '"partial"', "syncd_open_rejections"):
        assert condition in text
