"""The command line: exit codes, plan/sync output, the canonical log line, inspection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import main
from syncd.sandbox import FakeUserflux
from tests.support import KEY, catalog, write_jsonl

CONFIG = """\
[source]
kind = "file"
path = "catalog.jsonl"
key = "sku"

[state]
url = "sqlite:///{state}"

[logging]
format = "json"

[[targets]]
name = "uf"
kind = "userflux"
base_url = "{url}"
api_key_env = "UF_KEY"
type_id = "product"
rate_limit_per_s = 0

[targets.mapping.properties]
name = "title"
price = {{ path = "price", type = "number" }}
"""


@pytest.fixture
def fake() -> Iterator[FakeUserflux]:
    with FakeUserflux(api_key=KEY) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, fake: FakeUserflux) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db", url=fake.url))
    write_jsonl(tmp_path / "catalog.jsonl", catalog(12))
    return path


def run(config: Path, *args: str, key: str = KEY):
    runner = CliRunner()
    return runner.invoke(main, ["--config", str(config), *args], env={"UF_KEY": key})


def test_plan_exit_code_is_3_when_changes_are_pending_and_0_when_in_line(config, fake):
    pending = run(config, "plan", "--exit-code")
    assert pending.exit_code == 3, pending.output
    assert "product.upsert FULL_UPDATE: 12 requests, 12 products" in pending.output
    assert fake.request_count() == fake.request_count("GET")  # only the probe: nothing written

    assert run(config, "sync").exit_code == 0

    in_line = run(config, "plan", "--exit-code")
    assert in_line.exit_code == 0, in_line.output
    assert "requests: none" in in_line.output


def test_plan_json_gives_counts_by_request_and_reasons(config):
    result = run(config, "plan", "--json")
    [summary] = json.loads(result.stdout)
    assert summary["request_count"] == 12
    assert summary["requests"]["product.upsert FULL_UPDATE"]["products"] == 12
    assert summary["mode"] == "full"
    assert "state holds nothing" in summary["mode_reason"]


def test_sync_writes_one_canonical_json_log_line_per_target(config, fake):
    result = run(config, "sync", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [finished] = [line for line in lines if line["event"] == "syncd.run.finished"]
    assert finished["target"] == "uf"
    assert finished["created"] == 12 and finished["requests"] == 12
    assert finished["outcome"] == "ok" and "duration_ms" in finished
    report = json.loads(result.stdout)
    assert report["targets"][0]["created"] == 12


def test_a_refused_key_exits_1_and_never_prints_the_key(config, fake):
    result = run(config, "sync", key="wrong-key-1234567")
    assert result.exit_code == 1
    assert "UF_KEY" in result.output
    assert "wrong-key-1234567" not in result.output


def test_a_config_error_exits_2_listing_every_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[source]\nkind = "file"\npath = "x"\nbogus = 1\n[[targets]]\nkind = "vambe"\n')
    result = CliRunner().invoke(main, ["--config", str(path), "plan"], env={})
    assert result.exit_code == 2
    assert "source.bogus: unknown key" in result.output
    assert "targets[0].name: missing" in result.output
    assert "targets[0].block_id: missing" in result.output


def test_history_status_and_rejections_read_the_state(config, fake, tmp_path):
    write_jsonl(
        tmp_path / "catalog.jsonl", [*catalog(3), {"sku": "BAD", "title": "x", "price": "?"}]
    )
    assert run(config, "sync").exit_code == 0

    history = json.loads(run(config, "history", "--json").stdout)
    assert history[0]["target"] == "uf" and history[0]["outcome"] == "ok"
    assert history[0]["created"] == 3 and history[0]["rejected"] == 1
    status = json.loads(run(config, "status", "--json").stdout)
    assert status[0]["products_in_state"] == 3 and status[0]["open_rejections"] == 1
    [rejection] = json.loads(run(config, "rejections", "--json").stdout)
    assert rejection["key"] == "BAD" and "price" in rejection["reason"]
    table = run(config, "history").output
    assert "outcome" in table and "ok" in table


def test_db_upgrade_and_current_report_the_revision(config):
    upgraded = run(config, "db", "upgrade")
    assert upgraded.exit_code == 0 and "revision" in upgraded.output
    current = run(config, "db", "current")
    assert current.output.strip() and "empty" not in current.output


def test_check_config_validates_the_file_and_its_environment(config):
    ok = run(config, "check-config")
    assert ok.exit_code == 0 and "config OK" in ok.output
    missing = CliRunner().invoke(
        main, ["--config", str(config), "check-config"], env={"UF_KEY": ""}
    )
    assert missing.exit_code == 2
    assert "UF_KEY is not set" in missing.output


def test_status_says_why_the_last_run_failed_and_exits_1(config, fake):
    assert run(config, "sync", key="wrong-key-1234567").exit_code == 1

    failed = run(config, "status")
    assert failed.exit_code == 1
    assert "uf: last run failed: " in failed.stdout and "UF_KEY" in failed.stdout
    assert "wrong-key-1234567" not in failed.output
    [row] = json.loads(run(config, "status", "--json").stdout)
    assert row["healthy"] is False and row["last_run_ok"] is False

    assert run(config, "sync").exit_code == 0
    ok = run(config, "status")
    assert ok.exit_code == 0, ok.output
    assert "uf: " not in ok.stdout
    [row] = json.loads(run(config, "status", "--json").stdout)
    assert row["healthy"] is True and row["problems"] == []


def test_status_looks_past_a_run_refused_by_the_lease_to_the_blocked_one(config, tmp_path):
    from syncd.model import RunRecord
    from syncd.state import open_store

    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        for outcome, error in (("blocked", "would delete 90% of uf"), ("locked", "another syncd")):
            run_id = store.start_run("uf", mode="incremental", mode_reason="", holder="h")
            store.finish_run(
                RunRecord(run_id, "uf", 1.0, 2.0, "incremental", "", outcome, error=error)
            )
    finally:
        store.close()

    result = run(config, "status")

    assert result.exit_code == 1
    assert "uf: last run blocked: would delete 90% of uf" in result.stdout
