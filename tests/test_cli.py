"""The command line: exit codes, plan/sync output, the canonical log line, inspection."""

from __future__ import annotations

import json
import re
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


def test_sync_stopped_by_its_time_budget_exits_0_as_incomplete_sending_nothing_more(config, fake):
    result = run(config, "sync", "--json", "--max-run-s", "0.000001")

    assert result.exit_code == 0, result.output
    [target] = json.loads(result.stdout)["targets"]
    assert target["outcome"] == "incomplete"
    assert "max_run_s=1e-06" in target["error"] and "next run carries on" in target["error"]
    assert target["deleted"] == 0
    assert run(config, "sync").exit_code == 0  # the next run carries on
    assert len(fake.products) == 12


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


def test_state_found_from_any_working_directory_when_its_path_is_relative(
    tmp_path, fake, monkeypatch
):
    path = tmp_path / "syncd.toml"
    path.write_text(CONFIG.format(state="state.db", url=fake.url))
    write_jsonl(tmp_path / "catalog.jsonl", catalog(4))
    monkeypatch.chdir(tmp_path)
    assert run(Path("syncd.toml"), "sync").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = run(Path("../syncd.toml"), "plan", "--exit-code")

    assert result.exit_code == 0, result.output  # not a full re-push of every product
    assert not (elsewhere / "state.db").exists()


def test_global_options_work_after_the_subcommand(config, tmp_path):
    result = CliRunner().invoke(
        main,
        ["plan", "--json", "--config", str(config), "--log-level", "error"],
        env={"UF_KEY": KEY},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["target"] == "uf"
    nested = CliRunner().invoke(main, ["db", "current", "-c", str(config)], env={})
    assert nested.exit_code == 0, nested.output


def test_an_unknown_target_name_is_a_usage_error_naming_the_known_ones(config):
    for command in (["plan"], ["sync"], ["history"], ["rejections"], ["show", "P00001"]):
        result = run(config, *command, "--target", "nope")
        assert result.exit_code == 2, (command, result.output)
        assert "'nope'" in result.output and "configured: uf" in result.output


def test_sandbox_says_plainly_when_its_port_is_taken():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main, ["sandbox", "userflux", "--port", str(port)], env={"SANDBOX_API_KEY": "k"}
        )
    assert result.exit_code == 2
    assert f"port {port} on 127.0.0.1 is already taken" in result.output
    assert "Traceback" not in result.output


def test_every_timestamp_in_json_output_is_iso_8601_utc(config, fake, tmp_path):
    write_jsonl(tmp_path / "catalog.jsonl", [*catalog(2), {"sku": "BAD", "price": "?"}])
    assert run(config, "sync").exit_code == 0
    [last] = json.loads(run(config, "history", "--json").stdout)
    [rejection] = json.loads(run(config, "rejections", "--json").stdout)
    [row] = json.loads(run(config, "status", "--json").stdout)
    stamps = [
        last["started_at"],
        last["finished_at"],
        rejection["first_seen"],
        rejection["last_seen"],
        row["last_run"]["started_at"],
        row["next_run"],
    ]
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", stamp), stamp


def test_an_interrupted_runs_counts_say_what_was_not_attempted():
    from syncd.cli import _report_rows
    from syncd.runs import RunReport, TargetReport

    report = RunReport(
        (
            TargetReport(
                "uf", "userflux", 1, "full", "", "interrupted", created=3, failed=1, not_attempted=8
            ),
        ),
        12,
        True,
    )
    [row] = _report_rows(report)
    assert row[8:10] == [1, 8]  # failed, not sent


def test_check_config_reports_contract_problems_with_the_rest_in_one_pass(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[source]\nkind = "file"\npath = "c.jsonl"\n'
        '[[targets]]\nkind = "vambe"\nname = "vb"\napi_key_env = "VB_KEY"\n'
        'block_id = "my-block"\n[targets.mapping]\ncurrency = { const = "GBP" }\n'
        "price = { const = 0 }\n"
    )
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)], env={})
    assert result.exit_code == 2
    assert "VB_KEY is not set" in result.output
    assert "targets[0].block_id: 'my-block' is not a UUID" in result.output
    assert "targets[0].mapping.currency: constant 'GBP' is refused" in result.output
    assert "targets[0].mapping.price: constant 0 is refused" in result.output


@pytest.mark.parametrize(
    "refused_by_the_model",
    [
        "concurrency = 0\n",  # out of range
        "colour = 'blue'\n",  # an unknown key
        "batch_size = 'many'\n",  # the wrong type
    ],
)
def test_check_config_reports_contract_problems_with_the_model_s_own_in_one_pass(
    tmp_path, refused_by_the_model
):
    path = tmp_path / "c.toml"
    path.write_text(
        '[source]\nkind = "file"\npath = "c.jsonl"\n'
        '[[targets]]\nkind = "vambe"\nname = "vb"\napi_key_env = "VB_KEY"\n'
        f'block_id = "my-block"\n{refused_by_the_model}'
        '[targets.mapping]\ncurrency = { const = "GBP" }\n'
        'callable = "no_such_hooks_module:fix"\n'
        '[[targets]]\nkind = "userflux"\nname = "uf"\napi_key_env = "UF_KEY"\n'
        'type_id = "a/b"\nbase_url = 5\n'
    )
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)], env={})
    assert result.exit_code == 2
    out = result.output
    assert "targets[0]." in out.replace("targets[0].block_id", "").replace(
        "targets[0].mapping", ""
    )  # the model's own problem ...
    assert "targets[1].base_url" in out
    assert "VB_KEY is not set" in out
    # ... and, in the same pass, what the contracts and the hook say
    assert "targets[0].block_id: 'my-block' is not a UUID" in out
    assert "targets[0].mapping.currency: constant 'GBP' is refused" in out
    assert "targets[0].mapping.callable: cannot import 'no_such_hooks_module:fix'" in out
    assert "targets[1].type_id: 'a/b'" in out
    assert out.count("is not a UUID") == 1


def test_check_config_prints_the_sample_s_warnings_when_a_secret_is_missing(config):
    config.write_text(config.read_text().replace('name = "title"', 'name = "titel"'))
    result = CliRunner().invoke(
        main, ["--config", str(config), "check-config", "--sample", "5"], env={"UF_KEY": ""}
    )
    assert result.exit_code == 2
    assert "UF_KEY is not set" in result.output
    assert "warning: targets[0].mapping.properties.name: path 'titel' is in none of the 5" in (
        result.output
    )


def test_check_config_sample_warns_about_mapping_paths_no_record_has(config, tmp_path):
    text = config.read_text().replace('name = "title"', 'name = "titel"')
    config.write_text(text)

    result = run(config, "check-config", "--sample", "5")

    assert result.exit_code == 0, result.output
    assert "warning: targets[0].mapping.properties.name: path 'titel' is in none of the 5" in (
        result.output
    )
    assert "properties.price" not in result.output


@pytest.mark.parametrize(
    ("mode", "reason", "advice"),
    [
        ("incremental", "", "the next run sends them"),
        ("full", "full refresh requested (--full)", "re-run `syncd sync --full --target uf`"),
        ("resend", "resend of 2 named products: sent whole", "run the resend again"),
    ],
)
def test_an_interrupted_run_says_what_sends_the_rest_by_its_mode(mode, reason, advice):
    from syncd.report import not_attempted_note
    from syncd.runs import TargetReport

    report = TargetReport("uf", "userflux", 1, mode, reason, "interrupted", not_attempted=8)
    note = not_attempted_note(report)
    assert note is not None and note.startswith("uf: 8 products not attempted")
    assert advice in note
    if mode != "incremental":
        assert "the next run sends them" not in note
