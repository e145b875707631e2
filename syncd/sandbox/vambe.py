"""A faithful fake of Vambe's public product-block API.

Owns the product blocks (created by tests with ``add_block``), strict per-field
validation of product batches (one invalid item rejects the whole batch), and the
create (additive upsert), upsert (the block becomes exactly the batch) and delete
endpoints.
"""

from __future__ import annotations

import copy
import hmac
import math
import uuid
from collections.abc import Iterable
from urllib.parse import unquote

from syncd.sandbox.server import (
    LOOPBACK,
    FakeServer,
    Request,
    Response,
    error_response,
    json_response,
)

CURRENCIES = frozenset({"CLP", "ARS", "COP", "MXN", "EUR", "USD", "UF", "PEN", "BRL", "HNL"})
DEFAULT_TYPES = ("shopify", "vambe", "woocommerce", "axis", "vtex")
REQUIRED_FIELDS = ("name", "description", "price", "currency", "type", "external_id", "metadata")
OPTIONAL_FIELDS = ("file_url", "sku")
MAX_DESCRIPTION = 8192
API_PREFIX = "/api/public/product/"

Product = dict[str, object]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _price_problem(price: object) -> str | None:
    if not _is_number(price):
        return "price must be a number"
    assert isinstance(price, int | float)
    if isinstance(price, float) and not math.isfinite(price):
        return "price must be a finite number"
    if price <= 0:
        return "price must be greater than 0"
    return None


def _metadata_problems(metadata: object) -> list[str]:
    if not isinstance(metadata, list):
        return ["metadata must be an array of {key, value} objects"]
    problems: list[str] = []
    for position, entry in enumerate(metadata):
        where = f"metadata[{position}]"
        if not isinstance(entry, dict) or set(entry) != {"key", "value"}:
            problems.append(f'{where} must be exactly {{"key": string, "value": string}}')
        elif not isinstance(entry["key"], str) or not isinstance(entry["value"], str):
            problems.append(f"{where} key and value must both be strings")
    return problems


def product_problems(product: object, allowed_types: frozenset[str]) -> list[str]:
    """Every field rule one product breaks, as human reasons."""
    if not isinstance(product, dict):
        return ["product must be a JSON object"]
    problems: list[str] = []
    unknown = sorted(key for key in product if key not in REQUIRED_FIELDS + OPTIONAL_FIELDS)
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}")
    for name in REQUIRED_FIELDS:
        if name not in product:
            problems.append(f"{name} is required")
    name_value = product.get("name")
    if "name" in product and (not isinstance(name_value, str) or not name_value):
        problems.append("name must be a string of at least 1 character")
    description = product.get("description")
    if "description" in product and (
        not isinstance(description, str) or not 1 <= len(description) <= MAX_DESCRIPTION
    ):
        problems.append(f"description must be a string of 1 to {MAX_DESCRIPTION} characters")
    if "price" in product:
        price_problem = _price_problem(product["price"])
        if price_problem is not None:
            problems.append(price_problem)
    if "currency" in product and product["currency"] not in CURRENCIES:
        problems.append(f"currency must be one of {', '.join(sorted(CURRENCIES))}")
    if "type" in product and product["type"] not in allowed_types:
        problems.append(f"type must be one of {', '.join(sorted(allowed_types))}")
    external_id = product.get("external_id")
    if "external_id" in product and (not isinstance(external_id, str) or not external_id):
        problems.append("external_id must be a non-empty string")
    if "metadata" in product:
        problems.extend(_metadata_problems(product["metadata"]))
    for name in OPTIONAL_FIELDS:
        if name in product and not isinstance(product[name], str):
            problems.append(f"{name} must be a string when present (omit it rather than null)")
    return problems


def batch_problem(body: object, allowed_types: frozenset[str], max_batch: int | None) -> str | None:
    """Why a product batch is rejected whole, naming the first offending product."""
    if not isinstance(body, list):
        return "body must be a JSON array of products"
    if not body:
        return "body must hold at least 1 product"
    if max_batch is not None and len(body) > max_batch:
        return f"batch of {len(body)} products exceeds the maximum of {max_batch}"
    invalid: list[str] = []
    seen: dict[str, int] = {}
    for index, product in enumerate(body):
        problems = product_problems(product, allowed_types)
        external_id = product.get("external_id") if isinstance(product, dict) else None
        if isinstance(external_id, str) and external_id:
            if external_id in seen:
                problems.append(
                    f"duplicate external_id in batch (first at index {seen[external_id]})"
                )
            else:
                seen[external_id] = index
        if problems:
            invalid.append(f"product {index} (external_id {external_id!r}): {'; '.join(problems)}")
    if not invalid:
        return None
    more = f" (and {len(invalid) - 1} more invalid products)" if len(invalid) > 1 else ""
    return f"invalid product data: {invalid[0]}{more}"


def delete_problem(body: object) -> str | None:
    """Why a delete body is rejected, or None."""
    if not isinstance(body, list) or not body:
        return 'body must be a non-empty JSON array of {"external_id": string}'
    for index, item in enumerate(body):
        if (
            not isinstance(item, dict)
            or set(item) != {"external_id"}
            or not isinstance(item["external_id"], str)
            or not item["external_id"]
        ):
            return f'item {index} must be exactly {{"external_id": non-empty string}}'
    return None


class FakeVambe(FakeServer):
    """Vambe ``product-blocks``, ``create``, ``upsert`` and ``delete`` on product blocks.

    Auth is ``x-api-key: <api_key>``. ``allowed_types`` is what ``type`` must be
    one of; ``max_batch`` caps ``create`` batches (``upsert`` has no cap).
    """

    kind = "vambe"

    def __init__(
        self,
        api_key: str,
        *,
        allowed_types: Iterable[str] = DEFAULT_TYPES,
        max_batch: int = 2000,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        super().__init__(api_key, host=host, port=port)
        self.allowed_types = frozenset(allowed_types)
        self.max_batch = max_batch
        self._names: dict[str, str] = {}
        self._blocks: dict[str, dict[str, Product]] = {}
        self._upsert_calls: dict[str, int] = {}

    # -- setup and inspection ----------------------------------------------------

    def add_block(self, block_id: str | None = None, name: str = "products") -> str:
        """Create an empty product block and return its id (a new UUID when None)."""
        block_id = block_id or str(uuid.uuid4())
        with self._lock:
            if block_id in self._blocks:
                raise ValueError(f"product block {block_id!r} already exists")
            self._names[block_id] = name
            self._blocks[block_id] = {}
            self._upsert_calls[block_id] = 0
        return block_id

    @property
    def blocks(self) -> dict[str, dict[str, Product]]:
        """``block_id -> external_id -> product`` as last written, copied."""
        with self._lock:
            return copy.deepcopy(self._blocks)

    def block_products(self, block_id: str) -> dict[str, Product]:
        """``external_id -> product`` for one block, copied; KeyError if unknown."""
        with self._lock:
            return copy.deepcopy(self._blocks[block_id])

    @property
    def upsert_calls(self) -> dict[str, int]:
        """Per block, how many full-sync ``upsert`` calls were applied."""
        with self._lock:
            return dict(self._upsert_calls)

    # -- HTTP --------------------------------------------------------------------

    def _authorized(self, headers: dict[str, str]) -> bool:
        return hmac.compare_digest(headers.get("x-api-key", "").encode(), self.api_key.encode())

    def _dispatch(self, request: Request) -> Response:
        if request.path == API_PREFIX + "product-blocks":
            if request.method != "GET":
                return error_response(405, f"{request.method} is not allowed here")
            return self._list_blocks()
        if not request.path.startswith(API_PREFIX):
            return error_response(404, f"no route for {request.path}")
        action, _, raw_block_id = request.path[len(API_PREFIX) :].partition("/")
        if action not in ("create", "upsert", "delete") or not raw_block_id:
            return error_response(404, f"no route for {request.path}")
        if "/" in raw_block_id:
            return error_response(404, "product block not found")
        if request.method != "POST":
            return error_response(405, f"{request.method} is not allowed here")
        block_id = unquote(raw_block_id)
        if block_id not in self._blocks:
            return error_response(404, "product block not found")
        if request.json_error is not None:
            return error_response(400, request.json_error)
        if action == "delete":
            return self._delete(block_id, request.json)
        max_batch = self.max_batch if action == "create" else None
        problem = batch_problem(request.json, self.allowed_types, max_batch)
        if problem is not None:
            return error_response(400, problem)
        assert isinstance(request.json, list)
        products: list[Product] = copy.deepcopy(request.json)
        if action == "create":
            return self._create(block_id, products)
        return self._upsert(block_id, products)

    def _list_blocks(self) -> Response:
        return json_response(
            200,
            [
                {"id": block_id, "name": self._names[block_id], "count": len(products)}
                for block_id, products in self._blocks.items()
            ],
        )

    def _create(self, block_id: str, products: list[Product]) -> Response:
        block = self._blocks[block_id]
        created = updated = 0
        for product in products:
            external_id = str(product["external_id"])
            if external_id in block:
                updated += 1
            else:
                created += 1
            block[external_id] = product
        return json_response(201, {"created": created, "updated": updated})

    def _upsert(self, block_id: str, products: list[Product]) -> Response:
        self._blocks[block_id] = {str(product["external_id"]): product for product in products}
        self._upsert_calls[block_id] += 1
        return json_response(201, {"count": len(products)})

    def _delete(self, block_id: str, body: object) -> Response:
        problem = delete_problem(body)
        if problem is not None:
            return error_response(400, problem)
        assert isinstance(body, list)
        block = self._blocks[block_id]
        removed: list[str] = []
        for item in body:
            external_id = item["external_id"]
            if block.pop(external_id, None) is not None:
                removed.append(external_id)
        return json_response(200, {"deleted": len(removed), "external_ids": removed})
