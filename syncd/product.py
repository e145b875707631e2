"""One product at a time (``syncd show``): what the source says, what each target gets.

``show_product`` reads the source until the key, maps the record for every selected
target, looks up what the target last acknowledged and any rejection, and asks the
target's planner which request a sync would send and why. It sends nothing and writes
nothing: the state store it is given is opened read-only by the caller.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.config import FieldSpec, SyncdConfig, TargetConfig, resolve_secret
from syncd.diff import Change, ChangeKind, Operation
from syncd.errors import RecordError, SourceError
from syncd.mapping import Mapper, build_mapper, evaluate
from syncd.model import UNACKNOWLEDGED, Document, Record, RejectionRecord, UnreadableRow
from syncd.sources import Source, open_source, read_catalog, record_matches
from syncd.state.base import StateStore
from syncd.targets import Target, open_target


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One leaf of the payload that differs from what the target acknowledged."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class TargetView:
    """One product as one target sees it."""

    target: str
    kind: str
    key: str | None
    """The product's key for this target (None: the record could not be mapped)."""
    payload: dict[str, Any] | None
    """The mapped payload (None: rejected by the mapping or the target's contract)."""
    mapping_error: str | None
    acknowledged: dict[str, Any] | None
    """What the target last acknowledged (state); None: never acknowledged."""
    in_flight: bool
    """State marks the last write unacknowledged: the target's copy is uncertain."""
    changes: tuple[FieldChange, ...]
    request: dict[str, Any] | None
    """The request a sync would send (endpoint, mode, reason, body); None: nothing."""
    reason: str
    """Why that request, or why none."""
    rejection: RejectionRecord | None


@dataclass(frozen=True, slots=True)
class ProductView:
    """Everything ``syncd show`` prints about one key."""

    key: str
    record: Record | None
    """The source record (None: no record with this key in the source)."""
    source_error: str | None
    targets: tuple[TargetView, ...]


def payload_changes(before: Any, after: Any, prefix: str = "") -> Iterator[FieldChange]:
    """The leaves (dotted paths; lists compared whole) that differ between two payloads."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for name in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{name}" if prefix else str(name)
            if name not in after:
                yield FieldChange(path, before[name], None)
            elif name not in before:
                yield FieldChange(path, None, after[name])
            else:
                yield from payload_changes(before[name], after[name], path)
    elif before != after:
        yield FieldChange(prefix or "(payload)", before, after)


def _source_key(config: SyncdConfig, record: Record) -> str | None:
    value = evaluate(FieldSpec(path=config.source.key), record)
    return None if value is None else str(value)


def find_record(
    source: Source,
    config: SyncdConfig,
    key: str,
    mappers: Sequence[Mapper] = (),
) -> Record | None:
    """The first record whose key is ``key`` (the source's key, or the product key a
    mapper with its own ``mapping.key`` gives it); the read stops there."""
    for item in read_catalog(source, config.source):
        if isinstance(item, UnreadableRow):
            continue
        if _source_key(config, item) == key:
            return item
        for mapper in mappers:
            try:
                if mapper.map(item).key == key:
                    return item
            except RecordError:
                continue
    return None


def request_body(kind: str, operation: Operation) -> Any:
    """The JSON body ``operation`` would carry (built as the target builds it)."""
    if kind == "userflux":
        from syncd.targets.userflux import request_body as userflux_body

        return userflux_body(operation)
    from syncd.targets.vambe import encode_body

    return json.loads(encode_body(operation))


def _request(target: Target, change: Change, *, full: bool, why: str) -> dict[str, Any]:
    planned = target.plan([change], [], full=full, deletes_allowed=True, full_reason=why)
    [operation] = planned.operations
    return {
        "endpoint": operation.endpoint,
        "mode": operation.mode,
        "path": operation.path,
        "reason": operation.reason,
        "body": request_body(target.kind, operation),
    }


def resend_command(key: str, *, target: str, config_path: str | None = None) -> str:
    """The ``syncd resend`` command line for one product of one target, each argument
    shell-quoted (a key may hold spaces, quotes or ``$``), with ``--config`` when the
    config was named."""
    args = ["syncd"]
    if config_path:
        args += ["--config", config_path]
    args += ["resend", "--target", target, "--", key]
    return shlex.join(args)


def view_target(
    config: TargetConfig,
    target: Target,
    mapper: Mapper,
    store: StateStore,
    key: str,
    record: Record | None,
    where_label: str = "where",
    *,
    config_path: str | None = None,
) -> TargetView:
    """What ``record`` becomes for one target, and what a sync would send it.

    ``where_label`` names the target's filter in reasons (``targets[1].where``): a record
    it leaves out is absent from this target, one it can't test is rejected there."""
    name = config.name
    payload: dict[str, Any] | None = None
    document: Document | None = None
    mapping_error: str | None = None
    product_key: str | None = key
    left_out = False
    where_error: str | None = None
    if record is not None:
        if config.where:
            try:
                left_out = not record_matches(record, config.where)
            except RecordError as exc:
                where_error = f"{where_label}: {exc}"
        try:
            document = mapper.map(record)
            product_key = document.key
            payload = dict(document.payload)
            target.validate(document.key, document.payload)
        except RecordError as exc:
            mapping_error = str(exc)
            product_key = exc.key or product_key
            document = None
        if where_error is not None and mapping_error is None:
            mapping_error, document = where_error, None
    acked = store.get(name, product_key) if product_key else None
    in_flight = acked is not None and acked.hash == UNACKNOWLEDGED
    acknowledged = dict(acked.payload) if acked is not None and acked.canonical else None
    rejection = next(
        (r for r in store.open_rejections(name) if r.key == product_key),
        None,
    )
    changes = tuple(payload_changes(acknowledged or {}, payload or {}))
    request: dict[str, Any] | None = None
    if record is None:
        reason = (
            "not in the source: a complete read would delete it from the target"
            if acked is not None
            else "not in the source and not in state: nothing to do"
        )
    elif left_out:
        reason = f"left out by {where_label}: absent from this target; " + (
            "a complete read would delete it from the target"
            if acked is not None
            else "not in state: nothing to do"
        )
    elif document is None:
        reason = f"rejected, not sent: {mapping_error}"
    elif acked is None:
        change = Change(ChangeKind.CREATE, document.key, document, None)
        request = _request(target, change, full=False, why="")
        reason = "not in state: created"
    elif acked.hash == document.hash:
        reason = (
            "unchanged since the last acknowledgement: a sync sends nothing "
            f"(`{resend_command(document.key, target=name, config_path=config_path)}` "
            "re-sends it whole)"
        )
    else:
        change = Change(ChangeKind.UPDATE, document.key, document, acked)
        request = _request(target, change, full=False, why="")
        reason = "changed since the last acknowledgement"
    if (
        request is not None
        and rejection is not None
        and document is not None
        and rejection.hash == document.hash
    ):
        reason += (
            f"; but the target refused this very payload before: held until "
            f"rejection_backoff_s ({config.rejection_backoff_s:g}s) has passed"
        )
    return TargetView(
        target=name,
        kind=config.kind,
        key=product_key,
        payload=payload,
        mapping_error=mapping_error,
        acknowledged=acknowledged,
        in_flight=in_flight,
        changes=changes,
        request=request,
        reason=reason,
        rejection=rejection,
    )


def show_product(
    config: SyncdConfig,
    store: StateStore,
    key: str,
    targets: Sequence[TargetConfig],
    *,
    source: Source | None = None,
    config_path: str | None = None,
) -> ProductView:
    """``syncd show KEY``: the source record and, per target, its view (``view_target``);
    ``config_path`` goes into the commands it suggests."""
    mappers = [build_mapper(t, config.source.key) for t in targets]
    custom = [m for m, t in zip(mappers, targets, strict=True) if t.mapping.key is not None]
    source = source or open_source(config.source, config.http)
    record: Record | None = None
    source_error: str | None = None
    try:
        record = find_record(source, config, key, custom)
    except SourceError as exc:
        source_error = str(exc)
    views = []
    index = {target.name: i for i, target in enumerate(config.targets)}
    for target_config, mapper in zip(targets, mappers, strict=True):
        # the planners and the contract checks send nothing: no API key is needed
        api_key = resolve_secret(target_config.api_key_env) or ""
        target = open_target(target_config, config.http, api_key=api_key)
        try:
            label = f"targets[{index.get(target_config.name, 0)}].where"
            views.append(
                view_target(
                    target_config,
                    target,
                    mapper,
                    store,
                    key,
                    record,
                    label,
                    config_path=config_path,
                )
            )
        finally:
            target.close()
    return ProductView(key, record, source_error, tuple(views))


__all__ = [
    "FieldChange",
    "ProductView",
    "TargetView",
    "payload_changes",
    "resend_command",
    "show_product",
]
