"""Vambe planning: create/delete batches, the guarded whole-block upsert, local validation,
request bodies, and splitting a refused batch."""

from __future__ import annotations

import json
import math

import pytest

from syncd.config import HttpConfig, VambeTargetConfig
from syncd.diff import Change, ChangeKind, Operation
from syncd.errors import RecordError
from syncd.model import Acked, Document
from syncd.sandbox.vambe import DEFAULT_TYPES, batch_problem, delete_problem
from syncd.targets.vambe import (
    CREATE,
    DELETE,
    UPSERT,
    VambeTarget,
    encode_body,
    plan_vambe,
    validate_product,
)

BLOCK = "6f1c2a9e-0000-4000-8000-000000000001"
CREATE_PATH = f"/api/public/product/create/{BLOCK}"
DELETE_PATH = f"/api/public/product/delete/{BLOCK}"
UPSERT_PATH = f"/api/public/product/upsert/{BLOCK}"


def product(external_id: str = "e1", **changes: object) -> dict:
    body: dict = {
        "name": "Trail shoe",
        "description": "A light shoe for running on mountain trails.",
        "price": 49.9,
        "currency": "USD",
        "type": "vambe",
        "external_id": external_id,
        "metadata": [{"key": "color", "value": "red"}],
    }
    body.update(changes)
    return body


def without(field: str) -> dict:
    body = product()
    del body[field]
    return body


def change(key: str, kind: ChangeKind = ChangeKind.CREATE) -> Change:
    document = Document.of(key, product(key))
    previous = None if kind is ChangeKind.CREATE else Acked(key, document.hash, document.canonical)
    return Change(kind, key, document, previous)


def gone(key: str) -> Change:
    document = Document.of(key, product(key))
    return Change(ChangeKind.DELETE, key, None, Acked(key, document.hash, document.canonical))


def plan(changes, deletes=(), **options):
    values = {
        "block_id": BLOCK,
        "batch_size": 1000,
        "full": False,
        "mirror_block": False,
        "deletes_allowed": True,
    }
    values.update(options)
    return plan_vambe(list(changes), list(deletes), **values)


def target(**config: object) -> VambeTarget:
    values: dict = {
        "kind": "vambe",
        "name": "vambe",
        "api_key_env": "VAMBE_KEY",
        "block_id": BLOCK,
        "base_url": "http://127.0.0.1:9",
    }
    values.update(config)
    return VambeTarget(VambeTargetConfig(**values), HttpConfig(), api_key="k")


# -- batching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("creates", "deletes", "batch_size", "create_sizes", "delete_sizes"),
    [
        (2001, 0, 1000, [1000, 1000, 1], []),
        (2000, 0, 2000, [2000], []),
        (1, 0, 2000, [1], []),
        (0, 3, 2, [], [2, 1]),
        (5, 4000, 2000, [5], [2000, 2000]),
        (0, 0, 10, [], []),
    ],
)
def test_creates_updates_and_deletes_go_in_batches_of_batch_size(
    creates, deletes, batch_size, create_sizes, delete_sizes
):
    changes = [
        change(f"c{i}", ChangeKind.UPDATE if i % 2 else ChangeKind.CREATE) for i in range(creates)
    ]
    removals = [gone(f"d{i}") for i in range(deletes)]

    planned = plan(changes, removals, batch_size=batch_size)

    operations = planned.operations
    assert [len(op.changes) for op in operations if op.endpoint == CREATE] == create_sizes
    assert [len(op.changes) for op in operations if op.endpoint == DELETE] == delete_sizes
    assert UPSERT not in {op.endpoint for op in operations}
    assert {op.path for op in operations if op.endpoint == CREATE} <= {CREATE_PATH}
    assert {op.path for op in operations if op.endpoint == DELETE} <= {DELETE_PATH}
    assert [c for op in operations if op.endpoint == CREATE for c in op.changes] == changes
    assert [c for op in operations if op.endpoint == DELETE for c in op.changes] == removals
    assert not any(op.removes_unlisted for op in operations)


def test_an_incremental_run_notes_why_no_upsert_was_used():
    planned = plan([change("a")], full=False, mirror_block=True)

    assert [op.endpoint for op in planned.operations] == [CREATE]
    assert len(planned.notes) == 1
    assert "no upsert" in planned.notes[0]
    assert "incremental" in planned.notes[0]


def test_deletes_are_held_when_the_guards_do_not_allow_them():
    planned = plan([change("a")], [gone("x"), gone("y")], deletes_allowed=False)

    assert [op.endpoint for op in planned.operations] == [CREATE]
    assert [c.key for c in planned.held] == ["x", "y"]


# -- the whole-block upsert -------------------------------------------------------------


def test_a_full_refresh_of_a_mirrored_block_is_exactly_one_upsert_acking_the_implied_deletes():
    changes = [change("a", ChangeKind.REFRESH), change("b", ChangeKind.UPDATE), change("c")]
    removals = [gone("x"), gone("y")]

    planned = plan(
        changes, removals, full=True, mirror_block=True, full_reason="weekly drift repair"
    )

    (operation,) = planned.operations
    assert operation.endpoint == UPSERT
    assert operation.path == UPSERT_PATH
    assert operation.removes_unlisted
    assert operation.keys == ("a", "b", "c", "x", "y")
    assert operation.changes[-2:] == tuple(removals)
    assert "weekly drift repair" in operation.reason
    assert planned.held == ()
    assert "upsert" in planned.notes[0]
    assert "2 others removed" in planned.notes[0]


def test_a_full_refresh_of_a_mirrored_block_held_by_the_guards_never_upserts():
    changes = [change("a", ChangeKind.REFRESH), change("b")]
    removals = [gone("x")]

    planned = plan(changes, removals, full=True, mirror_block=True, deletes_allowed=False)

    assert UPSERT not in {op.endpoint for op in planned.operations}
    assert [op.endpoint for op in planned.operations] == [CREATE]
    assert not any(op.removes_unlisted for op in planned.operations)
    assert planned.held == tuple(removals)
    assert any("no upsert" in note and "guards" in note for note in planned.notes)


def test_a_refused_upsert_of_a_mirrored_block_sends_creates_and_the_deletes_and_says_why():
    changes = [change("a", ChangeKind.REFRESH), change("b")]
    removals = [gone("x")]

    planned = plan(
        changes,
        removals,
        full=True,
        mirror_block=True,
        batch_size=1,
        upsert_refused="60000 products are over the 50000 one upsert may carry",
    )

    assert [op.endpoint for op in planned.operations] == [CREATE, CREATE, DELETE]
    assert not any(op.removes_unlisted for op in planned.operations)
    assert planned.held == ()
    assert planned.notes == (
        "no upsert although mirror_block is on: 60000 products are over the 50000 one "
        "upsert may carry; using create",
    )


def test_an_empty_catalog_never_becomes_an_upsert_that_would_wipe_the_block():
    planned = plan([], [gone("x")], full=True, mirror_block=True, deletes_allowed=True)

    assert UPSERT not in {op.endpoint for op in planned.operations}
    assert [op.endpoint for op in planned.operations] == [DELETE]


def test_a_full_refresh_without_mirror_block_re_sends_with_create():
    changes = [change(f"k{i}", ChangeKind.REFRESH) for i in range(3)]

    planned = plan(changes, [gone("x")], full=True, batch_size=2, full_reason="--full")

    assert [op.endpoint for op in planned.operations] == [CREATE, CREATE, DELETE]
    assert all(op.reason.startswith("--full") for op in planned.operations[:2])
    assert any("mirror_block is off" in note for note in planned.notes)


# -- validate_product -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(product(name=""), "name", id="name-empty"),
        pytest.param(product(name=3), "name", id="name-not-string"),
        pytest.param(product(description=""), "description", id="description-empty"),
        pytest.param(product(description="x" * 8193), "description", id="description-8193"),
        pytest.param(product(description=None), "description", id="description-null"),
        pytest.param(product(price=0), "price", id="price-zero"),
        pytest.param(product(price=-1.5), "price", id="price-negative"),
        pytest.param(product(price=math.nan), "price", id="price-nan"),
        pytest.param(product(price=math.inf), "price", id="price-inf"),
        pytest.param(product(price=True), "price", id="price-bool"),
        pytest.param(product(price="9.90"), "price", id="price-string"),
        pytest.param(product(currency="GBP"), "currency", id="currency-unknown"),
        pytest.param(product(currency="usd"), "currency", id="currency-lowercase"),
        pytest.param(product(metadata={"color": "red"}), "metadata", id="metadata-object"),
        pytest.param(product(metadata=[{"key": "a"}]), "metadata[0]", id="metadata-no-value"),
        pytest.param(product(metadata=[{"key": "a", "value": 1}]), "metadata[0]", id="meta-int"),
        pytest.param(
            product(metadata=[{"key": "a", "value": "b", "x": "y"}]), "metadata[0]", id="meta-extra"
        ),
        pytest.param(product(metadata=["a=b"]), "metadata[0]", id="metadata-string-item"),
        pytest.param(product(colour="red"), "colour", id="unknown-field"),
        pytest.param(product(external_id=""), "external_id", id="external-id-empty"),
        pytest.param(product(type=""), "type", id="type-empty"),
        pytest.param(product(file_url=None), "file_url", id="file-url-null"),
        pytest.param(product(sku=12), "sku", id="sku-not-string"),
        *(
            pytest.param(without(name), name, id=f"missing-{name}")
            for name in (
                "name",
                "description",
                "price",
                "currency",
                "type",
                "external_id",
                "metadata",
            )
        ),
    ],
)
def test_validate_product_rejects_every_contract_rule(body, field):
    with pytest.raises(RecordError) as caught:
        validate_product("e1", body)

    assert caught.value.field == field
    assert caught.value.key == "e1"
    assert caught.value.reason


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(product(), id="minimal"),
        pytest.param(product(description="x" * 8192, price=1), id="longest-description"),
        pytest.param(product(price=0.01, currency="CLP", metadata=[]), id="tiny-price"),
        pytest.param(product(file_url="https://img/1.png", sku="SKU-1"), id="optional-fields"),
    ],
)
def test_validate_product_accepts_a_valid_product_that_the_fake_also_accepts(body):
    validate_product("e1", body)

    assert batch_problem([body], frozenset(DEFAULT_TYPES), 2000) is None


def test_validate_product_lists_every_broken_rule_in_one_rejection():
    body = without("currency") | {"price": 0, "description": "x" * 8193, "colour": "red"}

    with pytest.raises(RecordError) as caught:
        validate_product("e1", body)

    assert caught.value.key == "e1"
    assert caught.value.problems == (
        ("currency", "missing (required by Vambe)"),
        ("colour", "not a field of Vambe's product object"),
        ("description", "is 8193 characters, over 8192"),
        ("price", "must be greater than 0 (got 0)"),
    )
    assert str(caught.value) == (
        "currency: missing (required by Vambe); colour: not a field of Vambe's product object;"
        " description: is 8193 characters, over 8192; price: must be greater than 0 (got 0)"
    )


@pytest.mark.parametrize("currency", [["USD"], {"code": "USD"}, 1])
def test_validate_product_rejects_a_currency_that_is_not_a_string(currency):
    with pytest.raises(RecordError) as caught:
        validate_product("e1", product(currency=currency))

    assert caught.value.field == "currency"


# -- encode_body ------------------------------------------------------------------------


def test_a_create_body_is_the_array_of_canonical_products():
    changes = (change("a"), change("b", ChangeKind.UPDATE))
    operation = Operation(CREATE, "create", "r", changes, path=CREATE_PATH)

    body = encode_body(operation)

    assert json.loads(body) == [product("a"), product("b")]
    assert (
        body == b"[" + changes[0].document.canonical + b"," + changes[1].document.canonical + b"]"
    )
    assert batch_problem(json.loads(body), frozenset(DEFAULT_TYPES), 2000) is None


def test_a_delete_body_lists_external_ids_only():
    operation = Operation(DELETE, "delete", "r", (gone("a"), gone("b/c")), path=DELETE_PATH)

    body = json.loads(encode_body(operation))

    assert body == [{"external_id": "a"}, {"external_id": "b/c"}]
    assert delete_problem(body) is None


def test_an_upsert_body_leaves_out_the_implied_deletes():
    changes = (change("a", ChangeKind.REFRESH), change("b"), gone("x"))
    operation = Operation(UPSERT, "upsert", "r", changes, path=UPSERT_PATH, removes_unlisted=True)

    assert [p["external_id"] for p in json.loads(encode_body(operation))] == ["a", "b"]


def test_block_ids_are_url_quoted_in_paths():
    planned = plan([change("a")], [gone("x")], block_id="a/b c")

    assert [op.path for op in planned.operations] == [
        "/api/public/product/create/a%2Fb%20c",
        "/api/public/product/delete/a%2Fb%20c",
    ]


# -- split ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "halves"), [(2, (1, 1)), (5, (2, 3)), (2000, (1000, 1000))])
def test_split_halves_a_refused_batch_keeping_endpoint_path_and_order(size, halves):
    vambe = target()
    changes = tuple(change(f"k{i}") for i in range(size))
    operation = Operation(
        CREATE, "create", "created or changed products", changes, path=CREATE_PATH
    )

    parts = vambe.split(operation)

    assert parts is not None
    assert tuple(len(p.changes) for p in parts) == halves
    assert parts[0].changes + parts[1].changes == changes
    assert {(p.endpoint, p.mode, p.path) for p in parts} == {(CREATE, "create", CREATE_PATH)}
    assert all(p.reason.endswith("[split to isolate a refused product]") for p in parts)
    if size > 2:
        again = vambe.split(parts[1])
        assert again is not None
        assert again[0].reason.count("[split") == 1, "reasons do not grow with every split"
    vambe.close()


def test_split_of_a_single_product_is_none_so_it_gets_rejected():
    vambe = target()
    operation = Operation(CREATE, "create", "r", (change("a"),), path=CREATE_PATH)

    assert vambe.split(operation) is None
    vambe.close()


def test_a_refused_upsert_falls_back_to_create_batches_of_batch_size():
    vambe = target(batch_size=2, mirror_block=True)
    changes = [change(f"k{i}", ChangeKind.REFRESH) for i in range(5)]
    planned = vambe.plan(changes, [gone("x")], full=True, deletes_allowed=True)
    (upsert,) = planned.operations

    parts = vambe.split(upsert)

    assert parts is not None
    sends = [p for p in parts if p.endpoint == CREATE]
    assert [len(p.changes) for p in sends] == [2, 2, 1]
    assert {p.path for p in sends} == {CREATE_PATH}
    assert not any(p.endpoint == UPSERT or p.removes_unlisted for p in parts)
    assert [c.key for p in sends for c in p.changes] == [f"k{i}" for i in range(5)]
    vambe.close()


def test_a_refused_upsert_still_sends_the_deletes_it_implied():
    vambe = target(mirror_block=True)
    planned = vambe.plan([change("a")], [gone("x")], full=True, deletes_allowed=True)

    parts = vambe.split(planned.operations[0]) or ()

    assert [c.key for p in parts if p.endpoint == DELETE for c in p.changes] == ["x"]
    assert {p.path for p in parts if p.endpoint == DELETE} == {DELETE_PATH}
    assert not any(p.endpoint == UPSERT for p in parts)
    vambe.close()
