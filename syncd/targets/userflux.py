"""UserFlux's Products API: one ``POST /product`` or ``DELETE`` per product.

The update type of every request is chosen deliberately (see ``plan_update``):
FULL_UPDATE when we can't know or must remove something, INCREMENTAL_UPDATE with
only the changed top-level properties otherwise.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from syncd.config import HttpConfig, UserfluxTargetConfig
from syncd.diff import Change, Operation
from syncd.errors import TargetRejectedError, TargetRetriableError, record_error
from syncd.httpclient import ThreadClients, make_client
from syncd.model import UNACKNOWLEDGED, Payload
from syncd.targets.base import (
    PlannedRequests,
    TargetInfo,
    fatal,
    raise_for_retriable,
    refused_for,
    response_reason,
    send_request,
)

FULL = "FULL_UPDATE"
INCREMENTAL = "INCREMENTAL_UPDATE"
UPSERT = "product.upsert"
DELETE = "product.delete"


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


_UNSAFE_IN_SEGMENT = "/\\?#%"


def unsafe_segment(value: str) -> str | None:
    """Why ``value`` can't be one URL path segment of ``DELETE /product/{typeId}/{id}``
    safely, or ``None``. Percent-encoding alone is not enough: clients resolve ``.`` and
    ``..`` segments, and servers may decode ``%2F`` or ``%2E`` before routing."""
    if not value:
        return "is empty"
    if value in (".", ".."):
        return f"is {value!r}, which a URL path resolves as a relative step"
    if value != value.strip():
        return "has leading or trailing whitespace"
    for char in value:
        if char in _UNSAFE_IN_SEGMENT:
            return f"contains {char!r}, which a URL path segment can't carry safely"
        if unicodedata.category(char) == "Cc":
            return f"contains the control character U+{ord(char):04X}"
    return None


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
    path = "/product"

    def full(reason: str) -> Operation:
        return Operation(UPSERT, FULL, reason, (change,), None, path)

    if full_reason is not None:
        return full(full_reason)
    if change.previous is None:
        return full("not in state: the target's copy is unknown, so send every property")
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
    return Operation(UPSERT, INCREMENTAL, f"{reason}; nothing removed", (change,), body, path)


def request_body(operation: Operation) -> dict[str, Any]:
    """The JSON body of an upsert: the planned one, or for FULL_UPDATE every property of
    the document (and its AI overrides), built now from its canonical bytes."""
    if operation.body is not None:
        return operation.body  # type: ignore[no-any-return]
    change = operation.changes[0]
    assert change.document is not None
    previous = change.previous.payload if change.previous is not None else None
    return _full_body(change.document.payload, previous)


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
    operations = [
        plan_update(change, full_reason=full_reason if full else None) for change in changes
    ]
    held: tuple[Change, ...] = ()
    if deletes_allowed:
        operations.extend(plan_delete(change) for change in deletes)
    else:
        held = tuple(deletes)
    return PlannedRequests(tuple(operations), held)


class UserfluxTarget:
    """Sends products to UserFlux (``Authorization: Bearer``)."""

    kind = "userflux"

    def __init__(
        self,
        config: UserfluxTargetConfig,
        http: HttpConfig,
        *,
        api_key: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = config.name
        self._config = config
        self._clients = ThreadClients(
            lambda: make_client(
                http,
                base_url=config.base_url,
                headers={"Authorization": f"Bearer {api_key}"},
                timeout_s=config.timeout_s,
                max_connections=1,
                transport=transport,
            )
        )

    def inspect(self, *, probe: bool = False) -> TargetInfo:
        """UserFlux has no read endpoint: nothing to read before sending.

        With ``probe``, one request that writes nothing (``GET /product``, answered 405
        once past authentication) tells whether the API can be reached and takes the key:
        401 and 403 are fatal as for a write, and so are a connection that fails and a
        5xx (for a plan, the target's state is then unknown). Any other answer passes.
        """
        if not probe:
            return TargetInfo()
        what = "GET /product (a probe that writes nothing)"
        try:
            response = send_request(self._clients.get(), "GET", "/product", body=None, what=what)
        except TargetRetriableError as exc:
            raise fatal(f"UserFlux can't be reached at {self._config.base_url}: {exc}") from exc
        if response.status_code in (401, 403):
            self._check(response, what)
        if response.status_code >= 500:
            raise fatal(f"{what}: UserFlux answered {response_reason(response)}")
        return TargetInfo()

    def validate(self, key: str, payload: Payload) -> None:
        """The contract's required keys and types (``UpsertProductRequest``); one
        ``RecordError`` lists every field that breaks them."""
        problems: list[tuple[str, str]] = []
        for name in ("id", "typeId"):
            value = payload.get(name)
            if not isinstance(value, str) or not value:
                problems.append((name, f"{name} must be a non-empty string"))
                continue
            problem = unsafe_segment(value)
            if problem is not None:
                problems.append(
                    (
                        name,
                        f"{name} {value!r} {problem}: it is a segment of the URL that deletes "
                        f"product {key!r}, so it would address another resource",
                    )
                )
        if not isinstance(payload.get("properties"), dict):
            problems.append(("properties", "properties must be an object"))
        if "aiPropertyOverrides" in payload and not isinstance(
            payload["aiPropertyOverrides"], dict
        ):
            problems.append(("aiPropertyOverrides", "aiPropertyOverrides must be an object"))
        if problems:
            raise record_error(problems, key=key)

    def plan(
        self,
        changes: Sequence[Change],
        deletes: Sequence[Change],
        *,
        full: bool,
        deletes_allowed: bool,
        full_reason: str = "full refresh",
        keep: Collection[str] = (),
    ) -> PlannedRequests:
        return plan_userflux(
            changes, deletes, full=full, full_reason=full_reason, deletes_allowed=deletes_allowed
        )

    def send(self, operation: Operation) -> None:
        key = operation.changes[0].key
        if operation.endpoint == UPSERT:
            document = request_body(operation)
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
            what = f"POST /product (id {key!r})"
            response = send_request(
                self._clients.get(), "POST", operation.path, body=body, what=what
            )
            self._check(response, what)
            previous = operation.changes[0].previous
            if operation.mode == FULL and previous is not None:  # incremental keeps the type
                old_type = previous.payload.get("typeId")
                if old_type is not None and old_type != document["typeId"]:
                    self._delete_old_type(key, str(old_type))
        elif operation.endpoint == DELETE:
            what = f"DELETE {operation.path}"
            previous = operation.changes[0].previous
            stored = previous.payload if previous is not None else {}
            self._refuse_unsafe(
                key, str(stored.get("typeId", "")), str(stored.get("id", key)), what
            )
            response = send_request(
                self._clients.get(), "DELETE", operation.path, body=None, what=what
            )
            if response.status_code == 404:
                return  # already gone: that is what we wanted
            self._check(response, what)
        else:
            raise ValueError(f"unknown UserFlux operation {operation.endpoint!r}")

    @staticmethod
    def _refuse_unsafe(key: str, type_id: str, product_id: str, what: str) -> None:
        """Refuse, without sending, a URL built from ids that aren't safe path segments
        (acknowledged before syncd checked them): the request would hit another resource."""
        for name, value in (("typeId", type_id), ("id", product_id)):
            problem = unsafe_segment(value)
            if problem is not None:
                raise TargetRejectedError(
                    f"{what} not sent for product {key!r}: {name} {value!r} {problem}; "
                    "remove the product in UserFlux's UI if it must go"
                )

    def _delete_old_type(self, key: str, old_type: str) -> None:
        path = product_path(old_type, key)
        what = f"DELETE {path} (typeId changed)"
        self._refuse_unsafe(key, old_type, key, what)
        response = send_request(self._clients.get(), "DELETE", path, body=None, what=what)
        if response.status_code != 404:
            self._check(response, what)

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        raise_for_retriable(response, what)
        env = self._config.api_key_env
        if status == 401:
            raise fatal(
                f"UserFlux refused the API key ({response_reason(response)}): check "
                f"${env} holds the Product Read + Write key of the right workspace",
                status,
            )
        if status == 403:
            raise fatal(
                f"UserFlux forbade the request ({response_reason(response)}): either ${env} "
                "is the wrong key family (it must be Product Read + Write, not Write Only) "
                "or this host's IP is not in the key's IP allow-list",
                status,
            )
        raise refused_for(response, what, self._config.base_url)

    def split(self, operation: Operation) -> tuple[Operation, ...] | None:
        return None  # one product per request already

    def close(self) -> None:
        self._clients.close()
