"""UserFlux's planner: one ``POST /product`` or ``DELETE`` per product, pure (no I/O).

The update type of every request is chosen deliberately (see ``plan_update``):
FULL_UPDATE when we can't know or must remove something, INCREMENTAL_UPDATE with
only the changed top-level properties otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import quote

from syncd.diff import Change, Operation
from syncd.model import UNACKNOWLEDGED, Payload, quick_new, refresh_age, refresh_reason
from syncd.targets.base import PlannedRequests

FULL = "FULL_UPDATE"
INCREMENTAL = "INCREMENTAL_UPDATE"
UPSERT = "product.upsert"
UPSERT_PATH = "/product"
"""Where an upsert is posted."""
DELETE = "product.delete"
_NEW_OPERATION = quick_new(Operation)
"""``Operation(...)`` for the request of each change."""


def leaf_paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of the leaves of a JSON value, as tuples of keys (an empty object is a leaf).

    Tuples, not dotted strings: a literal key ``"a.b"`` and ``{"a": {"b": ...}}`` differ.
    """
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaf_paths(item, (*prefix, str(key)))
    elif prefix:
        yield prefix


def _first_removed(before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    removed = set(leaf_paths(before)) - set(leaf_paths(after))
    return ".".join(min(removed)) if removed else None


def _changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    return sorted(key for key, value in after.items() if before.get(key, _ABSENT) != value)


_ABSENT = object()


def product_path(type_id: str, product_id: str) -> str:
    """``/product/{typeId}/{id}``, each segment percent-encoded whole."""
    return f"/product/{quote(type_id, safe='')}/{quote(product_id, safe='')}"


def _describe(keys: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def _full_body(payload: Payload, previous: Payload | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": payload["id"],
        "typeId": payload["typeId"],
        "properties": payload.get("properties") or {},
        "propertiesUpdateType": FULL,
    }
    overrides = payload.get("aiPropertyOverrides") or {}
    # whether FULL_UPDATE clears overrides that are not sent is unknown: when some were
    # sent before, send the (possibly empty) set explicitly, right under either reading
    if overrides or (previous is not None and previous.get("aiPropertyOverrides")):
        body["aiPropertyOverrides"] = overrides
    return body


def plan_update(change: Change, *, full_reason: str | None = None) -> Operation:
    """The request for a create, update or refresh, following DESIGN.md's table.

    ``full_reason`` forces FULL_UPDATE (a full refresh) and says why. A FULL_UPDATE's
    body is left to ``request_body`` (built when sent), so a first sync's plan holds
    no second copy of every payload; an INCREMENTAL_UPDATE's, which needs the previous
    payload to compute, is built here.
    """
    document = change.document
    assert document is not None
    if full_reason is not None:
        return _full_update(change, full_reason)
    if change.previous is None:  # a first sync's every change: no ``partial`` built
        reason = "not in state: the target's copy is unknown, so send every property"
        return _full_update(change, reason)
    full = partial(_full_update, change)
    age = refresh_age(change.previous.hash)
    if age is not None:  # acknowledged, but long ago: re-asserted whole (a changed one too)
        return full(refresh_reason(age))
    if change.previous.hash == UNACKNOWLEDGED:
        return full("the last write was not acknowledged: the target's copy is uncertain")
    payload = document.payload
    previous = change.previous.payload
    if previous.get("typeId") != payload["typeId"]:
        return full(
            f"typeId changed from {previous.get('typeId')!r}: re-created under the new type"
        )
    before_props = previous.get("properties") or {}
    after_props = payload.get("properties") or {}
    removed = _first_removed(before_props, after_props)
    if removed is not None:
        return full(f"property {removed!r} was removed: incremental would leave it behind")
    before_ai = previous.get("aiPropertyOverrides") or {}
    after_ai = payload.get("aiPropertyOverrides") or {}
    removed_ai = sorted(set(before_ai) - set(after_ai))
    if removed_ai:
        return full(f"AI override {removed_ai[0]!r} was removed")
    changed = _changed_keys(before_props, after_props)
    changed_ai = _changed_keys(before_ai, after_ai)
    body: dict[str, Any] = {
        "id": payload["id"],
        "typeId": payload["typeId"],
        "properties": {key: after_props[key] for key in changed},
        "propertiesUpdateType": INCREMENTAL,
    }
    if changed_ai:
        body["aiPropertyOverrides"] = {key: after_ai[key] for key in changed_ai}
    parts = []
    if changed:
        parts.append(f"changed {_describe(changed)}")
    if changed_ai:
        parts.append(f"AI overrides {_describe(changed_ai)}")
    reason = " and ".join(parts) or "payload changed"
    return Operation(
        UPSERT, INCREMENTAL, f"{reason}; nothing removed", (change,), body, UPSERT_PATH
    )


def _full_update(change: Change, reason: str) -> Operation:
    """A FULL_UPDATE of ``change``, its body left to ``request_body``."""
    return _NEW_OPERATION(Operation, UPSERT, FULL, reason, (change,), None, UPSERT_PATH)


def request_body(operation: Operation) -> dict[str, Any]:
    """The JSON body of an upsert: the planned one, or for FULL_UPDATE every property of
    the document (and its AI overrides), built now from its canonical bytes."""
    if operation.body is not None:
        return operation.body  # type: ignore[no-any-return]
    change = operation.changes[0]
    assert change.document is not None
    previous = change.previous.payload if change.previous is not None else None
    return _full_body(change.document.payload, previous)


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""Built once: ``json.dumps`` with options builds an encoder on every call."""
_FULL_PREFIX = b'{"propertiesUpdateType":"' + FULL.encode() + b'",'


def encode_body(operation: Operation, *, mapped: bool = False) -> bytes:
    """``request_body`` as the bytes sent.

    ``mapped``: the target's mapping has no ``callable`` hook, so a document's payload
    holds exactly ``id``, ``typeId``, ``properties`` and, when not empty,
    ``aiPropertyOverrides`` (what the mapper builds). Then a create's FULL_UPDATE body
    (no previous payload, so no overrides to clear) is the document's canonical bytes
    with ``propertiesUpdateType`` added in front: the same members, values and length
    as ``request_body``'s, in canonical order, without decoding and re-encoding the
    payload on every request.
    """
    if mapped and operation.body is None:
        change = operation.changes[0]
        if change.previous is None and change.document is not None:
            return _FULL_PREFIX + change.document.canonical[1:]
    return _ENCODE(request_body(operation)).encode()


def plan_delete(change: Change) -> Operation:
    """``DELETE /product/{typeId}/{id}`` for a product gone from the source."""
    assert change.previous is not None
    payload = change.previous.payload
    type_id = str(payload.get("typeId", ""))
    product_id = str(payload.get("id", change.key))
    path = product_path(type_id, product_id)  # send() refuses unsafe segments unsent
    return Operation(DELETE, "DELETE", "gone from a complete source read", (change,), None, path)


def plan_userflux(
    changes: Sequence[Change],
    deletes: Sequence[Change],
    *,
    full: bool,
    full_reason: str = "full refresh",
    deletes_allowed: bool,
) -> PlannedRequests:
    """One operation per change; deletes only when the guards allow them."""
    new = _NEW_OPERATION
    operations = (
        # a full refresh (every first sync): each change's FULL_UPDATE built here, not
        # through ``plan_update`` and ``_full_update`` (two calls a change)
        [
            new(Operation, UPSERT, FULL, full_reason, (change,), None, UPSERT_PATH)
            for change in changes
        ]
        if full
        else [plan_update(change) for change in changes]
    )
    held: tuple[Change, ...] = ()
    if deletes_allowed:
        operations.extend(plan_delete(change) for change in deletes)
    else:
        held = tuple(deletes)
    return PlannedRequests(tuple(operations), held)
