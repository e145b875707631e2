"""UserFlux planning: the update type of every request, exactly as DESIGN.md's table says."""

from __future__ import annotations

import pytest

from syncd.diff import Change, ChangeKind, Operation
from syncd.model import Acked, Document
from syncd.sandbox.userflux import validate_upsert
from syncd.targets.userflux import (
    DELETE,
    FULL,
    INCREMENTAL,
    UPSERT,
    leaf_paths,
    plan_delete,
    plan_update,
    plan_userflux,
    request_body,
)

TYPE = "shoes"


def payload(
    key: str = "p1",
    properties: dict | None = None,
    overrides: dict | None = None,
    type_id: str = TYPE,
) -> dict:
    body: dict = {"id": key, "typeId": type_id, "properties": properties or {}}
    if overrides:
        body["aiPropertyOverrides"] = overrides
    return body


def acked_of(body: dict) -> Acked:
    document = Document.of(body["id"], body)
    return Acked(document.key, document.hash, document.canonical)


def create(body: dict) -> Change:
    return Change(ChangeKind.CREATE, body["id"], Document.of(body["id"], body))


def update(before: dict, after: dict) -> Change:
    return Change(ChangeKind.UPDATE, after["id"], Document.of(after["id"], after), acked_of(before))


def refresh(body: dict) -> Change:
    return Change(ChangeKind.REFRESH, body["id"], Document.of(body["id"], body), acked_of(body))


def delete(body: dict) -> Change:
    return Change(ChangeKind.DELETE, body["id"], None, acked_of(body))


def assert_valid_request(operation: Operation) -> None:
    """The body satisfies the UpsertProductRequest contract (the fake's own validator)."""
    assert operation.endpoint == UPSERT
    assert operation.path == "/product"
    assert validate_upsert(request_body(operation), frozenset({TYPE, "boots"})) == []
    assert request_body(operation)["propertiesUpdateType"] == operation.mode


BASE = {"title": "Trail shoe", "price": 10, "description": {"full": "Long", "short": "S"}}


# -- creates ----------------------------------------------------------------------------


def test_a_new_key_is_sent_as_full_update_with_every_property():
    body = payload(properties=BASE, overrides={"description.full": "AI text"})

    operation = plan_update(create(body))

    assert operation.mode == FULL
    assert request_body(operation) == {
        "id": "p1",
        "typeId": TYPE,
        "properties": BASE,
        "propertiesUpdateType": FULL,
        "aiPropertyOverrides": {"description.full": "AI text"},
    }
    assert "not in state" in operation.reason
    assert_valid_request(operation)


def test_a_full_update_body_is_built_when_sent_from_the_documents_bytes():
    """The plan holds no payload dict for FULL_UPDATE (a first sync plans every product):
    the body comes from the canonical bytes of a slim document, the same as from the dict."""
    body = payload(properties=BASE, overrides={"description.full": "AI text"})
    before = payload(properties=BASE, overrides={"title": "old AI"})
    slim = Change(ChangeKind.UPDATE, "p1", Document.of("p1", body).slim(), acked_of(before))
    assert slim.document is not None and slim.document.decoded is None

    operation = plan_update(slim, full_reason="full refresh (--full)")

    assert operation.body is None, "nothing but the document is held until sending"
    assert request_body(operation) == {
        "id": "p1",
        "typeId": TYPE,
        "properties": BASE,
        "propertiesUpdateType": FULL,
        "aiPropertyOverrides": {"description.full": "AI text"},
    }
    assert_valid_request(operation)


def test_a_new_key_without_properties_still_sends_an_empty_properties_object():
    operation = plan_update(create({"id": "p1", "typeId": TYPE}))

    assert request_body(operation)["properties"] == {}
    assert "aiPropertyOverrides" not in request_body(operation)
    assert_valid_request(operation)


# -- removed paths force FULL_UPDATE ----------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "removed"),
    [
        pytest.param(BASE, {k: v for k, v in BASE.items() if k != "price"}, "price", id="top"),
        pytest.param(
            BASE, {**BASE, "description": {"short": "S"}}, "description.full", id="nested"
        ),
        pytest.param(BASE, {**BASE, "description": "flat"}, "description.full", id="dict-scalar"),
        pytest.param({"a": 1, "x": {}}, {"a": 1}, "x", id="empty-object"),
        pytest.param({"a": 1, "n": None}, {"a": 1}, "n", id="null-value"),
        pytest.param({"x": {"y": {"z": 1}}}, {"x": {"y": {}}}, "x.y.z", id="deep"),
    ],
)
def test_plan_sends_full_update_when_a_property_path_is_removed(before, after, removed):
    operation = plan_update(update(payload(properties=before), payload(properties=after)))

    assert operation.mode == FULL
    assert request_body(operation)["properties"] == after, "FULL_UPDATE carries every property"
    assert repr(removed) in operation.reason
    assert_valid_request(operation)


# -- only added or changed values: INCREMENTAL_UPDATE with the changed top-level keys ---


@pytest.mark.parametrize(
    ("after", "sent"),
    [
        pytest.param({**BASE, "price": 12}, {"price": 12}, id="changed-scalar"),
        pytest.param({**BASE, "color": "red"}, {"color": "red"}, id="added"),
        pytest.param(
            {**BASE, "description": {"full": "Longer", "short": "S"}},
            {"description": {"full": "Longer", "short": "S"}},
            id="nested-change-sends-whole-top-level-value",
        ),
        pytest.param(
            {**BASE, "description": {"full": "Long", "short": "S", "alt": "A"}},
            {"description": {"full": "Long", "short": "S", "alt": "A"}},
            id="nested-addition",
        ),
        pytest.param(
            {**BASE, "title": "New", "price": 11, "color": "blue"},
            {"title": "New", "price": 11, "color": "blue"},
            id="several",
        ),
        pytest.param({**BASE, "price": 10.0, "tags": ["a"]}, {"tags": ["a"]}, id="equal-number"),
    ],
)
def test_plan_sends_only_changed_top_level_properties_incrementally(after, sent):
    operation = plan_update(update(payload(properties=BASE), payload(properties=after)))

    assert operation.mode == INCREMENTAL
    assert request_body(operation) == {
        "id": "p1",
        "typeId": TYPE,
        "properties": sent,
        "propertiesUpdateType": INCREMENTAL,
    }
    assert "nothing removed" in operation.reason
    assert_valid_request(operation)


def test_a_shortened_list_is_a_changed_value_not_a_removed_path():
    before = payload(properties={"tags": ["a", "b"], "title": "T"})
    after = payload(properties={"tags": ["a"], "title": "T"})

    operation = plan_update(update(before, after))

    assert operation.mode == INCREMENTAL
    assert request_body(operation)["properties"] == {"tags": ["a"]}


# -- aiPropertyOverrides ----------------------------------------------------------------


def test_changed_or_added_ai_overrides_are_included_in_an_incremental_update():
    before = payload(properties=BASE, overrides={"title": "AI title", "price": "cheap"})
    after = payload(
        properties=BASE,
        overrides={"title": "AI title 2", "price": "cheap", "description.full": "AI"},
    )

    operation = plan_update(update(before, after))

    assert operation.mode == INCREMENTAL
    assert request_body(operation)["properties"] == {}
    assert request_body(operation)["aiPropertyOverrides"] == {
        "title": "AI title 2",
        "description.full": "AI",
    }
    assert "AI overrides" in operation.reason
    assert_valid_request(operation)


def test_unchanged_ai_overrides_are_not_resent_with_a_property_change():
    overrides = {"title": "AI title"}
    before = payload(properties=BASE, overrides=overrides)
    after = payload(properties={**BASE, "price": 99}, overrides=overrides)

    operation = plan_update(update(before, after))

    assert operation.mode == INCREMENTAL
    assert request_body(operation)["properties"] == {"price": 99}
    assert "aiPropertyOverrides" not in request_body(operation)


@pytest.mark.parametrize(
    ("after_overrides", "removed"),
    [
        pytest.param({"price": "cheap"}, "title", id="one-removed"),
        pytest.param(None, "price", id="all-removed"),
    ],
)
def test_a_removed_ai_override_forces_a_full_update(after_overrides, removed):
    before = payload(properties=BASE, overrides={"title": "AI", "price": "cheap"})
    after = payload(properties=BASE, overrides=after_overrides)

    operation = plan_update(update(before, after))

    assert operation.mode == FULL
    assert f"AI override {removed!r} was removed" in operation.reason
    assert request_body(operation)["properties"] == BASE
    assert request_body(operation).get("aiPropertyOverrides", {}) == (after_overrides or {})
    assert_valid_request(operation)


def test_an_ai_overrides_value_of_null_that_passed_validation_does_not_crash_planning():
    before = {"id": "p1", "typeId": TYPE, "properties": {"a": 1}, "aiPropertyOverrides": None}
    after = {"id": "p1", "typeId": TYPE, "properties": {"a": 2}, "aiPropertyOverrides": None}

    operation = plan_update(update(before, after))

    assert operation.mode == INCREMENTAL
    assert request_body(operation)["properties"] == {"a": 2}
    assert "aiPropertyOverrides" not in request_body(operation)


# -- typeId change ----------------------------------------------------------------------


def test_a_changed_type_id_is_a_full_update_under_the_new_type():
    before = payload(properties=BASE, type_id=TYPE)
    after = payload(properties={**BASE, "price": 11}, type_id="boots")

    operation = plan_update(update(before, after))

    assert operation.mode == FULL
    assert request_body(operation)["typeId"] == "boots"
    assert request_body(operation)["properties"] == after["properties"]
    assert "typeId changed" in operation.reason
    assert_valid_request(operation)


# -- full refresh -----------------------------------------------------------------------


def test_a_full_refresh_sends_every_product_as_full_update_with_the_runs_reason():
    changes = [
        create(payload("n1", BASE)),
        update(payload("u1", BASE), payload("u1", {**BASE, "price": 3})),
        refresh(payload("r1", BASE, {"title": "AI"})),
    ]

    planned = plan_userflux(
        changes, [], full=True, full_reason="weekly drift repair", deletes_allowed=True
    )

    assert [op.mode for op in planned.operations] == [FULL, FULL, FULL]
    assert {op.reason for op in planned.operations} == {"weekly drift repair"}
    assert [op.keys for op in planned.operations] == [("n1",), ("u1",), ("r1",)]
    assert request_body(planned.operations[1])["properties"] == {**BASE, "price": 3}
    assert request_body(planned.operations[2])["aiPropertyOverrides"] == {"title": "AI"}
    for operation in planned.operations:
        assert_valid_request(operation)


def test_a_full_refresh_plans_the_requests_plan_update_plans_for_each_change():
    changes = [
        create(payload("n1", BASE)),
        update(payload("u1", BASE), payload("u1", {**BASE, "price": 3})),
        refresh(payload("r1", BASE, {"title": "AI"})),
    ]

    planned = plan_userflux(changes, [], full=True, full_reason="why", deletes_allowed=False)

    assert list(planned.operations) == [plan_update(c, full_reason="why") for c in changes]


def test_an_incremental_run_plans_one_request_per_change_by_the_table():
    changes = [
        create(payload("n1", BASE)),
        update(payload("u1", BASE), payload("u1", {**BASE, "price": 3})),
    ]

    planned = plan_userflux(changes, [], full=False, deletes_allowed=True)

    assert [(op.keys, op.mode) for op in planned.operations] == [
        (("n1",), FULL),
        (("u1",), INCREMENTAL),
    ]
    assert planned.held == ()


# -- deletes ----------------------------------------------------------------------------


def test_a_delete_targets_the_acknowledged_type_and_id_url_quoted():
    gone = delete({"id": "a/b c?d", "typeId": "shoe/s#1", "properties": {}})

    operation = plan_delete(gone)

    assert operation.endpoint == DELETE
    assert operation.path == "/product/shoe%2Fs%231/a%2Fb%20c%3Fd"
    assert operation.body is None
    assert operation.changes == (gone,)


def test_deletes_are_planned_only_when_the_guards_allow_them():
    changes = [create(payload("n1", BASE))]
    deletes = [delete(payload("d1")), delete(payload("d2"))]

    allowed = plan_userflux(changes, deletes, full=False, deletes_allowed=True)
    held = plan_userflux(changes, deletes, full=False, deletes_allowed=False)

    assert [(op.endpoint, op.keys) for op in allowed.operations] == [
        (UPSERT, ("n1",)),
        (DELETE, ("d1",)),
        (DELETE, ("d2",)),
    ]
    assert allowed.held == ()
    assert [op.endpoint for op in held.operations] == [UPSERT], "no DELETE may be sent"
    assert held.held == tuple(deletes)


def test_nothing_to_do_plans_no_request():
    planned = plan_userflux([], [], full=False, deletes_allowed=True)

    assert planned.operations == ()
    assert planned.held == ()


# -- leaf paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "paths"),
    [
        ({}, []),
        ({"a": 1}, [("a",)]),
        ({"a": {"b": 1, "c": {"d": None}}}, [("a", "b"), ("a", "c", "d")]),
        ({"a": {}}, [("a",)]),
        ({"a": [1, {"b": 2}]}, [("a",)]),
        ({"a.b": 1}, [("a.b",)]),
    ],
)
def test_leaf_paths_are_key_tuples_to_every_leaf(value, paths):
    assert sorted(leaf_paths(value)) == paths


def test_a_literal_dotted_key_replaced_by_a_nested_object_is_a_removal():
    before = payload(properties={"a.b": 1})
    after = payload(properties={"a": {"b": 1}})

    operation = plan_update(update(before, after))

    assert operation.mode == FULL
    assert "'a.b' was removed" in operation.reason
