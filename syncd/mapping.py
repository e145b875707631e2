"""Mapping: a source record becomes a target's document, as the config declares.

``build_mapper`` compiles a target's mapping once (paths split, templates parsed, the
escape-hatch callable imported); ``Mapper.map`` then runs for every record and raises
``RecordError`` for one it can't map. Pure: no I/O, no logging.
"""

from __future__ import annotations

import functools
import importlib
import traceback
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from functools import partial
from string import Formatter
from typing import Any, Protocol, TypeVar

import structlog

from syncd.codegen import Source
from syncd.config import (
    FieldSpec,
    PairsSpec,
    SplitStep,
    UserfluxTargetConfig,
    ValueType,
    VambeTargetConfig,
)
from syncd.errors import ConfigError, ConfigProblem, RecordError, record_error
from syncd.model import Document, Payload, Record, canonical_json, payload_hash
from syncd.text import (
    Trim,
    html_to_text,
    parse_pairs,
    split_pairs,
    split_text,
    trimmed,
    truncate_words,
)
from syncd.values import (
    COERCIONS,
    EXACT_INTEGER,
    INDEX_TEXT,
    MAX_DEPTH,
    MISSING,
    as_it_is,
    distinct_values,
    float_leaves,
    jsonable,
    key_text,
    pick_values,
    plain_number,
    show,
    stringify,
)

MAX_KEY_LENGTH = 512
"""Longest product key, in characters."""
WELL_FORMED_METADATA = frozenset({"metadata"})
"""A Vambe mapper's ``well_formed`` without a ``mapping.callable``."""
WELL_FORMED_PRODUCT = frozenset({"properties", "aiPropertyOverrides"})
"""A UserFlux mapper's ``well_formed`` without a ``mapping.callable``: both objects (the
latter absent when empty), built by the mapping code."""

Hook = Callable[[Record, Payload], Payload]
Encoded = tuple[str, Payload, bytes]
"""A mapped record's key, payload and canonical bytes (``Mapper.encode``)."""
_Out = TypeVar("_Out")

log = structlog.get_logger("syncd.mapping")


class Mapper(Protocol):
    """Turns records into one target's documents."""

    well_formed: frozenset[str]
    """The payload fields every document of this mapper has the shape of the target's
    contract by construction, item by item (``Target.validate`` need not check them):
    what the mapping code builds, never with a ``mapping.callable`` (it may change them)."""

    def map(self, record: Record) -> Document:
        """The record's document; raise ``RecordError`` when it can't be mapped."""
        ...

    def encode(self, record: Record) -> Encoded:
        """What ``map``'s document is made of, not made into one: its key, payload and
        canonical bytes (the planner validates the payload, then makes the one document
        it keeps, without the dict); ``RecordError`` as ``map``."""
        ...


# --------------------------------------------------------------------------------------
# Fields: paths, templates, the evaluation of one spec
# --------------------------------------------------------------------------------------

Getter = Callable[[Record], Any]


def _walk(value: Any, parts: tuple[tuple[str, int | None], ...], start: int) -> Any:
    for position in range(start, len(parts)):
        name, index = parts[position]
        if isinstance(value, dict):
            found = value.get(name)
            if found is None and position + 1 < len(parts):
                return _walk_dotted_key(value, parts, position)
            value = found
        elif index is not None and isinstance(value, (list, tuple)):
            if not -len(value) <= index < len(value):
                return None
            value = value[index]
        else:
            return None
    return value


def _walk_dotted_key(
    value: dict[str, Any], parts: tuple[tuple[str, int | None], ...], at: int
) -> Any:
    """Try keys that contain dots themselves (``"Weight (lbs.)"``) from part ``at`` on."""
    for end in range(at + 2, len(parts) + 1):
        name = ".".join(part for part, _ in parts[at:end])
        if name in value:
            return _walk(value[name], parts, end)
    return None


def _compile_path(path: str) -> Getter:
    """A function reading the dotted ``path`` from a record (None when absent)."""
    if "." not in path:
        return lambda record: record.get(path)
    parts = tuple(
        (part, int(part) if INDEX_TEXT.fullmatch(part) else None) for part in path.split(".")
    )

    def get(record: Record) -> Any:
        value = record.get(path)  # a literal key with dots wins
        return _walk(record, parts, 0) if value is None else value

    return get


class _Hole:
    """What a template gives when a placeholder is missing (one per placeholder)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _compile_template(template: str) -> Getter:
    pieces: list[tuple[str, Getter | None, str, _Hole | None, str]] = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from None
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None, "", None, ""))
            continue
        if not name or conversion:
            raise ValueError(
                f"bad template placeholder {{{name}{'!' + conversion if conversion else ''}}}"
            )
        pieces.append((literal, _compile_path(name), spec or "", _Hole(name), name))

    def fill(record: Record) -> Any:
        out: list[str] = []
        for literal, get, spec, hole, name in pieces:
            out.append(literal)
            if get is None:
                continue
            value = get(record)
            if value.__class__ is str:
                value = value.strip()
            if value is None or value == "":
                return hole
            if spec:
                try:
                    out.append(format(value, spec))
                except (ValueError, TypeError) as exc:
                    raise RecordError(f"template placeholder {{{name}:{spec}}}: {exc}") from None
            else:
                out.append(stringify(value))
        return "".join(out)

    return fill


@functools.lru_cache(maxsize=64)
def _html_text(html: str) -> str:
    """``html_to_text``, remembered for a while: every target maps the same record in
    turn, so a description is converted once per record rather than once per target."""
    return html_to_text(html)


FieldFn = Callable[[Record], Any]
"""A compiled ``FieldSpec``: the value in a record, ``MISSING``, or ``RecordError``."""


# --------------------------------------------------------------------------------------
# Unpacking: split, pairs, then, pick, distinct
# --------------------------------------------------------------------------------------

Step = Callable[[Any], Any]
"""One unpacking step: a value in, a value (or ``MISSING``) out; ``RecordError`` if unusable."""


def _text_item(item: Any, trim: Trim) -> Any:
    """A list item as it is, its text trimmed; ``MISSING`` when blank or None."""
    if item is None:
        return MISSING
    if item.__class__ is str:
        item = trimmed(item, trim)
        return MISSING if not item or item.isspace() else item
    return item


def _split_step(separators: tuple[str, ...], trim: Trim) -> Step:
    def split(value: Any) -> Any:
        if isinstance(value, str):
            return split_text(value, separators, trim=trim) or MISSING
        if isinstance(value, Mapping):
            raise RecordError(f"can't split an object: {show(value)}")
        if isinstance(value, (list, tuple)):  # already cut
            items = [_text_item(item, trim) for item in value]
            return [item for item in items if item is not MISSING] or MISSING
        return [value]

    return split


def _pairs_step(pairs: PairsSpec, trim: Trim) -> Step:
    items, fields, kv = pairs.items, pairs.fields, pairs.kv

    def one(text: str) -> dict[str, Any]:
        try:
            return dict(parse_pairs(text, fields=fields, kv=kv, trim=trim))
        except ValueError as exc:
            raise RecordError(str(exc)) from None

    def unpack(value: Any) -> Any:
        if isinstance(value, str):
            if not items:
                return one(value) or MISSING
            try:
                found: list[Any] = list(
                    split_pairs(value, items=items, fields=fields, kv=kv, trim=trim)
                )
            except ValueError as exc:
                raise RecordError(str(exc)) from None
            return found or MISSING
        if isinstance(value, Mapping):
            return value if not items else [value]
        if isinstance(value, (list, tuple)):  # already one item per entry
            out = []
            for item in value:
                if isinstance(item, str):
                    item = one(item) if item.strip() else None
                elif item is not None and not isinstance(item, Mapping):
                    raise RecordError(f"not key{kv}value pairs: {show(item)}")
                if item:
                    out.append(item)
            return out or MISSING
        raise RecordError(f"not key{kv}value pairs: {show(value)}")

    return unpack


def _cut(text: str, step: SplitStep, trim: Trim) -> Any:
    """``text`` cut by a nested ``then`` step: its parts, or one of them (``index``)."""
    parts: list[Any] = split_text(text, step.split, trim=trim)
    if step.then is not None:
        inner = step.then
        parts = [part for part in (_cut(one, inner, trim) for one in parts) if part is not MISSING]
    if step.index is not None:
        index = step.index
        return parts[index] if -len(parts) <= index < len(parts) else MISSING
    return parts or MISSING


def _then_step(step: SplitStep, trim: Trim) -> Step:
    def then(value: Any) -> Any:
        items = value if isinstance(value, (list, tuple)) else [value]
        out = []
        for item in items:
            if isinstance(item, (Mapping, list, tuple)):
                raise RecordError(f"then cuts text, not {show(item)}")
            if item is None:
                continue
            part = _cut(stringify(item), step, trim)
            if part is not MISSING:
                out.append(part)
        return out or MISSING

    return then


def _exclude_step(excluded: tuple[str, ...], trim: Trim) -> Step:
    """Drop the items (or the single value) whose trimmed text is one of ``excluded``."""
    unwanted = frozenset(_text_item(text, trim) for text in excluded)

    def kept(item: Any) -> bool:
        if isinstance(item, str):
            return _text_item(item, trim) not in unwanted
        return isinstance(item, (dict, list)) or stringify(item) not in unwanted

    def exclude(value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in value if kept(item)] or MISSING
        return value if kept(value) else MISSING

    return exclude


def _aggregate_step(how: str, decimal_separator: str, join_with: str) -> Step:
    """``aggregate``: a list reduced to one value (a single value is a list of one)."""
    to_number = COERCIONS["number"]

    def numbers(items: list[Any]) -> list[int | float]:
        out = []
        for position, item in enumerate(items):
            if isinstance(item, (dict, list)):
                raise RecordError(f"aggregate {how}: item {position} is {show(item)}, not a number")
            try:
                out.append(to_number(item, decimal_separator))
            except RecordError as exc:
                raise RecordError(f"aggregate {how}: item {position}: {exc.reason}") from None
        return out

    def aggregate(value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        items = [item for item in items if item is not None and item != ""]
        if not items:
            return MISSING
        if how == "count":
            return len(items)
        if how == "first":
            return items[0]
        if how == "last":
            return items[-1]
        if how == "join":
            return join_with.join(stringify(item) for item in items)
        found = numbers(items)
        if how == "min":
            return min(found)
        if how == "max":
            return max(found)
        total = sum(Decimal(repr(n)) if isinstance(n, float) else Decimal(n) for n in found)
        return to_number(total, decimal_separator)

    return aggregate


def _unpacking(spec: FieldSpec) -> Step | None:
    """The unpacking options of ``spec`` as one step, in their documented order (``split``
    or ``pairs``, then ``then``, ``pick``, ``distinct``, ``exclude``, ``aggregate``); None
    when it has none."""
    trim = spec.trim
    steps: list[Step] = []
    if spec.split is not None:
        steps.append(_split_step(spec.split, trim))
    elif spec.pairs is not None:
        steps.append(_pairs_step(spec.pairs, trim))
    if spec.then is not None:
        steps.append(_then_step(spec.then, trim))
    if spec.pick is not None:
        get = _compile_path(spec.pick)
        steps.append(lambda value: pick_values(value, get))
    if spec.distinct:
        steps.append(distinct_values)
    if spec.exclude:
        steps.append(_exclude_step(spec.exclude, trim))
    if spec.aggregate is not None:
        steps.append(_aggregate_step(spec.aggregate, spec.decimal_separator, spec.join_with))
    if not steps:
        return None

    def unpack(value: Any) -> Any:
        for step in steps:
            value = step(value)
            if value is MISSING:
                break
        return value

    return unpack


def _each(coerce: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """A scalar type applied to every item of an unpacked list (nested lists too)."""

    def each(value: Any, separator: str) -> Any:
        if isinstance(value, list):
            return [each(item, separator) for item in value]
        if isinstance(value, Mapping):
            raise RecordError(f"an object is not a single value: {show(value)}")
        return coerce(value, separator)

    return each


def _text_cleaner(spec: FieldSpec) -> Callable[[str], str]:
    trim = spec.trim
    if spec.html:
        return (
            _html_text if trim is True or trim is False else lambda t: trimmed(_html_text(t), trim)
        )
    if trim is True:
        return str.strip
    if trim is False:
        return str
    return lambda text: trimmed(text, trim)


def _plain_value(value: Any) -> Any:
    """The untyped, simple case: strings stripped, JSON-compatible data as it is."""
    kind = type(value)
    if kind is str:
        value = value.strip()
        return value if value else MISSING
    if kind is int or kind is bool:
        return value
    return jsonable(value)


def _raw_value(value: Any) -> Any:
    """Untyped, for a caller that makes the value JSON-compatible itself."""
    if value.__class__ is str:
        value = value.strip()
        return value if value else MISSING
    return value


def _is_simple(spec: FieldSpec) -> bool:
    """Whether ``spec`` is one path and perhaps a type (``_simple_field``)."""
    return (
        spec.path is not None
        and not (spec.fallback or spec.html)
        and spec.default is None
        and spec.index is None
        and spec.max_length is None
        and spec.trim is True
        and _unpacking(spec) is None
    )


def _coercion(kind: ValueType | None, raw: bool) -> Callable[[Any, str], Any]:
    return COERCIONS[kind] if not (raw and kind is None) else as_it_is


def _simple_field(
    path: str, kind: ValueType | None, separator: str, raw: bool, required: bool
) -> FieldFn:
    """A field that is one path and perhaps a type: the hot path of most mappings
    (``_field_code`` writes the same steps inline)."""
    get = _compile_path(path)
    if kind is None and not required:
        finish = _raw_value if raw else _plain_value
        if "." not in path:
            return lambda record: MISSING if (v := record.get(path)) is None else finish(v)
        return lambda record: MISSING if (v := get(record)) is None else finish(v)
    coerce = _coercion(kind, raw)
    is_string = kind == "string"

    def value(record: Record) -> Any:
        found = get(record)
        if found.__class__ is str:
            found = found.strip()
            if found and is_string:
                return found
        if found is None or found == "":
            if required:
                raise RecordError("missing (required)")
            return MISSING
        found = coerce(found, separator)
        if found is MISSING and required:
            raise RecordError("missing (required)")
        return found

    return value


def compile_field(
    spec: FieldSpec, *, type: ValueType | None = None, required: bool = False, raw: bool = False
) -> FieldFn:
    """Compile ``spec`` once into a function of a record.

    ``type`` and ``required`` are defaults the spec can override; ``raw`` leaves untyped
    values unchecked for a caller that makes them JSON-compatible itself. ``ValueError``
    for a template that can't be parsed.
    """
    kind = spec.type or type
    required = spec.required or required
    separator = spec.decimal_separator
    if _is_simple(spec):
        assert spec.path is not None
        return _simple_field(spec.path, kind, separator, raw, required)
    getters: list[Getter] = []
    if spec.path is not None:
        getters.append(_compile_path(spec.path))
    elif spec.template is not None:
        getters.append(_compile_template(spec.template))
    else:
        const = spec.const
        getters.append(lambda record: const)
    getters.extend(_compile_path(path) for path in spec.fallback)
    has_default = spec.default is not None
    default = spec.default.strip() or MISSING if isinstance(spec.default, str) else spec.default
    default = MISSING if default is None else default
    coerce = COERCIONS[kind] if not (raw and kind is None) else as_it_is
    unpack = _unpacking(spec)
    fallbacks = bool(spec.fallback)
    plain_unpack = _unpacking(spec.model_copy(update={"pick": None})) if spec.pick else unpack
    if unpack is not None and kind in ("string", "number", "integer", "boolean"):
        coerce = _each(coerce)
    to_text = _text_cleaner(spec)
    index, max_length = spec.index, spec.max_length

    def value(record: Record) -> Any:
        hole = None
        unpacking = unpack
        for position, get in enumerate(getters):
            found = get(record)
            if found is None:
                continue
            found_type = found.__class__
            if found_type is str:
                found = to_text(found)
                if not found or found.isspace():
                    continue
            elif found_type is _Hole:
                hole = hole or found
                continue
            elif found_type is list and not found and fallbacks:
                continue  # no items (a product without variants): try the fallbacks
            if position and found_type is not list and found_type is not dict:
                unpacking = plain_unpack  # a fallback's single value: nothing to pick from
            break
        else:
            found = default
            if found is MISSING:
                if hole is not None and not has_default:
                    raise RecordError(f"template placeholder {{{hole.name}}} is missing")
                if required:
                    raise RecordError("missing (required)")
                return MISSING
        if unpacking is not None:
            found = unpacking(found)
            if found is MISSING:
                if required:
                    raise RecordError("missing (required)")
                return MISSING
        found = coerce(found, separator)
        if index is not None and found.__class__ is list:
            found = found[index] if -len(found) <= index < len(found) else MISSING
        if max_length is not None and found.__class__ is str:
            found = truncate_words(found, max_length)
        if found is MISSING and required:
            raise RecordError("missing (required)")
        return found

    const = spec.const
    if const is not None and not (isinstance(const, str) and not const.strip()):
        # The same for every record: work it out once, and a bad one is a config error.
        try:
            constant = value({})
        except RecordError as exc:
            raise ValueError(f"const {show(const)}: {exc.reason}") from None
        if constant.__class__ in (str, int, float, bool):
            return lambda record: constant
    return value


def plain_path(spec: FieldSpec) -> str | None:
    """The record key ``spec`` only reads, untyped, optional, trimmed (what
    ``compile_field`` makes a bare ``record.get``); None for any other spec. A mapper
    reads such a field inline: a call or two fewer per field and record."""
    if (
        spec.path is None
        or "." in spec.path
        or spec.type is not None
        or spec.required
        or spec.fallback
        or spec.html
        or spec.default is not None
        or spec.index is not None
        or spec.max_length is not None
        or spec.trim is not True
        or _unpacking(spec) is not None
    ):
        return None
    return spec.path


def evaluate(spec: FieldSpec, record: Record) -> Any:
    """The value ``spec`` gives in ``record`` (or ``MISSING``); ``RecordError`` if unusable.

    Compiles the spec on every call: a mapper compiles once, use it for many records.
    """
    return compile_field(spec)(record)


def _field_code(
    code: Source,
    field: FieldFn,
    spec: FieldSpec,
    label: str,
    use: Callable[[], None],
    *,
    use_text: Callable[[], None] | None = None,
    type: ValueType | None = None,
    required: bool = False,
    raw: bool = False,
    floats: bool = False,
) -> None:
    """Write the lines that evaluate ``field`` (``compile_field(spec, type=type, ...)``)
    into ``value`` and then the lines ``use`` writes, unless the value is ``MISSING``;
    a ``RecordError`` of either appends ``(label, reason)`` to ``problems``.

    A field that only reads a record key is read inline, a text there trimmed and
    handed to ``use_text`` (else ``use``) and anything else to ``field``; one that is
    a record key and a type goes through ``_simple_field``'s steps inline; any other
    is a call of ``field``. Expects ``record``, ``get`` (``record.get``) and ``problems``.

    ``floats``: the lines also append every float of a value they use to the list
    ``floats`` (``canonical_json``'s, so the payload's text needn't be searched): a text
    has none, ``jsonable`` is told the list, any other value is looked at as its type
    allows (``_floats_code``). Expects ``floats`` too.
    """
    problem = f"problems.append(({label!r}, exc.reason))"
    missing = f"problems.append(({label!r}, {'missing (required)'!r}))"

    def call() -> None:
        with code.block("try:"):
            code.line(f"value = {code.name_of(field, 'field')}(record)")
            with code.block("if value is not MISSING:"):
                if floats:
                    _floats_code(code, None)
                use()
        with code.block("except RecordError as exc:"):
            code.line(problem)

    path = plain_path(spec) if type is None and not required else None
    if path is not None:
        code.line(f"value = get({path!r})")
        with code.block("if value is not None:"):
            with code.block("if value.__class__ is str:"):
                code.line("value = value.strip()")
                with code.block("if value:"):
                    with code.block("try:"):
                        (use_text or use)()
                    with code.block("except RecordError as exc:"):
                        code.line(problem)
            with code.block("else:"):  # what ``field`` makes of it (``_simple_field``)
                with code.block("try:"):
                    if not raw:  # ``_plain_value``: the same as ``jsonable`` for no text
                        code.line(f"value = {_jsonable_call(code, floats)}")
                    elif floats:
                        _floats_code(code, None)
                    use()
                with code.block("except RecordError as exc:"):
                    code.line(problem)
        return
    kind, required = spec.type or type, spec.required or required
    if _is_html(spec):
        _html_field_code(code, spec, kind, required, raw, use, problem, missing, floats)
        return
    untyped = kind is None and not required  # a dotted path's plain field: a call
    if not _is_simple(spec) or spec.path is None or "." in spec.path or untyped:
        call()
        return
    coerce = code.name_of(_coercion(kind, raw), "coerce")
    code.line(f"value = get({spec.path!r})")
    with code.block("if value.__class__ is str:"):
        code.line("value = value.strip()")
    with code.block('if value is None or value == "":'):
        code.line(missing if required else "pass")
    if kind == "string":
        with code.block("elif value.__class__ is str:"):
            with code.block("try:"):
                use()
            with code.block("except RecordError as exc:"):
                code.line(problem)
    with code.block("else:"):
        _coerced_code(code, spec, coerce, required, use, problem, missing, kind=kind, floats=floats)


def _jsonable_call(code: Source, floats: bool) -> str:
    """The call of ``jsonable`` on ``value``, told ``floats`` when the lines note them."""
    jsonable_ = code.name_of(jsonable, "jsonable")
    return f"{jsonable_}(value, 0, floats)" if floats else f"{jsonable_}(value)"


def _floats_code(code: Source, kind: ValueType | None) -> None:
    """The lines appending the floats of ``value`` to ``floats``: ``value`` is of type
    ``kind`` (what ``values.COERCIONS[kind]`` gives: a text, an integer or a boolean has
    none, a number may be one) or, for None, any JSON data (a number may be a float, a
    container is ``float_leaves``'s)."""
    if kind == "string" or kind == "integer" or kind == "boolean":
        return
    with code.block("if value.__class__ is float:"):
        code.line("floats.append(value)")
    if kind != "number":
        leaves = code.name_of(float_leaves, "float_leaves")
        with code.block("elif value.__class__ is not str and value.__class__ is not int:"):
            code.line(f"{leaves}(value, floats)")


def _typing_code(
    code: Source, kind: ValueType | None, coerce: str, separator: str, floats: bool = False
) -> None:
    """The line typing ``value`` with ``coerce`` (``values.COERCIONS[kind]``); for the
    common values of a type, the steps the coercion takes for them written out instead
    (no call, or one C call): the same value, and anything else goes to ``coerce``.
    ``floats``: the typed value's floats appended to ``floats`` (see ``_field_code``)."""
    typing = f"value = {coerce}(value, {separator!r})"

    def typed(kind: ValueType | None) -> None:
        if floats and (kind == "list" or kind == "json"):  # ``jsonable`` told ``floats``
            code.line(f"value = {coerce}(value, {separator!r}, floats)")
        else:
            code.line(typing)
            if floats:
                _floats_code(code, kind)

    exact = f"-{EXACT_INTEGER} <= value <= {EXACT_INTEGER}"
    if kind == "number" and separator == ".":  # ``_to_number``: a price's text remembered
        number = code.name_of(plain_number, "plain_number")
        with code.block(f"if value.__class__ is str and (number := {number}(value)) is not None:"):
            code.line("value = number")
        with code.block(f"elif value.__class__ is not int or not {exact}:"):
            code.line(typing)
        if floats:  # an int or a float, whichever way it was typed
            _floats_code(code, "number")
    elif kind == "integer":  # ``_to_integer``: an exact int as it is
        with code.block(f"if value.__class__ is not int or not {exact}:"):
            code.line(typing)
    elif kind == "list":  # ``_to_list``: a list copied, its texts as they are (``jsonable``)
        with code.block("if value.__class__ is list:"):
            code.line("value = list(value)")
            loop, other = "for item in value:", "if item.__class__ is not str:"
            with code.block(loop), code.block(other):
                code.line(f"value = {_jsonable_call(code, floats)}")
                code.line("break")
        with code.block("else:"):
            typed(kind)
    elif kind == "json":  # ``_parse_json``: what is not a text is made JSON data
        with code.block("if value.__class__ is dict:"):
            code.line(f"value = {_jsonable_call(code, floats)}")
        with code.block("else:"):
            typed(kind)
    else:
        typed(kind)


def _coerced_code(
    code: Source,
    spec: FieldSpec,
    coerce: str,
    required: bool,
    use: Callable[[], None],
    problem: str,
    missing: str,
    cut: str | None = None,
    keeps_text: bool = False,
    kind: ValueType | None = None,
    floats: bool = False,
) -> None:
    """The lines typing ``value`` with ``coerce`` (then cutting a text with ``cut``), using
    it unless it is missing, and turning a ``RecordError`` into the field's problem;
    ``keeps_text``: ``coerce`` gives a ``str`` back as it is, so a text skips the call;
    ``kind``: the type ``coerce`` is of, whose common values skip it (``_typing_code``);
    ``floats``: see ``_field_code`` (``kind`` None: ``coerce`` may give any JSON data)."""
    with code.block("try:"):
        if keeps_text:
            with code.block("if value.__class__ is not str:"):
                code.line(f"value = {coerce}(value, {spec.decimal_separator!r})")
                if floats:
                    _floats_code(code, kind)
        else:
            _typing_code(code, kind, coerce, spec.decimal_separator, floats)
        if cut is not None:  # a text no longer than the limit is kept whole: no call
            with code.block(f"if value.__class__ is str and len(value) > {spec.max_length!r}:"):
                code.line(f"value = {cut}(value, {spec.max_length!r})")
        with code.block("if value is not MISSING:"):
            use()
        if required:
            with code.block("else:"):
                code.line(missing)
    with code.block("except RecordError as exc:"):
        code.line(problem)


def _is_html(spec: FieldSpec) -> bool:
    """Whether ``spec`` is a record key's HTML as text, perhaps cut and typed, and no more."""
    return (
        spec.html
        and spec.path is not None
        and "." not in spec.path
        and spec.const is None
        and spec.template is None
        and not spec.fallback
        and spec.default is None
        and spec.index is None
        and spec.trim is True
        and _unpacking(spec) is None
    )


def _html_field_code(
    code: Source,
    spec: FieldSpec,
    kind: ValueType | None,
    required: bool,
    raw: bool,
    use: Callable[[], None],
    problem: str,
    missing: str,
    floats: bool = False,
) -> None:
    """``_field_code`` of an ``_is_html`` spec: ``compile_field``'s general steps for it
    (the text converted, blank text missing, the value typed, then cut), written out
    (``floats``: see ``_field_code``)."""
    html, hole = code.name_of(_html_text, "html_text"), code.name_of(_Hole, "hole")
    coerce = code.name_of(_coercion(kind, raw), "coerce")
    code.line(f"value = get({spec.path!r})")
    with code.block("if value.__class__ is str:"):
        code.line(f"value = {html}(value)")
        with code.block("if not value or value.isspace():"):
            code.line("value = None")
    with code.block(f"elif value.__class__ is {hole}:"):
        code.line("value = None")
    with code.block("if value is None:"):
        code.line(missing if required else "pass")
    cut = None if spec.max_length is None else code.name_of(truncate_words, "truncate_words")
    # untyped (``as_it_is``, ``jsonable``) or a string (``stringify``): a text as it is
    keeps_text = kind is None or kind == "string"
    with code.block("else:"):
        _coerced_code(
            code, spec, coerce, required, use, problem, missing, cut, keeps_text, floats=floats
        )


_CODE_NAMES: dict[str, Any] = {"MISSING": MISSING, "RecordError": RecordError}
"""What every generated ``map`` uses besides the objects it names (``Source.name_of``)."""


# --------------------------------------------------------------------------------------
# Mappers: one per target kind
# --------------------------------------------------------------------------------------


def _key_text(value: Any) -> str:
    """The product key of a mapped value, by ``values.key_text``'s rules.

    A key refused for invisible characters keeps its visible twin in ``RecordError.key``
    (so the reconciler keeps that product); every other refusal has no key.
    """
    if value is MISSING:
        raise RecordError("missing key")
    if isinstance(value, (dict, list, tuple)):
        raise RecordError(f"the key must be a single value, not {show(value)}")
    key = key_text(value)
    if not key:
        raise RecordError("missing key")
    if len(key) > MAX_KEY_LENGTH:
        raise RecordError(f"key longer than {MAX_KEY_LENGTH} characters ({len(key)})")
    return key


def _key_of(field: FieldFn, record: Record, label: str) -> str:
    try:
        return _key_text(field(record))
    except RecordError as exc:
        key = exc.key if exc.key and len(exc.key) <= MAX_KEY_LENGTH else None
        also = tuple(k for k in exc.also_keys if len(k) <= MAX_KEY_LENGTH)
        raise RecordError(exc.reason, key=key, field=label, also_keys=also) from None


def _key_or_problem(
    field: FieldFn, record: Record, label: str, problems: list[tuple[str, str]]
) -> tuple[str, RecordError | None]:
    """The record's key; when it is refused, ``""`` and the refusal, noted in ``problems``
    (the other fields are still read, so one rejection lists every problem)."""
    try:
        return _key_of(field, record, label), None
    except RecordError as exc:
        problems.append((label, exc.reason))
        return "", exc


def _key_code(code: Source, field: FieldFn, spec: FieldSpec, label: str) -> None:
    """The lines setting ``key`` and ``refused`` as ``_key_or_problem`` does (expects
    ``get`` and ``problems``). A key that only reads a record key and is printable ASCII
    text is taken inline: ``key_text`` leaves such a text as it is, stripped, so only
    when it is empty or too long (or any other value) does the call decide."""
    field_name = code.name_of(field, "field")
    call = f"key, refused = _key_or_problem({field_name}, record, {label!r}, problems)"
    code.namespace["_key_or_problem"] = _key_or_problem
    path = plain_path(spec)
    if path is None:
        code.line(call)
        return
    code.line(f"key = get({path!r})")
    common = "key.__class__ is str and key.isascii() and key.isprintable()"
    with code.block(f"if {common} and 0 < len(key := key.strip()) <= {MAX_KEY_LENGTH}:"):
        code.line("refused = None")
    with code.block("else:"):
        code.line(call)


def _refusal(problems: list[tuple[str, str]], key: str, refused: RecordError | None) -> RecordError:
    """One ``RecordError`` listing every failing field; a refused key keeps its visible
    twin and other forms (``RecordError.key``, ``also_keys``)."""
    if refused is not None:
        return record_error(problems, key=refused.key, also_keys=refused.also_keys)
    return record_error(problems, key=key)


def _import_hook(ref: str | None, target: str) -> Hook | None:
    if ref is None:
        return None
    where = f"target {target!r} mapping.callable"
    module_name, colon, attribute = ref.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError([ConfigProblem(where, f"expected 'module:function', got {ref!r}")])
    try:
        found: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            found = getattr(found, name)
    except Exception as exc:
        raise ConfigError(
            [ConfigProblem(where, f"cannot import {ref!r} ({type(exc).__name__}: {exc})")]
        ) from exc
    if not callable(found):
        raise ConfigError([ConfigProblem(where, f"{ref!r} is not callable")])
    return found  # type: ignore[no-any-return]


def _hook_name(hook: Hook) -> str:
    module = getattr(hook, "__module__", None) or "?"
    name = getattr(hook, "__qualname__", None) or type(hook).__name__
    return f"{module}:{name}"


def _hook_failure(hook: Hook, exc: BaseException, key: str) -> str:
    """Why a hook failed: its name, the file and line the exception came from (the last
    frame in the hook's own file, else the innermost), and the exception; the whole
    traceback is logged at debug level."""
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # [0] is _run_hook's call
    code = getattr(hook, "__code__", None)  # a plain function; else the innermost frame
    own = [f for f in frames if code is not None and f.filename == code.co_filename]
    chosen = own or frames
    where = f" at {chosen[-1].filename}:{chosen[-1].lineno}" if chosen else ""
    name = _hook_name(hook)
    log.debug(
        "syncd.mapping.hook_failed",
        hook=name,
        key=key,
        traceback="".join(traceback.format_exception(exc)),
    )
    return f"mapping.callable {name} raised {type(exc).__name__}: {exc}{where}"


def _run_hook(hook: Hook, record: Record, payload: Payload, key: str, key_field: str) -> Payload:
    """Call the escape hatch; its result is made JSON-compatible and its key re-read.

    ``RecordError`` and ``ValueError`` are the hook's way to reject a record (their
    message is the reason); any other exception rejects the record too, with the hook's
    name, file and line (``_hook_failure``), and never stops the run."""
    try:
        result = hook(record, payload)
    except RecordError as exc:
        raise RecordError(exc.reason, key=key, field=exc.field) from None
    except ValueError as exc:
        raise RecordError(str(exc) or "rejected by mapping.callable", key=key) from None
    except Exception as exc:
        raise RecordError(_hook_failure(hook, exc, key), key=key) from None
    if not isinstance(result, dict):
        raise RecordError(f"mapping.callable returned {type(result).__name__}, not a dict", key=key)
    try:
        result = jsonable(result)
    except RecordError as exc:
        raise RecordError(f"mapping.callable returned {exc.reason}", key=key) from None
    try:
        result[key_field] = _key_text(result.get(key_field, MISSING))
    except RecordError as exc:
        raise RecordError(
            exc.reason, key=exc.key or key, field=key_field, also_keys=exc.also_keys
        ) from None
    return result  # type: ignore[no-any-return]


def _encoded(
    key: str, payload: Payload, floats: Collection[Any] | None = None, finite: bool = False
) -> Encoded:
    """The key, payload and canonical bytes a document is made of (``Mapper.encode``);
    ``RecordError`` for a payload that is not JSON (``floats``, ``finite``: see
    ``canonical_json``)."""
    try:
        return key, payload, canonical_json(payload, floats, finite)
    except (TypeError, ValueError) as exc:  # a last guard: the mapping already checked
        raise RecordError(f"payload is not JSON: {exc}", key=key) from None


def _document(
    key: str, payload: Payload, floats: Collection[Any] | None = None, finite: bool = False
) -> Document:
    """The document of ``_encoded``'s parts, its dict kept (``Mapper.map``)."""
    _, _, canonical = _encoded(key, payload, floats, finite)
    return Document(key, canonical, payload_hash(canonical), None, payload)


def _compile(problems: list[ConfigProblem], where: str, spec: FieldSpec, **options: Any) -> FieldFn:
    try:
        return compile_field(spec, **options)
    except ValueError as exc:
        problems.append(ConfigProblem(where, str(exc)))
        return _plain_value  # never called: the build raises


class UserfluxMapper:
    """Records → UserFlux products: ``{"id", "typeId", "properties", "aiPropertyOverrides"}``.

    ``map`` is generated from the mapping once (``code``, ``syncd.codegen``): one flat
    function, each field's steps written out; ``interpret`` is the same mapping read
    from tuples of fields for every record, the reference ``map`` is tested against.
    """

    __slots__ = (
        "_flat",
        "_hook",
        "_key",
        "_nested",
        "_overrides",
        "_type_id",
        "code",
        "encode",
        "map",
        "well_formed",
    )

    map: Callable[[Record], Document]
    """The record's document; raise ``RecordError`` when it can't be mapped."""

    def __init__(self, target: UserfluxTargetConfig, source_key: str) -> None:
        mapping = target.mapping
        where = f"target {target.name!r} mapping"
        problems: list[ConfigProblem] = []
        key = mapping.key or FieldSpec(path=source_key)
        self._key = _compile(problems, f"{where}.key", key)
        self._type_id = target.type_id
        names = set(mapping.properties)
        flat, nested = [], []
        for name, spec in mapping.properties.items():
            parts = name.split(".")
            if not all(parts):
                problems.append(ConfigProblem(f"{where}.properties", f"bad name {name!r}"))
            for end in range(1, len(parts)):
                if ".".join(parts[:end]) in names:
                    problems.append(
                        ConfigProblem(
                            f"{where}.properties",
                            f"{'.'.join(parts[:end])!r} and {name!r} collide: "
                            "a property can't be a value and an object at once",
                        )
                    )
            field = _compile(problems, f"{where}.properties.{name}", spec)
            if len(parts) == 1:
                flat.append((f"properties.{name}", name, field, spec))
            else:
                nested.append((f"properties.{name}", tuple(parts[:-1]), parts[-1], field, spec))
        self._flat = tuple(flat)
        self._nested = tuple(nested)
        self._overrides = tuple(
            (
                f"aiPropertyOverrides.{name}",
                name,
                _compile(problems, f"{where}.ai_property_overrides.{name}", spec),
                spec,
            )
            for name, spec in mapping.ai_property_overrides.items()
        )
        if problems:
            raise ConfigError(problems)
        self._hook = _import_hook(mapping.callable, target.name)
        # ``properties`` (and ``aiPropertyOverrides`` when there are any) are dicts made
        # here: a hook may return anything there
        self.well_formed = frozenset() if self._hook is not None else WELL_FORMED_PRODUCT
        self.code = self._code(key)
        self.map = self.code.compile(f"UserfluxMapper {target.name}", out=_document)
        self.encode = self.code.compile(f"UserfluxMapper {target.name}", out=_encoded)

    def _code(self, key: FieldSpec) -> Source:
        """``map``'s lines: ``interpret``'s steps for this mapping (``key`` its key's spec),
        written out."""
        code = Source("map", "record", _CODE_NAMES)
        finish = code.name_of(self._finish, "finish")
        # Without a hook, every float the payload holds is noted as its field is read
        # (``floats``, see ``_field_code``): ``canonical_json`` then checks those instead of
        # searching its ~1.2 KB of text for ``0.0000`` and ``e-`` (~2.2 of its 4.9 µs a
        # benchmark payload). A hook may put anything anywhere: its payload's text is searched.
        floats = self._hook is None
        code.line("problems = []")
        code.line("get = record.get")
        if floats:
            code.line("floats = []")
        _key_code(code, self._key, key, "id")
        code.line("properties = {}")
        for label, name, field, spec in self._flat:
            code.line(f"# {label!r}")
            _field_code(
                code,
                field,
                spec,
                label,
                partial(code.line, f"properties[{name!r}] = value"),
                floats=floats,
            )

        def nest(parents: tuple[str, ...], leaf: str) -> None:
            code.line("node = properties")
            for parent in parents:
                code.line(f"child = node.get({parent!r})")
                with code.block("if child is None:"):
                    code.line(f"child = node[{parent!r}] = {{}}")
                code.line("node = child")
            code.line(f"node[{leaf!r}] = value")

        for label, parents, leaf, field, spec in self._nested:
            code.line(f"# {label!r}")
            _field_code(code, field, spec, label, partial(nest, parents, leaf), floats=floats)
        code.line("overrides = {}")
        for label, name, field, spec in self._overrides:
            code.line(f"# {label!r}")
            _field_code(
                code,
                field,
                spec,
                label,
                partial(code.line, f"overrides[{name!r}] = value"),
                floats=floats,
            )
        if self._hook is not None:
            code.line(
                f"return {finish}(record, key, refused, problems, properties, overrides, out)"
            )
            return code
        # ``_finish`` without a hook, written out: no call of seven arguments; the key and
        # the type are texts, so ``floats`` holds every float of the payload
        refusal = code.name_of(_refusal, "refusal")
        with code.block("if problems:"):
            code.line(f"raise {refusal}(problems, key, refused)")
        code.line(f"payload = {{'id': key, 'typeId': {self._type_id!r}, 'properties': properties}}")
        with code.block("if overrides:"):
            code.line("payload['aiPropertyOverrides'] = overrides")
        code.line("return out(key, payload, floats)")
        return code

    def interpret(self, record: Record) -> Document:
        """What ``map`` gives, the fields read from tuples: the reference for ``map``."""
        problems: list[tuple[str, str]] = []
        key, refused = _key_or_problem(self._key, record, "id", problems)
        properties: dict[str, Any] = {}
        for label, name, field, _ in self._flat:
            try:
                value = field(record)
            except RecordError as exc:
                problems.append((label, exc.reason))
                continue
            if value is not MISSING:
                properties[name] = value
        for label, parents, leaf, field, _ in self._nested:
            try:
                value = field(record)
            except RecordError as exc:
                problems.append((label, exc.reason))
                continue
            if value is MISSING:
                continue
            node = properties
            for parent in parents:
                child = node.get(parent)
                if child is None:
                    child = node[parent] = {}
                node = child
            node[leaf] = value
        overrides = {}
        for label, name, field, _ in self._overrides:
            try:
                value = field(record)
            except RecordError as exc:
                problems.append((label, exc.reason))
                continue
            if value is not MISSING:
                overrides[name] = value
        return self._finish(record, key, refused, problems, properties, overrides, _document)

    def _finish(
        self,
        record: Record,
        key: str,
        refused: RecordError | None,
        problems: list[tuple[str, str]],
        properties: dict[str, Any],
        overrides: dict[str, Any],
        out: Callable[[str, Payload, tuple[Any, ...] | None, bool], _Out],
    ) -> _Out:
        """The document of the fields found (or the record's refusal), the hook run:
        ``out`` (``_document``, ``_encoded``) makes it of the key, payload and floats (all
        finite: ``jsonable`` and the typed coercions refuse the others, in what a hook
        returns too). ``map`` writes the same steps out when there is no hook, and tells
        ``out`` the floats it noted (``_field_code``) rather than that they are finite."""
        if problems:
            raise _refusal(problems, key, refused)
        payload: Payload = {"id": key, "typeId": self._type_id, "properties": properties}
        if overrides:
            payload["aiPropertyOverrides"] = overrides
        if self._hook is not None:
            payload = _run_hook(self._hook, record, payload, key, "id")
            if not isinstance(payload.get("properties"), dict):
                raise RecordError("must be an object", key=payload["id"], field="properties")
            if payload.get("aiPropertyOverrides") == {}:
                del payload["aiPropertyOverrides"]
        return out(payload["id"], payload, None, True)


def _constant_text(field: FieldFn, spec: FieldSpec) -> str | None:
    """The text ``field`` gives every record when ``spec`` is a non-blank ``const`` (then
    only the const is read, ``compile_field`` works it out once); None for any other."""
    const = spec.const
    if (
        const is None
        or spec.path is not None
        or spec.template is not None
        or (isinstance(const, str) and not const.strip())
    ):
        return None
    try:
        value = field({})
    except RecordError:
        return None
    return value if value.__class__ is str else None


def _flatten(out: list[dict[str, str]], label: str, value: Any, depth: int = 0) -> None:
    """Append ``value`` as metadata pairs; nested values under dotted keys, dict keys sorted."""
    kind = value.__class__
    if kind is str:
        if value and not value.isspace():
            out.append({"key": label, "value": value})
    elif kind is int or kind is float or kind is bool:
        out.append({"key": label, "value": stringify(value)})
    elif kind is dict or kind is list or kind is tuple or isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            raise RecordError(f"nested deeper than {MAX_DEPTH} levels")
        # the positions of a list, the keys of a dict sorted (by their text when they don't
        # compare, a Mapping with mixed keys); each item is then looked up by its name
        names: Any
        if kind is list or kind is tuple:
            names = range(len(value))
        else:
            try:
                names = sorted(value)
            except TypeError:
                names = sorted(value, key=str)
        for name in names:
            item = value[name]
            leaf = item.__class__
            if leaf is str:  # the common leaves, without a call
                if item and not item.isspace():
                    out.append({"key": f"{label}.{name}", "value": item})
            elif leaf is int:
                out.append({"key": f"{label}.{name}", "value": str(item)})
            elif leaf is float and item - item == 0.0 and not item.is_integer():
                # what ``stringify`` gives a finite (``_finite``'s test), fractional float
                out.append({"key": f"{label}.{name}", "value": repr(item)})
            elif item is not None:
                _flatten(out, f"{label}.{name}", item, depth + 1)
    elif value is not None:
        out.append({"key": label, "value": stringify(value)})


_LIST_KEYS = 16
"""The positions of a list whose metadata keys (``tags.0``) a Vambe ``map`` holds written
out: a longer list is flattened by ``_flatten``."""


def _flatten_code(code: Source, name: str) -> None:
    """The lines appending ``value`` (not None) to ``metadata`` as ``_flatten(metadata,
    name, value)`` does. The common shapes are flattened inline, their text items
    appended without a call: a list (at most ``_LIST_KEYS`` items, their keys written
    once) and a dict; any other value, and an item that is not text, is ``_flatten``'s."""
    flatten = code.name_of(_flatten, "flatten")
    keys = code.name_of(tuple(f"{name}.{position}" for position in range(_LIST_KEYS)), "keys")
    label = code.name_of(name, "label")

    def item(item_key: str) -> None:
        text = code.block("if item.__class__ is str:")
        with text, code.block("if item and not item.isspace():"):
            code.line(f"metadata.append({{'key': {item_key}, 'value': item}})")
        with code.block("elif item is not None:"):
            code.line(f"{flatten}(metadata, {item_key}, item, 1)")

    code.line("kind = value.__class__")
    short_list = code.block(f"if kind is list and len(value) <= {_LIST_KEYS}:")
    with short_list, code.block(f"for item_key, item in zip({keys}, value):"):
        item("item_key")
    with code.block("elif kind is dict:"):
        with code.block("try:"):
            code.line("names = sorted(value)")
        with code.block("except TypeError:"):
            code.line("names = sorted(value, key=str)")
        with code.block("for name in names:"):
            code.line("item = value[name]")
            item(f"f'{{{label}}}.{{name}}'")
    with code.block("else:"):
        code.line(f"{flatten}(metadata, {name!r}, value)")


class VambeMapper:
    """Records → Vambe products (``external_id``, ``name``, ``price``, ``metadata``, ...).

    The contract's rules (price > 0, currency list, description length) are checked
    by the Vambe target; here the values are found, cleaned and typed, and a product
    without name, description, price or currency is rejected as missing them. ``map``
    is generated once, ``interpret`` its reference (see ``UserfluxMapper``).
    """

    __slots__ = (
        "_fields",
        "_hook",
        "_key",
        "_metadata",
        "_optional",
        "_type",
        "code",
        "encode",
        "map",
        "well_formed",
    )

    map: Callable[[Record], Document]
    """The record's document; raise ``RecordError`` when it can't be mapped."""

    def __init__(self, target: VambeTargetConfig, source_key: str) -> None:
        mapping = target.mapping
        where = f"target {target.name!r} mapping"
        problems: list[ConfigProblem] = []
        key = mapping.key or FieldSpec(path=source_key)
        self._key = _compile(problems, f"{where}.key", key)
        self._type = target.product_type
        specs: dict[str, tuple[FieldSpec, ValueType]] = {
            "name": (mapping.name, "string"),
            "description": (mapping.description, "string"),
            "price": (mapping.price, "number"),
            "currency": (mapping.currency, "string"),
        }
        self._fields = tuple(
            (
                name,
                _compile(problems, f"{where}.{name}", spec, type=kind, required=True),
                spec,
                kind,
            )
            for name, (spec, kind) in specs.items()
        )
        self._optional = tuple(
            (name, _compile(problems, f"{where}.{name}", spec, type="string"), spec)
            for name, spec in (("file_url", mapping.file_url), ("sku", mapping.sku))
            if spec is not None
        )
        metadata = mapping.metadata
        pairs = (
            [(path, FieldSpec(path=path)) for path in metadata]
            if isinstance(metadata, list)
            else list(metadata.items())
        )
        self._metadata = tuple(
            (
                f"metadata.{label}",
                label,
                _compile(problems, f"{where}.metadata.{label}", spec, raw=True),
                spec,
            )
            for label, spec in pairs
        )
        if problems:
            raise ConfigError(problems)
        self._hook = _import_hook(mapping.callable, target.name)
        # ``metadata`` is built here alone, of ``{"key": str, "value": str}`` items
        # (``_flatten``, or a text appended as it is): a hook may return anything there
        self.well_formed = frozenset() if self._hook is not None else WELL_FORMED_METADATA
        self.code = self._code(key)
        self.map = self.code.compile(f"VambeMapper {target.name}", out=_document)
        self.encode = self.code.compile(f"VambeMapper {target.name}", out=_encoded)

    def _code(self, key: FieldSpec) -> Source:
        """``map``'s lines: ``interpret``'s steps for this mapping (``key`` its key's spec),
        written out."""
        code = Source("map", "record", _CODE_NAMES)
        finish = code.name_of(self._finish, "finish")
        code.namespace["stringify"] = stringify
        code.line("problems = []")
        code.line("get = record.get")
        _key_code(code, self._key, key, "external_id")
        code.line("payload = {'external_id': key}")

        def required(label: str) -> None:
            if label != "price":
                with code.block("if value.__class__ is not str:"):
                    code.line("value = stringify(value)")
            code.line(f"payload[{label!r}] = value")

        for label, field, spec, kind in self._fields:
            code.line(f"# {label!r}")
            constant = _constant_text(field, spec)
            if constant is not None:  # ``currency = { const = "USD" }``: written in
                code.line(f"payload[{label!r}] = {constant!r}")
                continue
            _field_code(
                code, field, spec, label, partial(required, label), type=kind, required=True
            )
        for label, field, spec in self._optional:
            code.line(f"# {label!r}")
            _field_code(
                code,
                field,
                spec,
                label,
                partial(
                    code.line,
                    f"payload[{label!r}] = value if value.__class__ is str else stringify(value)",
                ),
                type="string",
            )
        code.line("metadata = []")
        for label, name, field, spec in self._metadata:
            code.line(f"# {label!r}")
            _field_code(
                code,
                field,
                spec,
                label,
                partial(_flatten_code, code, name),
                use_text=partial(
                    code.line, f"metadata.append({{'key': {name!r}, 'value': value}})"
                ),
                raw=True,
            )
        code.line(f"return {finish}(record, key, refused, problems, payload, metadata, out)")
        return code

    def interpret(self, record: Record) -> Document:
        """What ``map`` gives, the fields read from tuples: the reference for ``map``."""
        problems: list[tuple[str, str]] = []
        key, refused = _key_or_problem(self._key, record, "external_id", problems)
        payload: Payload = {"external_id": key}
        for label, field, _, _ in self._fields:
            try:
                value = field(record)
                if label != "price" and value.__class__ is not str:
                    value = stringify(value)
                payload[label] = value
            except RecordError as exc:
                problems.append((label, exc.reason))
        for label, field, _ in self._optional:
            try:
                value = field(record)
                if value is not MISSING:
                    payload[label] = value if value.__class__ is str else stringify(value)
            except RecordError as exc:
                problems.append((label, exc.reason))
        metadata: list[dict[str, str]] = []
        for label, name, field, _ in self._metadata:
            try:
                value = field(record)
                if value is not MISSING:
                    _flatten(metadata, name, value)
            except RecordError as exc:
                problems.append((label, exc.reason))
        return self._finish(record, key, refused, problems, payload, metadata, _document)

    def _finish(
        self,
        record: Record,
        key: str,
        refused: RecordError | None,
        problems: list[tuple[str, str]],
        payload: Payload,
        metadata: list[dict[str, str]],
        out: Callable[[str, Payload, tuple[Any, ...] | None], _Out],
    ) -> _Out:
        """The document of the fields found (or the record's refusal), the hook run:
        ``out`` (``_document``, ``_encoded``) makes it of the key, payload and floats."""
        if problems:
            raise _refusal(problems, key, refused)
        payload["currency"] = payload["currency"].upper()
        payload["type"] = self._type
        payload["metadata"] = metadata
        if self._hook is not None:
            payload = _run_hook(self._hook, record, payload, key, "external_id")
            return out(payload["external_id"], payload, None)
        # every other field is made a string, and metadata's values are strings
        # (``_flatten``): a number price is the only float to check. A price typed ``list``
        # or ``json`` (refused by the contract) may hold floats anywhere: its text is searched
        price = payload["price"]
        floats = (price,) if price.__class__ is float or price.__class__ is int else None
        return out(payload["external_id"], payload, floats)


def build_mapper(target: UserfluxTargetConfig | VambeTargetConfig, source_key: str) -> Mapper:
    """The mapper of ``target``, compiled once; ``ConfigError`` when the mapping is unusable
    (colliding property names, a bad template, a callable that can't be imported).
    """
    if isinstance(target, UserfluxTargetConfig):
        return UserfluxMapper(target, source_key)
    return VambeMapper(target, source_key)
