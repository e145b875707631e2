"""Vambe's planner: batched ``create`` and ``delete``, and the whole-block ``upsert``
(pure: no I/O).

``create`` upserts by ``external_id`` and leaves other products alone, so it carries
every create and update. ``upsert`` replaces the whole block: it is used only for a
full refresh of a target configured with ``mirror_block`` and only when the guards
pass. A refused batch is split until the bad products are isolated.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from urllib.parse import quote

from syncd.diff import Change, ChangeKind, Operation, chunked
from syncd.model import describe_age, refresh_age
from syncd.targets.base import PlannedRequests

CREATE = "block.create"
DELETE = "block.delete"
UPSERT = "block.upsert"


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
    upsert_refused: str | None = None,
) -> PlannedRequests:
    """Batches for a run, and notes saying why ``upsert`` was or wasn't used
    (``upsert_refused``: why it must not be, whatever else allows it)."""
    block = quote(block_id, safe="")
    notes: list[str] = []
    if full and mirror_block and deletes_allowed and changes and not keep and not upsert_refused:
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
        elif upsert_refused:
            why = upsert_refused
        else:
            why = "nothing to send"
        notes.append(f"no upsert although mirror_block is on: {why}; using create")
    elif full:
        notes.append("no upsert: mirror_block is off, so the full refresh re-sends with create")
    else:
        notes.append("no upsert: incremental run (upsert only on a full refresh with mirror_block)")
    if full:
        reason = f"{full_reason}: re-send every product"
        operations = [
            Operation(CREATE, "create", reason, batch, path=f"/api/public/product/create/{block}")
            for batch in chunked(changes, batch_size)
        ]
    else:
        # the rolling refresh's products last, so most batches are one kind or the other
        changed = [change for change in changes if _refresh_age(change) is None]
        refreshed = [change for change in changes if _refresh_age(change) is not None]
        operations = [
            Operation(
                CREATE,
                "create",
                _batch_reason(batch),
                batch,
                path=f"/api/public/product/create/{block}",
            )
            for batch in chunked(changed + refreshed, batch_size)
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


def _refresh_age(change: Change) -> float | None:
    """How long ago a product re-sent by the rolling refresh was last acknowledged."""
    return None if change.previous is None else refresh_age(change.previous.hash)


def _batch_reason(batch: Sequence[Change]) -> str:
    """Why a ``create`` batch of an incremental run is sent: created or changed products,
    products re-asserted by the rolling refresh, or both."""
    ages = [age for age in map(_refresh_age, batch) if age is not None]
    if not ages:
        return "created or changed products"
    refresh = (
        f"rolling refresh: last acknowledged {describe_age(min(ages))} ago"
        if describe_age(min(ages)) == describe_age(max(ages))
        else f"rolling refresh: last acknowledged {describe_age(min(ages))} to "
        f"{describe_age(max(ages))} ago"
    )
    if len(ages) == len(batch):
        return refresh
    return f"created or changed products, and {len(ages)} re-sent by the {refresh}"


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


def split_batch(operation: Operation, batch_size: int) -> tuple[Operation, ...] | None:
    """Halve a refused batch; a refused block upsert falls back to create batches."""
    if operation.endpoint == UPSERT:
        sendable = [c for c in operation.changes if c.kind is not ChangeKind.DELETE]
        reason = "the block upsert was refused: sent with create to isolate the bad products"
        gone = [c for c in operation.changes if c.kind is ChangeKind.DELETE]
        create_path = operation.path.replace("/upsert/", "/create/")
        delete_path = operation.path.replace("/upsert/", "/delete/")
        size = batch_size
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
