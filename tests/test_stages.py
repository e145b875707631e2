"""A run's stages as functions over explicit inputs: the figures of a target's run kept
once (``TargetReport``) and derived for the ``runs`` row and the ``syncd.run.finished``
line, and the read's budget."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from pathlib import Path

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from syncd.diff import Plan
from syncd.errors import SourceError
from syncd.runs import TargetReport
from syncd.sandbox import FakeUserflux
from syncd.stages.budget import Budget
from syncd.stages.finishing import run_record
from syncd.stages.reading import _keyed
from tests.support import KEY, Harness, catalog, userflux_target


def test_a_runs_row_is_built_from_the_target_report_with_a_refresh_counted_as_an_update():
    report = TargetReport(
        target="uf",
        kind="userflux",
        run_id=7,
        mode="full",
        mode_reason="asked",
        outcome="partial",
        created=3,
        updated=4,
        refreshed=5,
        deleted=6,
        unchanged=8,
        rejected=9,
        failed=10,
        held=11,
        requests=12,
        retries=13,
        duration_ms=2500,
        drift=-2,
        error="2 products still failing",
    )
    plan = Plan("uf", "userflux", "full", "asked", (), 8, source_count=40, source_complete=True)

    record = run_record(report, plan, finished_at=1000.0, holder="host:1")

    assert (record.id, record.target, record.mode, record.outcome) == (7, "uf", "full", "partial")
    assert (record.started_at, record.finished_at) == (997.5, 1000.0)
    assert (record.created, record.updated, record.deleted) == (3, 9, 6)
    assert (record.unchanged, record.rejected, record.failed, record.held) == (8, 9, 10, 11)
    assert (record.requests, record.retries, record.drift) == (12, 13, -2)
    assert (record.source_count, record.source_complete) == (40, True)
    assert (record.error, record.holder) == ("2 products still failing", "host:1")
    assert record.details is not None and set(record.details) == {"requests", "notes", "guard"}


def test_a_runs_row_needs_the_reports_run_id():
    report = TargetReport("uf", "userflux", None, "incremental", "", "ok")
    plan = Plan("uf", "userflux", "incremental", "", (), 0)

    with pytest.raises(ValueError, match="'uf'"):
        run_record(report, plan, finished_at=1.0)


def test_the_finished_line_and_the_runs_row_say_what_the_report_says(tmp_path: Path):
    with FakeUserflux(api_key=KEY) as userflux:
        h = Harness(tmp_path, [userflux_target(userflux.url)])
        h.write(catalog(5))
        h.sync()
        h.write([*catalog(4), catalog(6)[5]])  # one gone, one new

        with capture_logs() as logs:
            [report] = h.sync(allow_deletes=True).targets
        [row, *_] = h.store.recent_runs("uf")
        h.close()

    [finished] = [e for e in logs if e["event"] == "syncd.run.finished"]
    assert {k: v for k, v in finished.items() if k not in ("event", "log_level")} == (
        report.figures()
    )
    assert (report.created, report.deleted, report.unchanged) == (1, 1, 4)
    assert (row.id, row.outcome, row.created, row.deleted, row.unchanged) == (
        report.run_id,
        report.outcome,
        report.created,
        report.deleted,
        report.unchanged,
    )
    assert row.updated == report.updated + report.refreshed


def test_a_read_ends_with_a_source_error_once_the_budget_has_run_out():
    budget = Budget.starting(threading.Event(), 0.5, time.monotonic() - 1)

    with pytest.raises(SourceError, match=r"max_run_s=0\.5\) ran out before the read"):
        budget.check_read()


def test_a_read_ends_with_a_source_error_when_asked_to_stop():
    stop = threading.Event()
    budget = Budget.starting(stop, None, time.monotonic())
    budget.check_read()  # no budget, no stop: the read goes on
    assert not budget.out_of_time()

    stop.set()
    with pytest.raises(SourceError, match="stopped"):
        budget.check_read()


def _planner(**opened):
    from types import SimpleNamespace

    from syncd.errors import RecordError
    from syncd.model import Spool
    from syncd.stages.planning import MAX_DOCUMENT_BYTES, TargetPlanner

    def encode(record):
        key = record.get("id")
        if key is None:
            raise RecordError("no id")
        if record.get("twin"):
            raise RecordError("invisible character", key=key, also_keys=(key + "\u200b",))
        if record.get("bad"):
            raise RecordError("bad field", key=key, field="price")
        size = MAX_DOCUMENT_BYTES + 1 if record.get("huge") else 10
        return key, {"id": key}, b"x" * size

    def validate(key, payload, well_formed):
        if key.startswith("invalid"):
            raise RecordError("refused by the contract", key=key)

    config = SimpleNamespace(where=opened.pop("where", None), mirror_block=False)
    return TargetPlanner(
        SimpleNamespace(
            config=config,
            index=0,
            mapper=SimpleNamespace(encode=encode, well_formed=frozenset(), map=None),
            target=SimpleNamespace(validate=validate),
            full=False,
            only=opened.pop("only", frozenset()),
            staging=None,
        ),
        Spool(),
    )


@pytest.mark.parametrize("only", [frozenset(), frozenset({"a1", "invalid-2", "b3"})])
def test_a_block_of_records_maps_as_the_same_records_one_at_a_time(only):
    records = [
        {"id": f"{kind}{n}", **flags}
        for n in range(30)
        for kind, flags in (
            ("a", {}),
            ("invalid-", {}),
            ("b", {"bad": True}),
            ("c", {"twin": True}),
            ("d", {"huge": True}),
        )
    ] + [{"name": "keyless"}, {"id": "z"}]
    ordinals = [n * 3 + 1 for n in range(len(records))]
    sources = [bytes([n % 7]) * 16 if n % 5 else None for n in range(len(records))]
    one, block = _planner(only=only), _planner(only=only)
    for record, ordinal, source in zip(records, ordinals, sources, strict=True):
        one.map_one(record, ordinal, source)
    block.map_records(records, ordinals, sources)

    assert block._chunk == one._chunk and len(one._chunk) >= 3
    assert block.planned() == one.planned()
    assert block.planned().rejections and (only or block.planned().keyless)


@given(
    st.lists(st.binary(min_size=16, max_size=16), max_size=40), st.binary(min_size=16, max_size=16)
)
def test_a_rows_fingerprint_is_its_digest_xor_the_key_by_numpy_or_not(
    digests: list[bytes], key: bytes
) -> None:
    expected = b"".join(bytes(a ^ b for a, b in zip(d, key, strict=True)) for d in digests)
    assert _keyed(b"".join(digests), key, numpy) == expected
    assert _keyed(b"".join(digests), key, None) == expected


def test_a_first_sync_reads_while_another_thread_is_halfway_through_importing_numpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that skips no row XORs its fingerprints without NumPy, and never takes NumPy
    from ``sys.modules``, where a change feed's thread importing it leaves it half made
    (found by CI: "partially initialized module 'numpy' has no attribute 'frombuffer'").
    Lines written compact need no NumPy at all; where NumPy is needed, an ``import``
    waits for the other thread to finish it (which a module put here can't stand for)."""
    half_made = types.ModuleType("numpy")  # what the importing thread's module holds so far
    monkeypatch.setitem(sys.modules, "numpy", half_made)
    with FakeUserflux(api_key=KEY) as userflux:
        h = Harness(tmp_path, [userflux_target(userflux.url)])
        h.path.write_text(
            "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in catalog(40)),
            encoding="utf-8",
        )
        try:
            report = h.sync()
        finally:
            h.close()
    assert report.ok and report.source_complete, report
    assert [t.created for t in report.targets] == [40]
