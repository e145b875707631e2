"""Bad input: every case answers with a clear message naming the place, and nothing already
pushed is lost (the state rows and target copies of the other products stay as they were).

Each case is a row of ``docs/bad-input.md``; keep the two in step.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.reconcile import RunReport
from tests.robustness.helpers import (
    UF_NAME,
    VB_NAME,
    Sandbox,
    deleted_keys,
    dump_database,
    make_records,
    sandbox,
    shared_tls_context,
    state_rows,
)

BASE = make_records(10)
BAD = "P00003"
"""The product the bad input is about (line 3 of the catalog)."""


@pytest.fixture
def pushed(tmp_path: Path) -> Iterator[Sandbox]:
    """Ten products pushed to both targets; the requests marked, state snapshotted."""
    with shared_tls_context(), sandbox(tmp_path / "box") as box:
        box.write_catalog(BASE)
        box.configure(log_level="warning")
        assert box.sync().ok
        box.snapshot = {name: state_rows(box.state_path, name) for name in (UF_NAME, VB_NAME)}  # type: ignore[attr-defined]
        box.mark()
        yield box


def lines(records: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(r) + "\n" for r in records]


def with_record_3(**changes: Any) -> list[dict[str, Any]]:
    records = [dict(r) for r in BASE]
    records[2].update(changes)
    return records


def assert_nothing_lost(box: Sandbox, *, spare: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """No delete sent; every product but ``spare`` keeps its state row and target copy."""
    uf, vb = box.new_requests()
    deletes = list(deleted_keys(uf, vb))
    assert not [k for k in deletes if k not in spare], f"deleted: {deletes}"
    keep = [r for r in BASE if r["id"] not in spare]
    for name in (UF_NAME, VB_NAME):
        before = box.snapshot[name]  # type: ignore[attr-defined]
        after = state_rows(box.state_path, name)
        changed = sorted(k for k in before if k not in spare and after.get(k) != before[k])
        assert not changed, f"{name}: state rows changed: {changed}"
    uf_held = box.uf_products()
    vb_held = box.vb_products()
    for record in keep:
        assert ("product", record["id"]) in uf_held and record["id"] in vb_held, record["id"]
    sub = Sandbox(box.root, properties=box.properties)
    want_uf = {k: v for k, v in _expected(sub, keep)[0].items()}
    assert {k: uf_held[k] for k in want_uf} == want_uf
    want_vb = _expected(sub, keep)[1]
    assert {k: vb_held[k] for k in want_vb} == want_vb


def assert_withdrawn(box: Sandbox, key: str = BAD) -> None:
    """The pushed product that can't be pushed any more is withdrawn from both targets and
    from state (``rejected = "withdraw"``, the default); nothing else is lost."""
    assert_nothing_lost(box, spare={key})
    uf, vb = box.new_requests()
    assert set(deleted_keys(uf, vb)) == {key}
    assert ("product", key) not in box.uf_products()
    assert key not in box.vb_products()
    for name in (UF_NAME, VB_NAME):
        assert key not in state_rows(box.state_path, name)


def _expected(box: Sandbox, records: list[dict[str, Any]]) -> tuple[dict, dict]:
    from tests.robustness.helpers import expected_userflux, expected_vambe

    return expected_userflux(records, box.properties), expected_vambe(records)


def rejection_reasons(box: Sandbox) -> dict[tuple[str, str], str]:
    store = box.store()
    try:
        return {(r.target, r.key): r.reason for r in store.open_rejections()}
    finally:
        store.close()


def assert_read_failed(report: RunReport, *fragments: str) -> None:
    """The read is incomplete: each target's run failed, naming the place; no deletes."""
    assert not report.source_complete
    for fragment in fragments:
        assert fragment in (report.source_error or ""), report.source_error
    for target in report.targets:
        assert target.outcome == "failed"
        assert "no deletes" in (target.error or "")
        assert target.deleted == 0


# -- keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing key"),
        ("", "missing key"),
        ("   ", "missing key"),
        (["P00003"], "the key must be a single value"),
        ({"sku": "P00003"}, "the key must be a single value"),
    ],
    ids=["missing", "empty", "blank", "list", "object"],
)
def test_a_record_without_a_usable_key_is_rejected_with_its_record_number(
    pushed: Sandbox, value: Any, reason: str
) -> None:
    records = with_record_3(id=value)
    if value is None:
        del records[2]["id"]
    pushed.write_catalog(records)

    report = pushed.sync()

    assert [t.rejected for t in report.targets] == [1, 1]
    reasons = rejection_reasons(pushed)
    assert reason in reasons[(UF_NAME, "#record-3")]
    assert reasons[(UF_NAME, "#record-3")].startswith("record 3: id: ")
    assert reasons[(VB_NAME, "#record-3")].startswith("record 3: external_id: ")
    assert_nothing_lost(pushed, spare={BAD})


def test_a_record_whose_key_went_missing_does_not_get_its_product_deleted(
    pushed: Sandbox,
) -> None:
    records = with_record_3()
    del records[2]["id"]
    pushed.write_catalog(records)

    report = pushed.sync()

    assert all(t.deleted == 0 for t in report.targets)
    assert_nothing_lost(pushed)


def test_duplicate_keys_push_neither_copy_and_keep_what_was_pushed(pushed: Sandbox) -> None:
    """The source does hold the product, twice: syncd can't tell which copy is right, so its
    target copy is kept (never withdrawn) and reported stale."""
    records = [dict(r) for r in BASE]
    records.append(dict(records[2], title="Another product 3"))
    pushed.write_catalog(records)

    report = pushed.sync()

    assert [t.rejected for t in report.targets] == [1, 1]
    reasons = rejection_reasons(pushed)
    assert reasons[(UF_NAME, BAD)] == f"duplicate key {BAD!r} in the source: neither copy is pushed"
    assert_nothing_lost(pushed)  # P00003 too: its pushed copy stays
    notes = " ".join(report.targets[0].plan["notes"])
    assert "stale (their key is duplicated in the source)" in notes


def test_with_rejected_keep_a_product_that_cant_be_pushed_stays_as_it_was_and_is_reported_stale(
    pushed: Sandbox,
) -> None:
    pushed.configure(log_level="warning", extra_target='rejected = "keep"')
    pushed.write_catalog(with_record_3(price="abc"))

    for _ in range(2):  # reported on every run, not only the first
        report = pushed.sync()

        assert report.ok, [(t.target, t.outcome, t.error) for t in report.targets]
        for target in report.targets:
            notes = " ".join(target.plan["notes"])
            assert "1 products on the target can't be pushed any more" in notes
            assert "stale" in notes and "'P00003'" in notes
        assert_nothing_lost(pushed)


# -- values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("abc", "not a number: 'abc'"),
        ("12,99 €uro", "not a number"),
        ("NaN", "not a number: 'NaN'"),
        ("Infinity", "not a number: 'Infinity'"),
        ({"amount": 5}, "not a number: {'amount': 5}"),
        ([5], "not a number"),
        (True, "a boolean is not a number"),
    ],
    ids=["text", "text-with-currency", "nan-text", "infinity-text", "object", "list", "bool"],
)
def test_a_price_that_is_not_a_number_is_rejected_naming_key_and_field(
    pushed: Sandbox, price: Any, reason: str
) -> None:
    pushed.write_catalog(with_record_3(price=price))

    report = pushed.sync()

    assert report.ok, [(t.target, t.outcome, t.error) for t in report.targets]
    reasons = rejection_reasons(pushed)
    assert reasons[(UF_NAME, BAD)].startswith(f"{BAD}: properties.price: ")
    assert reasons[(VB_NAME, BAD)].startswith(f"{BAD}: price: ")
    assert reason in reasons[(UF_NAME, BAD)], reasons
    assert_withdrawn(pushed)


def test_a_rejection_leads_with_the_product_key_and_lists_every_failing_field(
    pushed: Sandbox,
) -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    pushed.write_catalog(with_record_3(price="abc", title="", description="", brand=deep))

    report = pushed.sync()

    assert report.ok, [(t.target, t.outcome, t.error) for t in report.targets]
    reasons = rejection_reasons(pushed)
    too_deep = "nested deeper than 32 levels"
    assert reasons[(UF_NAME, BAD)] == (
        f"{BAD}: properties.price: not a number: 'abc'; properties.brand: {too_deep}"
    )
    assert reasons[(VB_NAME, BAD)] == (
        f"{BAD}: name: missing (required); description: missing (required);"
        f" price: not a number: 'abc'; metadata.brand: {too_deep}"
    )
    assert not any("record 3" in reason for reason in reasons.values())
    assert_withdrawn(pushed)


def test_nan_and_infinity_literals_make_the_line_unreadable_and_hold_deletes(
    pushed: Sandbox,
) -> None:
    text = lines(BASE)
    text[2] = text[2].replace('"price": 8.75', '"price": NaN')
    text[5] = text[5].replace('"brand"', '"weight": Infinity, "brand"')
    del text[8]  # a real delete: held, because two rows can't be read
    pushed.catalog.write_text("".join(text), encoding="utf-8")

    report = pushed.sync()

    assert_read_failed(report, "2 source rows could not be parsed", "line 3", "NaN")
    assert_nothing_lost(pushed)


def test_an_overflowing_number_is_rejected_as_not_finite(pushed: Sandbox) -> None:
    text = lines(BASE)
    text[2] = text[2].replace('"price": 8.75', '"price": 1e999')
    pushed.catalog.write_text("".join(text), encoding="utf-8")

    report = pushed.sync()

    assert report.ok
    assert "not a finite number: inf" in rejection_reasons(pushed)[(UF_NAME, BAD)]
    assert_withdrawn(pushed)


def test_invalid_utf8_fails_the_read_naming_line_and_byte(pushed: Sandbox) -> None:
    data = "".join(lines(BASE)).encode().replace(b"Product 3", b"Product \xff3")
    pushed.catalog.write_bytes(data)

    report = pushed.sync()

    assert_read_failed(report, "catalog.jsonl: line 3 (byte ", "is not valid utf-8")
    assert_nothing_lost(pushed)


def test_a_10_mb_field_is_rejected_by_size_and_the_rest_is_pushed(pushed: Sandbox) -> None:
    records = with_record_3(title="word " * 2_000_000)
    records.append(BASE[0] | {"id": "P00500", "title": "Product 500"})
    pushed.write_catalog(records)

    report = pushed.sync()

    assert report.ok
    assert [t.created for t in report.targets] == [1, 1]
    reasons = rejection_reasons(pushed)
    assert reasons[(UF_NAME, BAD)].startswith(f"{BAD}: payload is 10000")
    assert "over 1000000" in reasons[(UF_NAME, BAD)]
    assert "over 1000000" in reasons[(VB_NAME, BAD)]
    assert_withdrawn(pushed)


def test_values_nested_too_deep_for_a_target_are_rejected(pushed: Sandbox) -> None:
    value: Any = "x"
    for _ in range(100):
        value = {"a": value}
    pushed.write_catalog(with_record_3(brand=value))

    report = pushed.sync()

    assert report.ok
    reasons = rejection_reasons(pushed)
    assert reasons[(UF_NAME, BAD)] == f"{BAD}: properties.brand: nested deeper than 32 levels"
    assert reasons[(VB_NAME, BAD)] == f"{BAD}: metadata.brand: nested deeper than 32 levels"
    assert_withdrawn(pushed)


def test_a_line_nested_too_deep_to_parse_is_an_unreadable_row(pushed: Sandbox) -> None:
    text = lines(BASE)
    text[2] = '{"id": "P00003", "brand": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    pushed.catalog.write_text("".join(text), encoding="utf-8")

    report = pushed.sync()

    assert_read_failed(report, "line 3")
    assert_nothing_lost(pushed)


def test_a_line_that_is_not_an_object_is_unreadable_and_holds_deletes(pushed: Sandbox) -> None:
    text = lines(BASE)
    text[2] = '["P00003", "Product 3", 8.75]\n'
    pushed.catalog.write_text("".join(text), encoding="utf-8")

    report = pushed.sync()

    assert_read_failed(report, "line 3: a JSON list, not an object")
    assert_nothing_lost(pushed)


# -- files ----------------------------------------------------------------------------


def test_a_truncated_jsonl_file_fails_the_read_and_deletes_nothing(pushed: Sandbox) -> None:
    text = "".join(lines(BASE))
    pushed.catalog.write_text(text[: len(text) * 6 // 10], encoding="utf-8")

    report = pushed.sync()

    assert_read_failed(report, "is cut short without a newline: the file looks truncated")
    assert_nothing_lost(pushed)


def test_a_truncated_json_file_fails_the_read_naming_line_and_column(pushed: Sandbox) -> None:
    path = pushed.root / "catalog.json"
    text = json.dumps(BASE, indent=1)
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    config = pushed.config_path.read_text().replace("catalog.jsonl", "catalog.json")
    pushed.config_path.write_text(config)

    report = pushed.sync()

    assert_read_failed(report, "catalog.json: not valid JSON at line", "the file looks truncated")
    assert_nothing_lost(pushed)


@pytest.mark.parametrize("how", ["missing", "directory", "no-permission"])
def test_an_unreadable_file_fails_the_read_and_deletes_nothing(pushed: Sandbox, how: str) -> None:
    pushed.catalog.unlink()
    expected = {"missing": "does not exist", "directory": "is not a file"}
    if how == "directory":
        pushed.catalog.mkdir()
    if how == "no-permission":
        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their mode")
        pushed.write_catalog(BASE)
        pushed.catalog.chmod(0)
        expected[how] = "cannot read: Permission denied"

    report = pushed.sync()

    assert_read_failed(report, "catalog.jsonl: " + expected[how])
    assert_nothing_lost(pushed)


# -- the config and the state database, through the CLI --------------------------------


@pytest.mark.slow
def test_a_malformed_config_lists_every_problem_with_its_toml_path(pushed: Sandbox) -> None:
    text = pushed.config_path.read_text()
    before = dump_database(pushed.state_path)
    bad = text.replace('type_id = "product"', 'type_id = "product"\nretyr = 3')
    bad = bad.replace("concurrency = 4", 'concurrency = "four"', 1)
    bad = bad.replace("batch_size = 50", "batch_size = 5000")
    pushed.config_path.write_text(bad)

    result = pushed.cli("sync")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "syncd: invalid configuration in " in result.stderr
    assert "targets[0].retyr: unknown key" in result.stderr
    assert "targets[0].concurrency: Input should be a valid integer" in result.stderr
    assert "targets[1].batch_size: Input should be less than or equal to 2000" in result.stderr
    assert dump_database(pushed.state_path) == before
    assert pushed.new_requests() == ([], [])

    pushed.config_path.write_text(text.replace("[logging]", "[logging"))
    result = pushed.cli("sync")
    assert result.returncode == 2
    assert "is not valid TOML" in result.stderr and "(at line " in result.stderr


def test_a_problem_in_the_http_table_is_named_with_its_toml_path() -> None:
    from syncd.config import parse_config
    from syncd.errors import ConfigError

    data = {
        "source": {"kind": "file", "path": "catalog.jsonl"},
        "targets": [{"name": "uf", "kind": "userflux", "type_id": "p", "api_key_env": "K"}],
        "http": {"connect_timeout_s": "slow", "verify": False},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={"K": "k"})
    assert "http.verify: unknown key" in str(caught.value)
    assert "http.connect_timeout_s: Input should be a valid number" in str(caught.value)


@pytest.mark.slow
def test_a_missing_environment_variable_is_named_with_its_toml_path(pushed: Sandbox) -> None:
    del pushed.environ["ROBUST_VAMBE_KEY"]

    result = pushed.cli("sync")

    assert result.returncode == 2
    assert (
        "targets[1].api_key_env: environment variable ROBUST_VAMBE_KEY is not set "
        "(nor ROBUST_VAMBE_KEY_FILE)"
    ) in result.stderr
    assert pushed.new_requests() == ([], [])


@pytest.mark.slow
def test_a_state_database_from_a_newer_syncd_is_refused_untouched(pushed: Sandbox) -> None:
    with sqlite3.connect(pushed.state_path) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    before = dump_database(pushed.state_path)

    result = pushed.cli("sync")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "state database at revision 9999_from_the_future was written by a newer syncd" in (
        result.stderr
    )
    assert "upgrade syncd" in result.stderr
    assert dump_database(pushed.state_path) == before
    assert pushed.new_requests() == ([], [])


@pytest.mark.slow
def test_the_cli_shows_rejected_products_with_key_and_reason(pushed: Sandbox) -> None:
    pushed.write_catalog(with_record_3(price="abc"))

    result = pushed.cli("sync")
    rejections = pushed.cli("rejections")

    assert result.returncode == 0, result.stderr
    assert "rejected" in result.stdout
    assert BAD in rejections.stdout
    assert f"{BAD}: properties.price: not a number: 'abc'" in rejections.stdout
