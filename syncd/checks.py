"""``syncd check-config``'s checks beyond the models: the targets' contracts and a sample.

``contract_problems`` checks what the config fixes for every product against the
target's contract (a constant currency Vambe refuses, a ``block_id`` that is not a
UUID, a ``type_id`` that can't be a URL segment) and builds every mapper (templates,
callables), all in one pass; ``raw_contract_problems`` runs the same checks on a parsed
document the models refused, so they come with the models' problems, not after them.
``sample_warnings`` reads a few source records and names the mapping paths none of them
has (``name = "titel"``).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import re
import uuid
from collections.abc import Iterator, Mapping
from string import Formatter
from typing import Any

from pydantic import TypeAdapter, ValidationError

from syncd.config import (
    FieldSpec,
    Spec,
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


_VAMBE_FIELDS = {
    "name": "string",
    "description": "string",
    "price": "number",
    "currency": "string",
    "file_url": "string",
    "sku": "string",
}
"""The Vambe mapping's fields that may hold a constant, and the type the mapper coerces to."""


def _vambe_constants(where: str, target: VambeTargetConfig) -> Iterator[ConfigProblem]:
    """Each constant of a Vambe mapping, coerced as the mapper does, against the contract."""
    specs = {name: getattr(target.mapping, name) for name in _VAMBE_FIELDS}
    yield from _vambe_spec_constants(where, specs, target.product_type)


def _vambe_spec_constants(
    where: str, specs: Mapping[str, FieldSpec | None], product_type: str
) -> Iterator[ConfigProblem]:
    from syncd.targets.vambe import validate_product

    valid: dict[str, Any] = {
        "name": "n",
        "description": "d",
        "price": 1,
        "currency": "USD",
        "type": product_type,
        "external_id": "k",
        "metadata": [],
    }
    for name, kind in _VAMBE_FIELDS.items():
        spec = specs.get(name)
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


def _block_id_problem(where: str, block_id: str) -> ConfigProblem | None:
    if _is_uuid(block_id):
        return None
    return ConfigProblem(
        f"{where}.block_id",
        f"{block_id!r} is not a UUID (the product block's promptBlockId, "
        "like 6f1c2a9e-0000-4000-8000-000000000001)",
    )


def _type_id_problem(where: str, type_id: str) -> ConfigProblem | None:
    from syncd.targets.userflux import unsafe_segment

    problem = unsafe_segment(type_id)
    return None if problem is None else ConfigProblem(f"{where}.type_id", f"{type_id!r} {problem}")


def _target_problems(index: int, target: TargetConfig) -> Iterator[ConfigProblem]:
    where = f"targets[{index}]"
    if isinstance(target, VambeTargetConfig):
        if (problem := _block_id_problem(where, target.block_id)) is not None:
            yield problem
        yield from _vambe_constants(where, target)
    if isinstance(target, UserfluxTargetConfig) and (
        problem := _type_id_problem(where, target.type_id)
    ):
        yield problem


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


_TARGET: TypeAdapter[Any] = TypeAdapter(TargetConfig)
_SPEC: TypeAdapter[FieldSpec] = TypeAdapter(Spec)


def _hook_problem(where: str, ref: Any) -> ConfigProblem | None:
    """Whether ``mapping.callable`` imports (checked alone, as the mapper would)."""
    if not isinstance(ref, str):
        return None  # the model says what is wrong with it
    place = f"{where}.mapping.callable"
    module_name, colon, attribute = ref.partition(":")
    if not colon or not module_name or not attribute:
        return ConfigProblem(place, f"expected 'module:function', got {ref!r}")
    try:
        found: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            found = getattr(found, name)
    except Exception as exc:  # any import-time failure of the hook's module
        return ConfigProblem(place, f"cannot import {ref!r} ({type(exc).__name__}: {exc})")
    return None if callable(found) else ConfigProblem(place, f"{ref!r} is not callable")


def _raw_target_problems(index: int, raw: Mapping[str, Any], key: str) -> list[ConfigProblem]:
    """The contract checks of one target table, as far as its parts can be read."""
    where = f"targets[{index}]"
    try:
        target = _TARGET.validate_python(raw)
    except ValidationError:
        pass  # checked part by part below
    else:
        problems = list(_target_problems(index, target))
        try:
            build_mapper(target, key)
        except ConfigError as exc:
            problems.extend(exc.problems)
        return problems
    problems = []
    mapping = raw.get("mapping")
    mapping = mapping if isinstance(mapping, Mapping) else {}
    kind = raw.get("kind")
    if kind == "vambe":
        if isinstance(block_id := raw.get("block_id"), str) and block_id:
            problems.extend(filter(None, [_block_id_problem(where, block_id)]))
        specs: dict[str, FieldSpec | None] = {"currency": FieldSpec(const="USD")}
        for name in _VAMBE_FIELDS:
            if name in mapping:
                try:
                    specs[name] = _SPEC.validate_python(mapping[name])
                except ValidationError:
                    specs[name] = None  # the model says what is wrong with it
        product_type = raw.get("product_type", "vambe")
        if isinstance(product_type, str):
            problems.extend(_vambe_spec_constants(where, specs, product_type))
    elif kind == "userflux" and isinstance(type_id := raw.get("type_id"), str):
        problems.extend(filter(None, [_type_id_problem(where, type_id)]))
    problems.extend(filter(None, [_hook_problem(where, mapping.get("callable"))]))
    return problems


def raw_contract_problems(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """``contract_problems`` on a parsed document the models refused: a target table that
    validates is checked whole; of one that doesn't, each part that can be read alone
    (``block_id``, ``type_id``, the mapping's constants, ``mapping.callable``)."""
    source = data.get("source")
    key = source.get("key", "id") if isinstance(source, Mapping) else "id"
    targets = data.get("targets")
    if not isinstance(targets, list):
        return []
    problems: list[ConfigProblem] = []
    for index, raw in enumerate(targets):
        if isinstance(raw, Mapping):
            problems.extend(_raw_target_problems(index, raw, key if isinstance(key, str) else "id"))
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


__all__ = [
    "contract_problems",
    "mapping_paths",
    "raw_contract_problems",
    "read_sample",
    "sample_warnings",
]
