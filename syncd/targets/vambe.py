"""Vambe product blocks: batched ``create`` and ``delete``, and the whole-block ``upsert``.

``create`` upserts by ``external_id`` and leaves other products alone, so it carries
every create and update. ``upsert`` replaces the whole block: it is used only for a
full refresh of a target configured with ``mirror_block`` and only when the guards
pass. A refused batch is split until the bad products are isolated.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from syncd.config import HttpConfig, VambeTargetConfig
from syncd.diff import Change, ChangeKind, Operation, chunked
from syncd.errors import TargetRejectedError, TargetRetriableError, record_error
from syncd.httpclient import ThreadClients, make_client
from syncd.model import Payload
from syncd.targets.base import (
    PlannedRequests,
    TargetInfo,
    fatal,
    raise_for_retriable,
    refused_for,
    response_reason,
    send_request,
)

CURRENCIES = frozenset({"CLP", "ARS", "COP", "MXN", "EUR", "USD", "UF", "PEN", "BRL", "HNL"})
DESCRIPTION_MAX = 8192
CREATE = "block.create"
DELETE = "block.delete"
UPSERT = "block.upsert"
_FIELDS = frozenset(
    {
        "name",
        "description",
        "price",
        "currency",
        "type",
        "external_id",
        "metadata",
        "file_url",
        "sku",
    }
)
_REQUIRED = ("name", "description", "price", "currency", "type", "external_id", "metadata")


def validate_product(key: str, product: Payload) -> None:
    """Every rule of Vambe's product object (TARGETS.md), checked before anything is sent;
    one ``RecordError`` lists every field that breaks one."""
    problems = _product_problems(product)
    if problems:
        raise record_error(problems, key=key)


def _product_problems(product: Payload) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    missing = {name for name in _REQUIRED if name not in product or product[name] is None}
    problems.extend((name, "missing (required by Vambe)") for name in _REQUIRED if name in missing)
    problems.extend(
        (name, "not a field of Vambe's product object") for name in sorted(set(product) - _FIELDS)
    )
    for name in ("name", "external_id", "type"):
        if name not in missing and (not isinstance(product[name], str) or not product[name]):
            problems.append((name, "must be a non-empty string"))
    if "description" not in missing:
        description = product["description"]
        if not isinstance(description, str) or not description:
            problems.append(("description", "must be a non-empty string (1 to 8192 characters)"))
        elif len(description) > DESCRIPTION_MAX:
            problems.append(
                ("description", f"is {len(description)} characters, over {DESCRIPTION_MAX}")
            )
    if "price" not in missing:
        price = product["price"]
        if isinstance(price, bool) or not isinstance(price, int | float):
            problems.append(("price", f"must be a number, not {type(price).__name__}"))
        elif not math.isfinite(price) or price <= 0:
            problems.append(("price", f"must be greater than 0 (got {price})"))
    if "currency" not in missing:
        currency = product["currency"]
        if not isinstance(currency, str) or currency not in CURRENCIES:
            problems.append(
                ("currency", f"{currency!r} is not one of {', '.join(sorted(CURRENCIES))}")
            )
    if "metadata" not in missing:
        metadata = product["metadata"]
        if not isinstance(metadata, list):
            problems.append(("metadata", "must be a list of {key, value} objects"))
        else:
            problems.extend(
                (f"metadata[{index}]", 'must be {"key": string, "value": string}')
                for index, item in enumerate(metadata)
                if not isinstance(item, dict)
                or set(item) != {"key", "value"}
                or not isinstance(item["key"], str)
                or not isinstance(item["value"], str)
            )
    for name in ("file_url", "sku"):
        if name in product and not isinstance(product[name], str):
            problems.append((name, "must be a string"))
    return problems


def plan_vambe(
    changes: Sequence[Change],
    deletes: Sequence[Change],
    *,
    block_id: str,
    batch_size: int,
    full: bool,
    mirror_block: bool,
    deletes_allowed: bool,
    full_reason: str = "full refresh",
    keep: Collection[str] = (),
) -> PlannedRequests:
    """Batches for a run, and notes saying why ``upsert`` was or wasn't used."""
    block = quote(block_id, safe="")
    notes: list[str] = []
    if full and mirror_block and deletes_allowed and changes and not keep:
        implied = len(deletes)
        notes.append(
            f"upsert: full refresh with mirror_block on and the guards passed; one request "
            f"replaces the block with {len(changes)} products ({implied} others removed)"
        )
        operation = Operation(
            UPSERT,
            "upsert",
            f"{full_reason}; mirrored block: it then holds exactly the catalog",
            tuple(changes) + tuple(deletes),
            path=f"/api/public/product/upsert/{block}",
            removes_unlisted=True,
        )
        return PlannedRequests((operation,), (), tuple(notes))
    if full and mirror_block:
        if not deletes_allowed:
            why = "the guards held deletes back"
        elif keep:
            why = (
                f"{len(keep)} products the block holds are not sent this run (held back, or "
                "missing from the read but not proven gone) and an upsert would delete them"
            )
        else:
            why = "nothing to send"
        notes.append(f"no upsert although mirror_block is on: {why}; using create")
    elif full:
        notes.append("no upsert: mirror_block is off, so the full refresh re-sends with create")
    else:
        notes.append("no upsert: incremental run (upsert only on a full refresh with mirror_block)")
    reason = f"{full_reason}: re-send every product" if full else "created or changed products"
    operations = [
        Operation(CREATE, "create", reason, batch, path=f"/api/public/product/create/{block}")
        for batch in chunked(changes, batch_size)
    ]
    held: tuple[Change, ...] = ()
    if deletes_allowed:
        operations.extend(
            Operation(
                DELETE,
                "delete",
                "gone from a complete source read",
                batch,
                path=f"/api/public/product/delete/{block}",
            )
            for batch in chunked(deletes, batch_size)
        )
    else:
        held = tuple(deletes)
    return PlannedRequests(tuple(operations), held, tuple(notes))


def encode_body(operation: Operation) -> bytes:
    """The request body: products as their canonical JSON, or external ids to delete."""
    if operation.endpoint == DELETE:
        ids = [{"external_id": change.key} for change in operation.changes]
        return json.dumps(ids, separators=(",", ":"), ensure_ascii=False).encode()
    documents = [
        change.document.canonical
        for change in operation.changes
        if change.kind is not ChangeKind.DELETE and change.document is not None
    ]
    return b"[" + b",".join(documents) + b"]"


class VambeTarget:
    """Sends products to one Vambe product block (``x-api-key``)."""

    kind = "vambe"

    def __init__(
        self,
        config: VambeTargetConfig,
        http: HttpConfig,
        *,
        api_key: str,
        transport: httpx.BaseTransport | None = None,
        inspect_retry_delay_s: float = 1.0,
    ) -> None:
        self.name = config.name
        self._config = config
        self._retry_delay = inspect_retry_delay_s
        self._clients = ThreadClients(
            lambda: make_client(
                http,
                base_url=config.base_url,
                headers={"x-api-key": api_key},
                timeout_s=config.timeout_s,
                max_connections=1,
                transport=transport,
            )
        )

    def inspect(self, *, probe: bool = False) -> TargetInfo:
        """Read ``product-blocks``: the block must exist; its count shows drift (a read,
        so every run probes)."""
        what = "GET /api/public/product/product-blocks"
        for attempt in (1, 2, 3):
            try:
                response = send_request(
                    self._clients.get(),
                    "GET",
                    "/api/public/product/product-blocks",
                    body=None,
                    what=what,
                )
                self._check(response, what)
                break
            except TargetRejectedError as exc:  # no products in this request: the URL is off
                raise fatal(
                    f"{what}: unexpected {response_reason(response)}: check base_url "
                    f"({self._config.base_url}) points at the Vambe API",
                    exc.status,
                ) from exc
            except TargetRetriableError as exc:
                if attempt == 3:
                    raise fatal(f"{exc} (3 tries); the target was not touched") from exc
                time.sleep(self._retry_delay * attempt)
        try:
            blocks: Any = response.json()
        except ValueError as exc:
            raise fatal(f"{what}: the answer is not JSON") from exc
        if not isinstance(blocks, list):
            raise fatal(f"{what}: expected a list of blocks, got {type(blocks).__name__}")
        for block in blocks:
            if isinstance(block, dict) and block.get("id") == self._config.block_id:
                count = block.get("count")
                return TargetInfo(count=count if isinstance(count, int) else None)
        names = ", ".join(
            f"{b.get('name')!r} ({b.get('id')})" for b in blocks[:5] if isinstance(b, dict)
        )
        raise fatal(
            f"Vambe product block {self._config.block_id} not found among the {len(blocks)} "
            f"blocks this key sees ({names or 'none'}): check block_id of target {self.name!r}"
        )

    def validate(self, key: str, payload: Payload) -> None:
        validate_product(key, payload)

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
        return plan_vambe(
            changes,
            deletes,
            block_id=self._config.block_id,
            batch_size=self._config.batch_size,
            full=full,
            full_reason=full_reason,
            mirror_block=self._config.mirror_block,
            deletes_allowed=deletes_allowed,
            keep=keep,
        )

    def send(self, operation: Operation) -> None:
        what = f"POST {operation.path} ({len(operation.changes)} products)"
        response = send_request(
            self._clients.get(), "POST", operation.path, body=encode_body(operation), what=what
        )
        self._check(response, what)

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        raise_for_retriable(response, what)
        env = self._config.api_key_env
        if status == 401:
            raise fatal(
                f"Vambe refused the API key ({response_reason(response)}): check ${env}", status
            )
        if status == 403:
            raise fatal(
                f"Vambe forbade the request ({response_reason(response)}): the key in ${env} "
                f"lacks access to block {self._config.block_id}",
                status,
            )
        if status == 404:
            raise fatal(
                f"{what}: {response_reason(response)}: product block {self._config.block_id} "
                f"not found; check block_id of target {self.name!r}",
                status,
            )
        raise refused_for(response, what, self._config.base_url)  # split to isolate

    def split(self, operation: Operation) -> tuple[Operation, ...] | None:
        """Halve a refused batch; a refused block upsert falls back to create batches."""
        if operation.endpoint == UPSERT:
            sendable = [c for c in operation.changes if c.kind is not ChangeKind.DELETE]
            reason = "the block upsert was refused: sent with create to isolate the bad products"
            gone = [c for c in operation.changes if c.kind is ChangeKind.DELETE]
            create_path = operation.path.replace("/upsert/", "/create/")
            delete_path = operation.path.replace("/upsert/", "/delete/")
            size = self._config.batch_size
            batches = tuple(
                Operation(CREATE, "create", reason, batch, path=create_path)
                for batch in chunked(sendable, size)
            ) + tuple(
                Operation(
                    DELETE, "delete", "implied by the refused block upsert", batch, path=delete_path
                )
                for batch in chunked(gone, size)
            )
            return batches if batches else None
        if len(operation.changes) < 2:
            return None
        middle = len(operation.changes) // 2
        reason = operation.reason.split(" [split")[0] + " [split to isolate a refused product]"
        return (
            Operation(
                operation.endpoint,
                operation.mode,
                reason,
                operation.changes[:middle],
                path=operation.path,
            ),
            Operation(
                operation.endpoint,
                operation.mode,
                reason,
                operation.changes[middle:],
                path=operation.path,
            ),
        )

    def close(self) -> None:
        self._clients.close()
