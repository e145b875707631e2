"""Model-based test: random catalog edits (add, change a value, remove a property, delete,
re-add a deleted key, rename a property in the mapping, roll back to the last clean run,
make a product unpushable to Vambe: price 0, description emptied) interleaved with runs,
incremental or full (Vambe by whole-block upsert): clean, with failing products (5xx, 429,
dropped connections, writes applied but answered 500, re-asserted by the next run), stopped
after N answers, or killed before the acknowledgements were committed.

Invariants: after every clean run each fake target equals the mapped source, as a fresh
full sync would leave it (UserFlux: every product's properties; Vambe: the block, without
the products it refuses); after every run, no key present in the source (and acceptable to
that target) was deleted from a target, every product a target holds is known to state,
and every state row claiming an acknowledgement is exactly what the target holds.

``SYNCD_MODEL_EXAMPLES`` sets the number of examples (default 20); runs are derandomized
(the same sequences every time) unless ``SYNCD_MODEL_SEED`` picks another seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from syncd.reconcile import RunOptions
from syncd.sandbox import Fault
from tests.robustness.helpers import (
    DEFAULT_PROPERTIES,
    UF_NAME,
    UNACKNOWLEDGED,
    VB_NAME,
    Sandbox,
    Timeline,
    deleted_keys,
    make_record,
    map_vambe,
    sandbox,
    shared_tls_context,
    state_rows,
    touches,
)

EXAMPLES = int(os.environ.get("SYNCD_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("SYNCD_MODEL_STEPS", "14"))
SEED = os.environ.get("SYNCD_MODEL_SEED")
PERMISSIVE_GUARDS = {
    "max_delete_fraction": 1.0,
    "min_source_count": 0,
    "min_source_fraction": 0.0,
    "max_reject_fraction": 1.0,
}
RENAMES = {"color": ("color", "colour"), "brand": ("brand", "maker")}
"""Source field → the property names the mapping toggles between."""

FAULTS = ["500", "503", "429", "drop", "applied-500", "applied-drop"]


def fault_for(kind: str, keys: set[str]) -> Fault:
    match = touches(*keys)
    if kind == "500":
        return Fault(status=500, times=None, match=match)
    if kind == "503":
        return Fault(status=503, retry_after="0", times=None, match=match)
    if kind == "429":
        return Fault(status=429, times=None, match=match)
    if kind == "drop":
        return Fault(drop_connection=True, times=None, match=match)
    if kind == "applied-500":
        return Fault(status=500, apply_then_fail=True, times=None, match=match)
    if kind == "applied-drop":
        return Fault(drop_connection=True, apply_then_fail=True, times=None, match=match)
    raise ValueError(kind)


class CrashingStore:
    """A state store that dies on its ``calls``-th ``apply_acks``: the acks are lost, as in
    a process killed after the target answered and before the commit."""

    def __init__(self, store: Any, calls: int) -> None:
        self._store = store
        self._left = calls

    def apply_acks(self, *args: Any, **kwargs: Any) -> None:
        self._left -= 1
        if self._left <= 0:
            raise SimulatedCrash("killed before the acknowledgements were committed")
        self._store.apply_acks(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class SimulatedCrash(Exception):
    pass


class CatalogMachine(RuleBasedStateMachine):
    """The source is a dict of records; the fakes are the targets; syncd runs in-process."""

    def __init__(self) -> None:
        super().__init__()
        self._stack = ExitStack()
        self._dir = Path(tempfile.mkdtemp(prefix="syncd-model-"))
        self.box: Sandbox = self._stack.enter_context(sandbox(self._dir))
        self.store: Any = None
        self.records: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.clean_snapshot: dict[str, dict[str, Any]] = {}
        self.properties = dict(DEFAULT_PROPERTIES)
        self.next_number = 1

    # -- plumbing -------------------------------------------------------------------

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        self._stack.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _write(self) -> None:
        self.box.write_catalog(sorted(self.records.values(), key=lambda r: r["id"]))

    def _configure(self) -> None:
        self.box.configure(
            properties=self.properties,
            guards=PERMISSIVE_GUARDS,
            batch_size=4,
            concurrency=3,
            mirror_block=True,
            log_level="warning",
            # every write left in doubt is re-asserted by the next run
            extra_target="in_doubt_window_s = 0",
        )

    def _sync(self, **kwargs: Any) -> Any:
        self._write()
        self.box.mark()
        if self.store is None:
            self.store = self.box.store()
        kwargs.setdefault("store", self.store)
        try:
            report = self.box.sync(**kwargs)
        finally:
            self._check_no_wrong_delete()
        return report

    def _pushable_to_vambe(self) -> set[str]:
        """Source keys Vambe can take (the others are withdrawn from it)."""
        return {key for key, record in self.records.items() if map_vambe(record) is not None}

    def _check_no_wrong_delete(self) -> None:
        uf, vb = self.box.new_requests()
        wrong = set(deleted_keys(uf, [])) & set(self.records)
        assert not wrong, f"UserFlux: deleted keys present in the source: {sorted(wrong)}"
        wrong = set(deleted_keys([], vb)) & self._pushable_to_vambe()
        assert not wrong, f"Vambe: deleted keys it can take from the source: {sorted(wrong)}"
        for request in vb:
            if "/upsert/" in request.path:
                sent = {p["external_id"] for p in request.json or []}
                assert self._pushable_to_vambe() <= sent, "a block upsert left out products"

    def _check_state_mirrors_targets(self) -> None:
        """Every product a target holds is known to state (no orphan can escape a delete),
        and every row claiming an acknowledgement is exactly what the target holds (rows
        marked unacknowledged before sending may differ: the next run re-sends them)."""
        uf_state = state_rows(self.box.state_path, UF_NAME)
        uf_target = {key: held for (_, key), held in self.box.uf_products().items()}
        orphans = set(uf_target) - set(uf_state)
        assert not orphans, f"UserFlux holds products state does not know: {sorted(orphans)}"
        for key, (digest, payload) in uf_state.items():
            if digest == UNACKNOWLEDGED:
                continue
            assert key in uf_target, f"state says UserFlux holds {key}, it does not"
            assert uf_target[key]["properties"] == json.loads(payload)["properties"], key
        vb_state = state_rows(self.box.state_path, VB_NAME)
        vb_target = self.box.vb_products()
        orphans = set(vb_target) - set(vb_state)
        assert not orphans, f"Vambe holds products state does not know: {sorted(orphans)}"
        for key, (digest, payload) in vb_state.items():
            if digest == UNACKNOWLEDGED:
                continue
            assert key in vb_target, f"state says Vambe holds {key}, it does not"
            assert vb_target[key] == json.loads(payload), key

    def _existing(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.records)), label="key")

    # -- setup ----------------------------------------------------------------------

    @initialize(size=st.integers(min_value=3, max_value=12))
    def start(self, size: int) -> None:
        for _ in range(size):
            self._add()
        self._configure()
        self.clean_sync()

    # -- catalog edits --------------------------------------------------------------

    def _add(self) -> None:
        record = make_record(self.next_number)
        self.records[record["id"]] = record
        self.next_number += 1

    @rule()
    def add(self) -> None:
        self._add()

    @precondition(lambda self: self.records)
    @rule(data=st.data(), version=st.integers(min_value=1, max_value=5))
    def change_value(self, data: st.DataObject, version: int) -> None:
        key = self._existing(data)
        number = int(key[1:])
        changed = make_record(number, version=version)
        for name in ("color", "brand"):
            if name not in self.records[key]:
                changed.pop(name, None)
        self.records[key] = changed

    @precondition(lambda self: self.records)
    @rule(data=st.data(), field=st.sampled_from(["color", "brand"]))
    def remove_property(self, data: st.DataObject, field: str) -> None:
        self.records[self._existing(data)].pop(field, None)

    @precondition(lambda self: self.records)
    @rule(data=st.data(), how=st.sampled_from(["price", "description"]))
    def make_unpushable_to_vambe(self, data: st.DataObject, how: str) -> None:
        """A price set to 0 or a description emptied: Vambe refuses the product, which must
        not stay there with its old data (it is withdrawn); UserFlux still takes it."""
        self.records[self._existing(data)][how] = 0 if how == "price" else ""

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        key = self._existing(data)
        self.deleted[key] = self.records.pop(key)

    @precondition(lambda self: self.deleted)
    @rule(data=st.data())
    def re_add(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.deleted)), label="deleted key")
        self.records[key] = self.deleted.pop(key)

    @rule()
    def revert_to_last_clean_run(self) -> None:
        """The backend rolls back to the catalog of the last clean run."""
        for key in set(self.records) - set(self.clean_snapshot):
            self.deleted[key] = self.records.pop(key)
        for key, record in self.clean_snapshot.items():
            self.records[key] = json.loads(json.dumps(record))
            self.deleted.pop(key, None)

    @rule(field=st.sampled_from(sorted(RENAMES)))
    def rename_property(self, field: str) -> None:
        """Change the mapping: the property fed by ``field`` gets its other name."""
        names = RENAMES[field]
        current = next(name for name, source in self.properties.items() if source == field)
        renamed = names[1] if current == names[0] else names[0]
        self.properties = {
            (renamed if name == current else name): source
            for name, source in self.properties.items()
        }
        self._configure()

    # -- runs -----------------------------------------------------------------------

    @rule(full=st.booleans())
    def clean_sync(self, full: bool = False) -> None:
        """A run without faults (``full``: a full refresh, Vambe by whole-block upsert)."""
        report = self._sync(options=RunOptions(full=full))
        assert report.ok, [(t.target, t.outcome, t.error) for t in report.targets]
        records = list(self.records.values())
        self.box.properties = self.properties
        self.box.assert_converged(records)
        self.clean_snapshot = json.loads(json.dumps(self.records))
        self._check_state_mirrors_targets()
        assert "running" not in {r.outcome for r in self.store.recent_runs(limit=50)}

    @rule(
        data=st.data(),
        kind=st.sampled_from(FAULTS),
        include_all=st.booleans(),
        full=st.booleans(),
    )
    def sync_with_failing_products(
        self, data: st.DataObject, kind: str, include_all: bool, full: bool
    ) -> None:
        everything = sorted(set(self.records) | set(self.deleted))
        keys = (
            set(everything)
            if include_all
            else data.draw(st.sets(st.sampled_from(everything), min_size=1), label="failing")
        )
        assert self.box.userflux is not None and self.box.vambe is not None
        fault = fault_for(kind, keys)
        self.box.userflux.inject(fault)
        self.box.vambe.inject(fault)
        try:
            self._sync(options=RunOptions(full=full))
        finally:
            self.box.userflux.clear_faults()
            self.box.vambe.clear_faults()
        self._check_state_mirrors_targets()

    @rule(answers=st.integers(min_value=0, max_value=8))
    def sync_stopped_after_some_answers(self, answers: int) -> None:
        """SIGTERM-like: stop taking work after ``answers`` answers; in-flight ones finish."""
        stop = threading.Event()
        if answers == 0:
            stop.set()

        class StopAfter(Timeline):
            def request(self, target: str, endpoint: str, status: str, seconds: float) -> None:
                super().request(target, endpoint, status, seconds)
                if len(self.answers) >= answers:
                    stop.set()

        report = self._sync(events=StopAfter(), stop=stop, options=RunOptions())
        for target in report.targets:
            stopped_reading = target.outcome == "failed" and "stopped" in (target.error or "")
            assert target.outcome in ("ok", "interrupted") or stopped_reading, target
        self._check_state_mirrors_targets()

    @rule(calls=st.integers(min_value=1, max_value=2))
    def sync_killed_before_committing_acks(self, calls: int) -> None:
        if self.store is None:
            self.store = self.box.store()
        with contextlib.suppress(SimulatedCrash):  # nothing to acknowledge: no crash
            self._sync(store=CrashingStore(self.store, calls))
        self._check_state_mirrors_targets()


def _settings(**extra: Any) -> settings:
    return settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
        **extra,
    )


def _run(machine: type[RuleBasedStateMachine], **extra: Any) -> None:
    print(
        f"model: {EXAMPLES} examples of up to {STEPS} steps, "
        + ("derandomized" if SEED is None else f"SYNCD_MODEL_SEED={SEED}")
    )

    def test() -> None:
        run_state_machine_as_test(machine, settings=_settings(**extra))

    if SEED is not None:
        test = hypothesis_seed(int(SEED))(test)
    with shared_tls_context():
        test()


@pytest.mark.slow
@pytest.mark.timeout(max(120, EXAMPLES * 10))
def test_random_edits_faults_and_crashes_keep_every_target_equal_to_the_mapped_source() -> None:
    _run(CatalogMachine)
