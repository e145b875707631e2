"""``syncd check-config``'s checks beyond the models: the targets' contracts and a sample.

``contract_problems`` checks what the config fixes for every product against the
target's contract (a constant currency Vambe refuses, a ``block_id`` that is not a
UUID, a ``type_id`` that can't be a URL segment) and builds every mapper (templates,
callables), all in one pass. ``sample_warnings`` reads a few source records and names
the mapping paths none of them has (``name = "titel"``).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import uuid
from collections.abc import Iterator
from string import Formatter
from typing import Any

from syncd.config import (
    FieldSpec,
    SyncdConfig,
    TargetConfig,
    UserfluxTargetConfig,
    VambeTargetConfig,
)
from syncd.errors import ConfigError, ConfigProblem, RecordError
from syncd.mapping import build_mapper, evaluate
from syncd.model import Record, UnreadableRow
from syncd.sources import Source, open_source, read_catalog
from syncd.values import MISSING


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return bool(re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", value))


def _vambe_constants(where: str, target: VambeTargetConfig) -> Iterator[ConfigProblem]:
    """Each constant of a Vambe mapping, coerced as the mapper does, against the contract."""
    from syncd.targets.vambe import validate_product

    mapping = target.mapping
    fields: dict[str, tuple[FieldSpec | None, str]] = {
        "name": (mapping.name, "string"),
        "description": (mapping.description, "string"),
        "price": (mapping.price, "number"),
        "currency": (mapping.currency, "string"),
        "file_url": (mapping.file_url, "string"),
        "sku": (mapping.sku, "string"),
    }
    valid: dict[str, Any] = {
        "name": "n",
        "description": "d",
        "price": 1,
        "currency": "USD",
        "type": target.product_type,
        "external_id": "k",
        "metadata": [],
    }
    for name, (spec, kind) in fields.items():
        if spec is None or spec.const is None:
            continue
        place = f"{where}.mapping.{name}"
        try:
            value = evaluate(spec.model_copy(update={"type": spec.type or kind}), {})
        except RecordError as exc:
            yield ConfigProblem(place, f"constant {spec.const!r}: {exc.reason}")
            continue
        if value is MISSING:
            yield ConfigProblem(place, f"constant {spec.const!r} is empty")
            continue
        try:
            validate_product("k", {**valid, name: value})
        except RecordError as exc:
            yield ConfigProblem(
                place, f"constant {spec.const!r} is refused by Vambe's contract: {exc.reason}"
            )


def _target_problems(index: int, target: TargetConfig) -> Iterator[ConfigProblem]:
    where = f"targets[{index}]"
    if isinstance(target, VambeTargetConfig):
        if not _is_uuid(target.block_id):
            yield ConfigProblem(
                f"{where}.block_id",
                f"{target.block_id!r} is not a UUID (the product block's promptBlockId, "
                "like 6f1c2a9e-0000-4000-8000-000000000001)",
            )
        yield from _vambe_constants(where, target)
    if isinstance(target, UserfluxTargetConfig):
        from syncd.targets.userflux import unsafe_segment

        problem = unsafe_segment(target.type_id)
        if problem is not None:
            yield ConfigProblem(f"{where}.type_id", f"{target.type_id!r} {problem}")


def contract_problems(config: SyncdConfig) -> list[ConfigProblem]:
    """Every problem the targets' contracts find in the config, and the mappers' own."""
    problems: list[ConfigProblem] = []
    for index, target in enumerate(config.targets):
        problems.extend(_target_problems(index, target))
        try:
            build_mapper(target, config.source.key)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems


def _spec_paths(spec: FieldSpec) -> list[str]:
    """The record paths a spec reads (its path, fallbacks, template placeholders)."""
    paths = [spec.path] if spec.path else []
    paths.extend(spec.fallback)
    if spec.template:
        with contextlib.suppress(ValueError):  # a bad template is reported by the mapper
            paths.extend(name for _, name, _, _ in Formatter().parse(spec.template) if name)
    return paths


def mapping_paths(config: SyncdConfig, index: int) -> list[tuple[str, FieldSpec]]:
    """(TOML path, spec) of every spec of target ``index``'s mapping, defaults included."""
    target = config.targets[index]
    where = f"targets[{index}].mapping"
    specs: list[tuple[str, FieldSpec | None]] = [(f"{where}.key", target.mapping.key)]
    if isinstance(target, UserfluxTargetConfig):
        m = target.mapping
        specs += [(f"{where}.properties.{n}", s) for n, s in m.properties.items()]
        specs += [
            (f"{where}.ai_property_overrides.{n}", s) for n, s in m.ai_property_overrides.items()
        ]
    else:
        v = target.mapping
        specs += [
            (f"{where}.{name}", getattr(v, name))
            for name in ("name", "description", "price", "currency", "file_url", "sku")
        ]
        if isinstance(v.metadata, list):
            specs += [(f"{where}.metadata", FieldSpec(path=path)) for path in v.metadata]
        else:
            specs += [(f"{where}.metadata.{n}", s) for n, s in v.metadata.items()]
    return [(place, spec) for place, spec in specs if spec is not None]


def _has(record: Record, path: str) -> bool:
    try:
        return evaluate(FieldSpec(path=path), record) is not MISSING
    except RecordError:
        return True  # there, though unusable as it is: the mapping says why per record


def read_sample(config: SyncdConfig, count: int, source: Source | None = None) -> list[Record]:
    """The first ``count`` records of the source (grouped and filtered as configured)."""
    source = source or open_source(config.source, config.http)
    items = (i for i in read_catalog(source, config.source) if not isinstance(i, UnreadableRow))
    return list(itertools.islice(items, count))


def sample_warnings(config: SyncdConfig, records: list[Record]) -> list[str]:
    """The mapping paths (and ``source.key``) that none of ``records`` has."""
    if not records:
        return ["the source returned no records: the mapping paths could not be checked"]
    warnings: list[str] = []
    read = f"{len(records)} records read"
    if not any(_has(r, config.source.key) for r in records):
        warnings.append(f"source.key: path {config.source.key!r} is in none of the {read}")
    for index in range(len(config.targets)):
        for place, spec in mapping_paths(config, index):
            for path in _spec_paths(spec):
                if not any(_has(record, path) for record in records):
                    fields = sorted({str(k) for r in records for k in r})[:12]
                    warnings.append(
                        f"{place}: path {path!r} is in none of the {read} "
                        f"(their fields: {', '.join(fields)})"
                    )
    return warnings


__all__ = ["contract_problems", "mapping_paths", "read_sample", "sample_warnings"]
