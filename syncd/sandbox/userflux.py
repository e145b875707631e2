"""A faithful fake of the UserFlux Integration API's product endpoints.

Owns strict validation of ``UpsertProductRequest``, FULL vs INCREMENTAL update
semantics (shallow or deep merge, since the real one is unknown) and an in-memory
catalog keyed by ``(type_id, id)`` that tests can inspect.
"""

from __future__ import annotations

import copy
import hmac
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from syncd.sandbox.server import (
    LOOPBACK,
    FakeServer,
    Request,
    Response,
    error_response,
)

FULL_UPDATE = "FULL_UPDATE"
INCREMENTAL_UPDATE = "INCREMENTAL_UPDATE"
UPDATE_TYPES = (FULL_UPDATE, INCREMENTAL_UPDATE)
ALLOWED_KEYS = ("id", "typeId", "properties", "propertiesUpdateType", "aiPropertyOverrides")

MergeMode = Literal["shallow", "deep"]


@dataclass(slots=True)
class _StoredProduct:
    properties: dict[str, object] = field(default_factory=dict)
    ai_property_overrides: dict[str, object] = field(default_factory=dict)
    last_update_type: str = INCREMENTAL_UPDATE


def merge_properties(
    stored: dict[str, object], sent: dict[str, object], mode: MergeMode
) -> dict[str, object]:
    """INCREMENTAL_UPDATE: sent keys win; ``deep`` merges nested objects recursively."""
    merged = dict(stored)
    for key, value in sent.items():
        current = merged.get(key)
        if mode == "deep" and isinstance(value, dict) and isinstance(current, dict):
            merged[key] = merge_properties(current, value, mode)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_upsert(body: object, known_type_ids: frozenset[str] | None) -> list[str]:
    """Every rule an ``UpsertProductRequest`` body breaks, as human reasons."""
    if not isinstance(body, dict):
        return ["body must be a JSON object (UpsertProductRequest)"]
    problems: list[str] = []
    unknown = sorted(key for key in body if key not in ALLOWED_KEYS)
    if unknown:
        problems.append(
            f"unknown field(s) {', '.join(unknown)}: allowed are {', '.join(ALLOWED_KEYS)}"
        )
    for name in ("id", "typeId"):
        if name not in body:
            problems.append(f"{name} is required")
        elif not isinstance(body[name], str) or not body[name]:
            problems.append(f"{name} must be a non-empty string")
    type_id = body.get("typeId")
    if (
        known_type_ids is not None
        and isinstance(type_id, str)
        and type_id
        and type_id not in known_type_ids
    ):
        problems.append(f"typeId {type_id!r} is not a known product type")
    if "properties" not in body:
        problems.append("properties is required (send {} for none)")
    elif not isinstance(body["properties"], dict):
        problems.append("properties must be a JSON object")
    if "propertiesUpdateType" in body and body["propertiesUpdateType"] not in UPDATE_TYPES:
        problems.append("propertiesUpdateType must be FULL_UPDATE or INCREMENTAL_UPDATE")
    if "aiPropertyOverrides" in body and not isinstance(body["aiPropertyOverrides"], dict):
        problems.append("aiPropertyOverrides must be a JSON object")
    return problems


class FakeUserflux(FakeServer):
    """UserFlux ``POST /product`` and ``DELETE /product/{typeId}/{productId}``.

    Auth is ``Authorization: Bearer <api_key>``. ``merge`` picks how
    INCREMENTAL_UPDATE merges nested objects; ``known_type_ids`` (None: any)
    makes an unknown ``typeId`` a 400.
    """

    kind = "userflux"

    def __init__(
        self,
        api_key: str,
        *,
        merge: MergeMode = "shallow",
        known_type_ids: set[str] | frozenset[str] | list[str] | tuple[str, ...] | None = None,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        if merge not in ("shallow", "deep"):
            raise ValueError(f"merge must be 'shallow' or 'deep', not {merge!r}")
        super().__init__(api_key, host=host, port=port)
        self.merge: MergeMode = merge
        self.known_type_ids = None if known_type_ids is None else frozenset(known_type_ids)
        self._products: dict[tuple[str, str], _StoredProduct] = {}

    # -- inspection --------------------------------------------------------------

    @property
    def products(self) -> dict[tuple[str, str], dict[str, dict[str, object]]]:
        """``(type_id, id) -> {"properties": ..., "aiPropertyOverrides": ...}``, copied."""
        with self._lock:
            return {
                key: {
                    "properties": copy.deepcopy(stored.properties),
                    "aiPropertyOverrides": copy.deepcopy(stored.ai_property_overrides),
                }
                for key, stored in self._products.items()
            }

    def last_update_type(self, type_id: str, product_id: str) -> str | None:
        """The update type the product's last write used (absent counts as incremental)."""
        with self._lock:
            stored = self._products.get((type_id, product_id))
            return None if stored is None else stored.last_update_type

    # -- HTTP --------------------------------------------------------------------

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    def _dispatch(self, request: Request) -> Response:
        if request.path == "/product":
            if request.method != "POST":
                return error_response(405, f"{request.method} is not allowed on /product")
            return self._upsert(request)
        if request.path.startswith("/product/"):
            segments = request.path[len("/product/") :].split("/")
            if len(segments) != 2 or not all(segments):
                return error_response(404, "expected /product/{typeId}/{productId}")
            if request.method != "DELETE":
                return error_response(405, f"{request.method} is not allowed on {request.path}")
            type_id, product_id = (unquote(segment) for segment in segments)
            return self._delete(type_id, product_id)
        return error_response(404, f"no route for {request.path}")

    def _upsert(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return error_response(400, "Content-Type must be application/json")
        if request.json_error is not None:
            return error_response(400, request.json_error)
        problems = validate_upsert(request.json, self.known_type_ids)
        if problems:
            return error_response(400, "; ".join(problems))
        body = request.json
        assert isinstance(body, dict)
        key = (str(body["typeId"]), str(body["id"]))
        properties: dict[str, object] = body["properties"]
        overrides: dict[str, object] = body.get("aiPropertyOverrides") or {}
        update_type = str(body.get("propertiesUpdateType", INCREMENTAL_UPDATE))
        stored = self._products.get(key)
        if stored is None or update_type == FULL_UPDATE:
            stored = _StoredProduct(copy.deepcopy(properties), copy.deepcopy(overrides))
        else:
            stored.properties = merge_properties(stored.properties, properties, self.merge)
            stored.ai_property_overrides = merge_properties(
                stored.ai_property_overrides, overrides, "shallow"
            )
        stored.last_update_type = update_type
        self._products[key] = stored
        return Response(204)

    def _delete(self, type_id: str, product_id: str) -> Response:
        if self._products.pop((type_id, product_id), None) is None:
            return error_response(404, f"product {product_id!r} of type {type_id!r} not found")
        return Response(204)
