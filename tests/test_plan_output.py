"""``syncd plan`` as a user runs it: never "in line" when something failed, the exit codes,
and a state database that is only read (never created, never migrated)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from syncd.cli import main
from syncd.sandbox import Fault
from syncd.sandbox.catalog import FakeCatalogApi
from syncd.state import migrate
from tests.robustness.helpers import (
    Sandbox,
    dump_database,
    make_records,
    sandbox,
    shared_tls_context,
    toml_value,
)

IN_LINE = "in line"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    with shared_tls_context(), sandbox(tmp_path / "box") as created:
        yield created


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Waits between retries are recorded, not slept."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def syncd(box: Sandbox, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(box.config_path), *args], env=box.environ)


def plan_json(box: Sandbox, *args: str) -> list[dict[str, Any]]:
    result = syncd(box, "plan", "--json", *args)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def synced(box: Sandbox, n: int = 10, **configure: Any) -> list[dict[str, Any]]:
    """A catalog of ``n`` products, configured and synced to both targets."""
    records = make_records(n)
    box.write_catalog(records)
    box.configure(**configure)
    result = syncd(box, "sync")
    assert result.exit_code == 0, result.output
    return records


def section(output: str, target: str | None) -> str:
    """The lines ``plan`` printed for one target (None: everything)."""
    if target is None:
        return output
    [found] = [part for part in output.split("\n\n") if f"target {target} (" in part]
    return found


def assert_reported_as_wrong(
    box: Sandbox, status: str, *words: str, target: str | None = None
) -> dict[str, Any]:
    """plan, plan --exit-code and plan --json all say so, never "in line" (for ``target``,
    or for every target); returns the JSON summary of the first target with ``status``."""
    text = syncd(box, "plan")
    assert IN_LINE not in section(text.stdout, target), text.stdout
    for word in words:
        assert word in section(text.stdout, target), text.stdout
    detailed = syncd(box, "plan", "--exit-code")
    assert detailed.exit_code == 4, detailed.output
    assert IN_LINE not in section(detailed.stdout, target)
    summaries = plan_json(box)
    [summary, *_] = [s for s in summaries if s["status"] == status]
    assert target is None or summary["target"] == target
    assert summary["in_line"] is False and summary["problems"]
    return summary


# -- a target that can't be reached or refuses the key ---------------------------------


@pytest.mark.parametrize(("status", "words"), [(401, "refused the API key"), (403, "forbade")])
def test_plan_probes_userflux_which_has_no_read_endpoint_and_shows_a_refused_key(
    box, status, words
):
    synced(box)
    assert box.userflux is not None
    box.userflux.inject(Fault(status=status, times=None))
    box.userflux.reset_requests()

    summary = assert_reported_as_wrong(box, "failed", "FAILED", target="uf")

    assert words in summary["error"]
    sent = {(r.method, r.path) for r in box.userflux.requests}
    assert sent == {("GET", "/product")}  # a probe that writes nothing


def test_plan_says_userflux_is_in_line_once_the_probe_passes(box):
    synced(box)
    assert box.userflux is not None
    box.userflux.reset_requests()

    result = syncd(box, "plan", "--exit-code")

    assert result.exit_code == 0, result.output
    assert IN_LINE in section(result.stdout, "uf")
    assert [r.method for r in box.userflux.requests] == ["GET"]


@pytest.mark.parametrize("status", [401, 403, 404])
def test_plan_shows_a_target_answering_an_error_on_inspect_as_failed(box, status):
    synced(box)
    assert box.vambe is not None
    box.vambe.inject(Fault(status=status, times=None))

    text = syncd(box, "plan")
    assert text.exit_code == 1
    assert "FAILED" in text.output and f"HTTP {status}" in text.output

    summary = assert_reported_as_wrong(box, "failed", "FAILED", target="vb")
    assert f"HTTP {status}" in summary["error"]
    assert box.vambe.request_count("POST") == 10 // 50 + 1  # the first sync's create only


def test_plan_shows_a_missing_vambe_block_as_failed(box):
    synced(box)
    box.block = "00000000-0000-4000-8000-000000000000"
    box.configure()

    summary = assert_reported_as_wrong(box, "failed", "not found", "check block_id", target="vb")
    assert box.block in summary["error"]


def test_plan_shows_a_target_with_nothing_listening_as_failed(box, no_sleep):
    synced(box)
    assert box.vambe is not None
    box.vambe.stop()  # connection refused from now on

    summary = assert_reported_as_wrong(box, "failed", "FAILED", target="vb")
    assert "ConnectError" in summary["error"] or "refused" in summary["error"].lower()
    [uf] = [s for s in plan_json(box) if s["target"] == "uf"]
    assert uf["status"] == "in line"  # the other target goes on


# -- a source read that failed ------------------------------------------------------------


def test_plan_shows_a_missing_source_file_as_a_failed_read(box):
    synced(box)
    box.catalog.unlink()

    summary = assert_reported_as_wrong(box, "incomplete", "source read failed", "does not exist")
    assert summary["source_complete"] is False
    assert "does not exist" in summary["source_error"]
    assert syncd(box, "plan").exit_code == 1


def test_plan_shows_a_truncated_json_lines_file_as_a_failed_read(box):
    synced(box)
    text = box.catalog.read_text()
    box.catalog.write_text(text[: len(text) - 30])  # the last line cut mid-record

    summary = assert_reported_as_wrong(box, "incomplete", "source read failed")
    assert summary["changes"].get("delete", 0) == 0
    assert summary["held"] == 0 or summary["guard"]["allowed"] is False


def test_plan_shows_a_refused_sql_query_as_a_failed_read(box, tmp_path):
    database = tmp_path / "catalog.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE items (id TEXT)")
    source = (
        '[source]\nkind = "sql"\n'
        f"url = {toml_value(f'sqlite:///{database}')}\n"
        'query = "SELECT id, title FROM no_such_table"\nkey = "id"\n'
    )
    box.configure(source=source)

    result = syncd(box, "plan", "--exit-code")
    assert result.exit_code == 4, result.output
    assert IN_LINE not in result.output
    assert "source read failed" in result.output and "no_such_table" in result.output


def test_plan_shows_a_source_api_answering_500_as_a_failed_read(box):
    with FakeCatalogApi(make_records(5), style="page", records_path="products") as api:
        api.fail_on_page(1, 500, times=None)
        source = (
            f'[source]\nkind = "http"\nurl = {toml_value(api.url)}\n'
            'records_path = "products"\nkey = "id"\nmax_attempts = 1\n'
            '[source.pagination]\nstyle = "page"\npage_size = 10\n'
        )
        box.configure(source=source)

        summary = assert_reported_as_wrong(box, "incomplete", "source read failed")
    assert "500" in summary["source_error"]


# -- guards and rejections ----------------------------------------------------------------


def test_plan_shows_deletes_held_by_a_guard_and_exits_4(box):
    records = synced(box)
    box.write_catalog(records[:5])  # half the catalog gone

    summary = assert_reported_as_wrong(box, "blocked", "HELD: 5 deletes not sent")
    assert summary["held"] == 5 and summary["guard"]["allowed"] is False
    assert syncd(box, "plan").exit_code == 0  # without --exit-code a held delete is no error


def test_plan_shows_rejected_products_and_exits_4(box):
    records = synced(box)
    box.write_catalog([*records, {**make_records(1, start=11)[0], "price": 0}])

    summary = assert_reported_as_wrong(box, "rejected", "rejected: 1 products")
    assert summary["rejected"] == 1 and "P00011" in summary["rejected_samples"][0]["key"]


def test_four_beats_three_when_changes_are_pending_and_something_is_wrong(box):
    records = synced(box)
    changed = [{**r, "title": r["title"] + " new"} for r in records[:3]]
    box.write_catalog([*changed, *records[3:], {**make_records(1, start=11)[0], "price": 0}])

    result = syncd(box, "plan", "--exit-code")
    assert result.exit_code == 4, result.output
    assert "requests:" in result.output and IN_LINE not in result.output


# -- the good cases -----------------------------------------------------------------------


def test_a_clean_plan_says_in_line_and_exits_0(box):
    synced(box)

    result = syncd(box, "plan", "--exit-code")

    assert result.exit_code == 0, result.output
    assert result.output.count("the target is in line with the source") == 2
    assert all(s["status"] == "in line" and not s["problems"] for s in plan_json(box))


def test_pending_changes_only_exit_3(box):
    records = synced(box)
    box.write_catalog([*records, *make_records(2, start=11)])

    result = syncd(box, "plan", "--exit-code")

    assert result.exit_code == 3, result.output
    assert IN_LINE not in result.output
    assert all(s["status"] == "pending" for s in plan_json(box))


# -- plan writes nothing ------------------------------------------------------------------


def test_plan_on_a_missing_state_database_creates_nothing_and_says_so(box):
    box.write_catalog(make_records(4))
    box.configure()

    result = syncd(box, "plan", "--exit-code")

    assert result.exit_code == 3, result.output
    assert "does not exist: a sync would create it and send everything" in result.output
    assert "FULL_UPDATE: 4 requests, 4 products" in result.output
    assert not box.state_path.exists()
    assert not list(box.root.glob("state.db*"))
    [uf, _] = plan_json(box)
    assert any("does not exist" in note for note in uf["notes"])
    assert not box.state_path.exists()


def test_plan_leaves_an_existing_state_database_as_it_was(box):
    records = synced(box)
    box.write_catalog([*records[1:], *make_records(1, start=11)])
    before = dump_database(box.state_path)

    assert syncd(box, "plan").exit_code == 0
    assert syncd(box, "plan", "--full", "--json").exit_code == 0

    assert dump_database(box.state_path) == before


def test_plan_refuses_a_state_database_whose_schema_is_behind(box):
    box.write_catalog(make_records(2))
    box.configure()
    engine = sa.create_engine(box.state_url)
    with engine.begin() as conn:
        from alembic import command

        command.upgrade(migrate.alembic_config(conn), "0002")
    engine.dispose()
    before = dump_database(box.state_path)

    result = syncd(box, "plan")
    detailed = syncd(box, "plan", "--exit-code")

    assert result.exit_code == 1 and detailed.exit_code == 4
    assert "plan never migrates" in result.output and "syncd db upgrade" in result.output
    assert IN_LINE not in result.output
    assert dump_database(box.state_path) == before


def test_plan_on_an_empty_postgresql_database_creates_no_table(box, pg_url):
    box.write_catalog(make_records(3))
    box.configure(state=f"url = {toml_value(pg_url)}")

    result = syncd(box, "plan", "--exit-code")

    assert result.exit_code == 3, result.output
    assert "has no syncd schema yet" in result.output
    engine = sa.create_engine(pg_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
