"""One product at a time (`show`, `resend`) and the read-only commands that need no secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from syncd.cli import main
from syncd.sandbox import FakeUserflux, FakeVambe
from tests.support import KEY, catalog, write_jsonl

CONFIG = """\
[source]
kind = "file"
path = "catalog.jsonl"
key = "sku"

[state]
url = "sqlite:///state.db"

[logging]
format = "json"

[[targets]]
name = "uf"
kind = "userflux"
base_url = "{uf}"
api_key_env = "UF_KEY"
type_id = "product"
rate_limit_per_s = 0

[targets.mapping.properties]
name = "title"
price = {{ path = "price", type = "number" }}
color = "color"

[[targets]]
name = "vb"
kind = "vambe"
base_url = "{vb}"
api_key_env = "VB_KEY"
block_id = "{block}"
rate_limit_per_s = 0
mirror_block = true

[targets.mapping]
name = "title"
description = {{ path = "body", html = true }}
price = {{ path = "price", type = "number" }}
metadata = ["color"]
"""

ENV = {"UF_KEY": KEY, "VB_KEY": KEY}


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUserflux, FakeVambe]]:
    with FakeUserflux(api_key=KEY) as uf, FakeVambe(api_key=KEY) as vb:
        yield uf, vb


@pytest.fixture
def config(tmp_path: Path, fakes) -> Path:
    uf, vb = fakes
    block = vb.add_block("6f1c2a9e-0000-4000-8000-000000000001")
    path = tmp_path / "syncd.toml"
    path.write_text(CONFIG.format(uf=uf.url, vb=vb.url, block=block))
    write_jsonl(tmp_path / "catalog.jsonl", catalog(5))
    return path


def run(config: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(
        main, ["--config", str(config), *args], env=ENV if env is None else env
    )


NO_KEYS = {"UF_KEY": "", "VB_KEY": ""}


def change_behind_syncds_back(uf: FakeUserflux, key: str) -> None:
    response = httpx.post(
        f"{uf.url}/product",
        json={
            "id": key,
            "typeId": "product",
            "properties": {"name": "edited by hand"},
            "propertiesUpdateType": "INCREMENTAL_UPDATE",
        },
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code < 300, response.text


def test_resend_repairs_a_product_changed_behind_syncds_back_and_sends_nothing_else(config, fakes):
    uf, vb = fakes
    assert run(config, "sync").exit_code == 0
    change_behind_syncds_back(uf, "P00002")
    assert run(config, "plan", "--exit-code").exit_code == 0  # syncd can't see the edit
    before_uf, before_vb = len(uf.requests), len(vb.requests)

    result = run(config, "resend", "P00002", "--target", "uf")

    assert result.exit_code == 0, result.output
    assert uf.products[("product", "P00002")]["properties"]["name"] == "Product 2"
    sent = uf.requests[before_uf:]
    assert [(r.method, r.json["id"]) for r in sent] == [("POST", "P00002")]
    assert sent[0].json["propertiesUpdateType"] == "FULL_UPDATE"
    assert len(vb.requests) == before_vb  # the other target was not touched


def test_resend_to_a_mirrored_vambe_block_creates_only_the_named_products_and_deletes_none(
    config, fakes
):
    _, vb = fakes
    assert run(config, "sync").exit_code == 0
    block = "6f1c2a9e-0000-4000-8000-000000000001"
    before = len(vb.requests)

    result = run(config, "resend", "P00001", "P00004", "--target", "vb", "--json")

    assert result.exit_code == 0, result.output
    sent = [r for r in vb.requests[before:] if r.method != "GET"]  # GET: the block count
    assert [r.path for r in sent] == [f"/api/public/product/create/{block}"]
    assert sorted(p["external_id"] for p in sent[0].json) == ["P00001", "P00004"]
    assert len(vb.block_products(block)) == 5
    [report] = json.loads(result.stdout)["targets"]
    assert report["deleted"] == 0 and report["mode"] == "resend"


def test_resend_of_a_key_missing_from_the_source_says_so_and_exits_1(config, fakes):
    uf, _ = fakes
    assert run(config, "sync").exit_code == 0
    before = len(uf.requests)

    result = run(config, "resend", "NOPE", "--target", "uf")

    assert result.exit_code == 1
    assert "'NOPE'" in result.stderr and "not in the source" in result.stderr
    assert len(uf.requests) == before
    assert run(config, "status").exit_code == 0  # a resend prunes no rejection, deletes nothing


def test_show_names_the_record_payload_acknowledged_copy_diff_and_request(config, fakes, tmp_path):
    assert run(config, "sync").exit_code == 0
    records = catalog(5)
    records[1]["title"] = "Renamed"
    write_jsonl(tmp_path / "catalog.jsonl", records)

    result = run(config, "show", "P00002", "--json", env=NO_KEYS)

    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["record"]["title"] == "Renamed"
    uf, vb = view["targets"]
    assert uf["payload"]["properties"]["name"] == "Renamed"
    assert uf["acknowledged"]["properties"]["name"] == "Product 2"
    assert uf["changes"] == [{"path": "properties.name", "before": "Product 2", "after": "Renamed"}]
    assert uf["request"]["mode"] == "INCREMENTAL_UPDATE"
    assert uf["request"]["body"]["properties"] == {"name": "Renamed"}
    assert vb["request"]["endpoint"] == "block.create"
    text = run(config, "show", "P00002", "--target", "uf", env=NO_KEYS)
    assert 'properties.name: "Product 2" -> "Renamed"' in text.output
    assert "INCREMENTAL_UPDATE" in text.output and "target vb" not in text.output


def test_show_gives_a_rejection_with_its_history(config, fakes, tmp_path):
    records = catalog(3)
    records[2]["price"] = "free"
    write_jsonl(tmp_path / "catalog.jsonl", records)
    assert run(config, "sync").exit_code == 0
    assert run(config, "sync").exit_code == 0

    result = run(config, "show", "P00003", "--target", "uf", "--json", env=NO_KEYS)

    [target] = json.loads(result.stdout)["targets"]
    assert "price" in target["mapping_error"]
    assert target["request"] is None
    rejection = target["rejection"]
    assert rejection["count"] == 2
    assert rejection["first_seen"].endswith("Z") and "T" in rejection["first_seen"]


def test_show_of_an_unchanged_product_says_a_sync_sends_nothing(config, fakes):
    assert run(config, "sync").exit_code == 0
    result = run(config, "show", "P00001", "--target", "uf")
    assert result.exit_code == 0
    assert "request: none" in result.output
    assert "syncd --config " in result.output and "resend --target uf -- P00001" in result.output


def test_show_of_a_key_not_in_the_source_exits_1(config):
    result = run(config, "show", "ZZZ", env=NO_KEYS)
    assert result.exit_code == 1
    assert "no record with this key" in result.output


def test_read_only_commands_need_no_api_keys_and_never_create_the_state(config, tmp_path):
    state = tmp_path / "state.db"
    for command in (["status"], ["history"], ["rejections"], ["db", "current"], ["show", "P1"]):
        result = run(config, *command, env=NO_KEYS)
        assert result.exit_code in (0, 1), (command, result.output)
        assert "is not set" not in result.output, command
        assert not state.exists(), command


def test_read_only_commands_read_the_state_without_keys_after_a_sync(config, tmp_path):
    assert run(config, "sync").exit_code == 0
    status = run(config, "status", "--json", env=NO_KEYS)
    assert status.exit_code == 0, status.output
    rows = json.loads(status.stdout)
    assert rows[0]["products_in_state"] == 5
    assert rows[0]["last_run"]["started_at"].endswith("Z")
    history = json.loads(run(config, "history", "--json", env=NO_KEYS).stdout)
    assert history[0]["finished_at"].endswith("Z")
    assert run(config, "db", "current", env=NO_KEYS).output.strip() != "empty (no revision)"


def test_read_only_commands_never_migrate_a_state_database(config, tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "state.db").close()  # an empty database: no syncd schema
    assert "never synced" in run(config, "status", env=NO_KEYS).output
    assert run(config, "db", "current", env=NO_KEYS).output.strip() == "empty (no revision)"
    with sqlite3.connect(tmp_path / "state.db") as conn:
        tables = conn.execute("select name from sqlite_master").fetchall()
    assert tables == []


def test_a_run_stopped_midway_counts_what_it_never_sent_as_not_attempted(tmp_path, fakes):
    import threading

    from syncd.config import parse_config
    from syncd.reconcile import Reconciler
    from syncd.state import open_store
    from tests.support import userflux_target

    uf, _ = fakes
    write_jsonl(tmp_path / "c.jsonl", catalog(6))
    config = parse_config(
        {
            "source": {"kind": "file", "path": str(tmp_path / "c.jsonl"), "key": "sku"},
            "targets": [userflux_target(uf.url, concurrency=1)],
        },
        environ=ENV,
    )
    stop = threading.Event()

    class StopAfterFirstAnswer:  # stands for SIGTERM arriving once the first product is sent
        def request(self, target, endpoint, status, seconds):
            stop.set()

        def retry(self, target, status):
            pass

    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        report = Reconciler(
            config, store, environ=ENV, events=StopAfterFirstAnswer(), stop=stop
        ).sync()
    finally:
        store.close()

    [target] = report.targets
    assert target.outcome == "interrupted"
    assert target.created == 1
    assert target.failed == 0
    assert target.not_attempted == 5


def with_vambe_where(config: Path, where: str) -> None:
    text = config.read_text()
    config.write_text(
        text.replace("mirror_block = true\n", f"mirror_block = true\nwhere = {where}\n")
    )


def test_show_says_a_product_the_targets_where_leaves_out_is_absent_there(config, fakes):
    with_vambe_where(config, '{ color = { ne = "red" } }')
    assert run(config, "sync").exit_code == 0
    red = next(r["sku"] for r in catalog(5) if r["color"] == "red")

    result = run(config, "show", red, "--json", env=NO_KEYS)

    uf, vb = json.loads(result.stdout)["targets"]
    assert vb["request"] is None and vb["mapping_error"] is None
    assert vb["reason"].startswith("left out by targets[1].where: absent from this target")
    assert uf["reason"] != vb["reason"]


def test_show_says_a_product_the_targets_where_can_not_test_is_rejected_there(
    config, fakes, tmp_path
):
    with_vambe_where(config, "{ stock = { lt = 100 } }")
    records = catalog(3)
    records[0]["stock"] = "12 units"
    write_jsonl(tmp_path / "catalog.jsonl", records)

    result = run(config, "show", "P00001", "--target", "vb", "--json", env=NO_KEYS)

    [vb] = json.loads(result.stdout)["targets"]
    assert vb["request"] is None
    assert vb["reason"].startswith("rejected, not sent: targets[1].where: stock: not a number")


def test_show_suggests_a_shell_quoted_resend_with_the_config_that_works_as_printed(
    config, fakes, tmp_path
):
    import re
    import shlex

    folder = tmp_path / "my configs"
    folder.mkdir()
    moved = folder / "syncd.toml"
    moved.write_text(config.read_text())
    records = catalog(3)
    odd = "it's a $HOME key"
    records[0]["sku"] = odd
    write_jsonl(folder / "catalog.jsonl", records)
    assert run(moved, "sync").exit_code == 0

    result = run(moved, "show", odd, "--target", "uf")

    assert result.exit_code == 0, result.output
    [command] = re.findall(r"`(syncd [^`]+)`", result.output)
    args = shlex.split(command)
    assert args[:3] == ["syncd", "--config", str(moved)]
    assert odd in args
    uf, vb = fakes
    before_uf, before_vb = len(uf.requests), len(vb.requests)
    resent = CliRunner().invoke(main, args[1:], env=ENV)
    assert resent.exit_code == 0, resent.output
    assert len(uf.requests) == before_uf + 1 and len(vb.requests) == before_vb
    assert odd in str(uf.requests[-1])


def test_the_readme_s_commands_for_looking_at_the_demo_work_as_written(tmp_path, monkeypatch):
    import re
    import shlex

    from syncd.demo import run_demo

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^\.venv/bin/(syncd [^\n`]*\.demo/[^\n`]*)$", readme, re.MULTILINE)
    commands += re.findall(r"`(syncd [^`]*\.demo/[^`]*)`", readme)
    assert len(commands) >= 3
    monkeypatch.chdir(tmp_path)
    assert run_demo(tmp_path / ".demo") == 0
    for command in commands:
        result = CliRunner().invoke(main, shlex.split(command)[1:], env=NO_KEYS)
        assert result.exit_code == 0, f"{command}: {result.output}"
        assert "Traceback" not in result.output
