"""The pure core: changes from one chunk, deletes, the immutable plan and its summary."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.diff import (
    Change,
    ChangeKind,
    GuardVerdict,
    Operation,
    Plan,
    Tally,
    chunked,
    deletes_of,
    diff_chunk,
)
from syncd.model import Acked, Document, Rejection


def doc(key: str, **payload: object) -> Document:
    return Document.of(key, {"id": key, **payload})


def acked(key: str, **payload: object) -> Acked:
    document = doc(key, **payload)
    return Acked(key, document.hash, document.canonical)


# -- diff_chunk -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("differing", "full", "previous", "expected"),
    [
        pytest.param({"a": None}, False, None, [("a", ChangeKind.CREATE, None)], id="unknown-key"),
        pytest.param(
            {"a": acked("a", v=0)}, False, None, [("a", ChangeKind.UPDATE, "a")], id="hash-differs"
        ),
        pytest.param({}, False, None, [], id="unchanged"),
        pytest.param(
            {}, True, {"a": acked("a", v=1)}, [("a", ChangeKind.REFRESH, "a")], id="full-refresh"
        ),
        pytest.param({}, True, None, [("a", ChangeKind.REFRESH, None)], id="full-no-previous"),
        pytest.param(
            {"a": acked("a", v=0)}, True, None, [("a", ChangeKind.UPDATE, "a")], id="full-update"
        ),
        pytest.param({"a": None}, True, None, [("a", ChangeKind.CREATE, None)], id="full-create"),
    ],
)
def test_diff_chunk_classifies_each_document(differing, full, previous, expected):
    documents = {"a": doc("a", v=1)}

    changes = diff_chunk(documents, differing, full=full, previous=previous)

    assert [(c.key, c.kind, c.previous and c.previous.key) for c in changes] == expected
    for change in changes:
        assert change.document is documents["a"]


def test_diff_chunk_keeps_document_order_and_ignores_state_keys_outside_the_chunk():
    documents = {key: doc(key, v=1) for key in ("c", "a", "b")}
    differing = {"b": None, "a": acked("a", v=0), "zzz": acked("zzz")}

    changes = diff_chunk(documents, differing)

    assert [(c.key, c.kind) for c in changes] == [
        ("a", ChangeKind.UPDATE),
        ("b", ChangeKind.CREATE),
    ]
    assert "zzz" not in {c.key for c in changes}


@pytest.mark.parametrize("full", [False, True])
def test_diff_chunk_of_new_documents_creates_each_in_order_whatever_else_state_names(full):
    documents = {key: doc(key) for key in ("c", "a", "b")}
    differing = {"a": None, "other": None, "b": None, "c": None}

    changes = diff_chunk(documents, differing, full=full)

    assert changes == [Change(ChangeKind.CREATE, key, documents[key]) for key in "cab"]


def test_diff_chunk_of_an_unchanged_chunk_is_empty_so_nothing_is_sent():
    documents = {key: doc(key) for key in ("a", "b")}

    assert diff_chunk(documents, {}) == []


def test_deletes_of_unseen_entries_carry_no_document_and_the_acked_entry():
    entries = [acked("x", typeId="t"), acked("y", typeId="t")]

    changes = deletes_of(entries)

    assert [(c.kind, c.key, c.document) for c in changes] == [
        (ChangeKind.DELETE, "x", None),
        (ChangeKind.DELETE, "y", None),
    ]
    assert [c.previous for c in changes] == entries


def test_changes_operations_and_plans_are_immutable():
    change = Change(ChangeKind.CREATE, "a", doc("a"))
    operation = Operation("product.upsert", "FULL_UPDATE", "new", (change,))
    plan = Plan("t", "userflux", "incremental", "nightly", (operation,), 0)

    for value, attribute in ((change, "key"), (operation, "mode"), (plan, "mode")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, attribute, "x")


# -- Plan -------------------------------------------------------------------------------


def single(endpoint: str, mode: str, key: str, kind: ChangeKind, reason: str = "why") -> Operation:
    document = None if kind is ChangeKind.DELETE else doc(key)
    previous = None if kind is ChangeKind.CREATE else acked(key)
    return Operation(endpoint, mode, reason, (Change(kind, key, document, previous),))


def batch(keys: list[str], kind: ChangeKind = ChangeKind.CREATE) -> Operation:
    changes = tuple(Change(kind, key, doc(key)) for key in keys)
    return Operation("block.create", "create", "created or changed products", changes)


def sample_plan(**overrides: object) -> Plan:
    operations = (
        single("product.upsert", "FULL_UPDATE", "n1", ChangeKind.CREATE, "not in state"),
        single("product.upsert", "FULL_UPDATE", "n2", ChangeKind.CREATE, "not in state"),
        single("product.upsert", "FULL_UPDATE", "n3", ChangeKind.UPDATE, "property removed"),
        single("product.upsert", "INCREMENTAL_UPDATE", "u1", ChangeKind.UPDATE, "changed title"),
        single("product.delete", "DELETE", "d1", ChangeKind.DELETE, "gone"),
    )
    values: dict[str, object] = {
        "target": "uf",
        "kind": "userflux",
        "mode": "incremental",
        "mode_reason": "scheduled",
        "operations": operations,
        "unchanged": 7,
        "source_count": 11,
        "state_count": 9,
    }
    values.update(overrides)
    return Plan(**values)  # type: ignore[arg-type]


def test_plan_counts_products_per_change_kind():
    plan = sample_plan()

    assert plan.counts() == {"create": 2, "update": 2, "delete": 1}
    assert plan.pending


def test_plan_summary_groups_requests_by_endpoint_and_mode_with_sample_reasons():
    summary = sample_plan().summary()

    assert summary["requests"] == {
        "product.upsert FULL_UPDATE": {
            "requests": 3,
            "products": 3,
            "samples": [
                {"key": "n1", "reason": "not in state"},
                {"key": "n2", "reason": "not in state"},
                {"key": "n3", "reason": "property removed"},
            ],
        },
        "product.upsert INCREMENTAL_UPDATE": {
            "requests": 1,
            "products": 1,
            "samples": [{"key": "u1", "reason": "changed title"}],
        },
        "product.delete DELETE": {
            "requests": 1,
            "products": 1,
            "samples": [{"key": "d1", "reason": "gone"}],
        },
    }
    assert summary["changes"] == {"create": 2, "delete": 1, "update": 2}
    assert list(summary["changes"]) == sorted(summary["changes"])
    assert summary["request_count"] == 5
    assert (summary["unchanged"], summary["source_count"], summary["state_count"]) == (7, 11, 9)
    assert (summary["mode"], summary["mode_reason"]) == ("incremental", "scheduled")


def test_plan_summary_limits_samples_and_shows_batches_by_first_key():
    plan = sample_plan(operations=(batch(["a", "b", "c"]), batch(["d"]), batch(["e", "f"])))

    summary = plan.summary(sample=2)

    entry = summary["requests"]["block.create create"]
    assert (entry["requests"], entry["products"]) == (3, 6)
    assert [s["key"] for s in entry["samples"]] == ["a (+2 more)", "d"]


def test_plan_summary_reports_rejections_held_deletes_guard_and_notes():
    rejections = tuple(Rejection(f"r{i}", f"bad {i}") for i in range(7))
    held = tuple(deletes_of([acked("h1"), acked("h2")]))
    guard = GuardVerdict(False, ("too many deletes",))

    summary = sample_plan(rejected=rejections, held=held, guard=guard, notes=("n",)).summary()

    assert summary["rejected"] == 7
    assert summary["rejected_samples"] == [{"key": f"r{i}", "reason": f"bad {i}"} for i in range(5)]
    assert summary["held"] == 2
    assert summary["guard"] == {
        "allowed": False,
        "overridden": False,
        "reasons": ["too many deletes"],
    }
    assert summary["notes"] == ["n"]


def test_an_empty_plan_is_not_pending_and_its_summary_is_json_ready():
    plan = Plan("v", "vambe", "full", "state empty", (), unchanged=3)

    summary = plan.summary()

    assert not plan.pending
    assert summary["requests"] == {}
    assert summary["changes"] == {}
    assert summary["request_count"] == 0
    assert summary["guard"] == {"allowed": True, "overridden": False, "reasons": []}
    assert json.loads(json.dumps(summary)) == summary
    assert json.loads(json.dumps(sample_plan().summary()))["request_count"] == 5


# -- chunked ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "size", "sizes"),
    [
        (0, 3, []),
        (1, 3, [1]),
        (3, 3, [3]),
        (4, 2, [2, 2]),
        (5, 2, [2, 2, 1]),
        (2001, 1000, [1000, 1000, 1]),
        (2000, 2000, [2000]),
    ],
)
def test_chunked_yields_consecutive_tuples_of_at_most_size(count, size, sizes):
    changes = [Change(ChangeKind.CREATE, f"k{i}") for i in range(count)]

    chunks = list(chunked(changes, size))

    assert [len(chunk) for chunk in chunks] == sizes
    assert all(isinstance(chunk, tuple) for chunk in chunks)
    assert [c for chunk in chunks for c in chunk] == changes


# -- Tally ------------------------------------------------------------------------------


def tally_one_by_one(operations: list[Operation], samples: int) -> Tally:
    """The reference ``Tally.add`` takes runs of operations in place of: one at a time."""
    tally = Tally(samples)
    for operation in operations:
        for change in operation.changes:
            tally.counts[change.kind.value] += 1
        name = f"{operation.endpoint} {operation.mode}"
        entry = tally.by_request.setdefault(name, {"requests": 0, "products": 0, "samples": []})
        entry["requests"] += 1
        entry["products"] += len(operation.changes)
        if len(entry["samples"]) < samples:
            keys = operation.keys
            shown = keys[0] if len(keys) == 1 else f"{keys[0]} (+{len(keys) - 1} more)"
            entry["samples"].append({"key": shown, "reason": operation.reason})
    return tally


_operations = st.lists(
    st.builds(
        lambda request, reason, changes: Operation(*request, reason, tuple(changes)),
        st.sampled_from([("product.upsert", "FULL_UPDATE"), ("product.delete", "DELETE")]),
        st.sampled_from(["new", "changed"]),
        st.lists(
            st.builds(Change, st.sampled_from(list(ChangeKind)), st.sampled_from("abc")),
            min_size=1,
            max_size=3,
        ),
    ),
    max_size=12,
)


@settings(deadline=None)  # a loaded machine must not fail it
@given(groups=st.lists(_operations, max_size=3), samples=st.integers(0, 4))
def test_tally_counts_as_one_operation_at_a_time_would(groups, samples):
    tally = Tally(samples)
    for group in groups:
        tally.add(group)

    expected = tally_one_by_one([o for group in groups for o in group], samples)
    assert (tally.counts, tally.by_request) == (expected.counts, expected.by_request)
    # in the same order too: the summary lists them as first seen
    assert list(tally.counts) == list(expected.counts)
    assert list(tally.by_request) == list(expected.by_request)
