"""The mappers' generated ``map`` gives what ``interpret`` (the fields read from tuples)
gives, over generated mappings and records; its text can be read, and a config's names
stay quoted in it."""

from __future__ import annotations

import math
import traceback
from collections import Counter
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench import catalog
from syncd.codegen import SHOW_CODE_ENV, source_of
from syncd.config import UserfluxTargetConfig, VambeTargetConfig
from syncd.errors import ConfigError, RecordError
from syncd.mapping import UserfluxMapper, VambeMapper, _flatten, build_mapper
from syncd.model import Document, canonical_json
from syncd.values import stringify
from tests.test_fast_paths import _bench_config, _reference_json

_KEYS = ["id", "title", "price", "tags", "attrs", "desc", "stock", "a.b", "flag"]
"""The record keys generated records use (``a.b`` a key with a dot in its name)."""

_VALUES = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "  x ", "19.90", "1,234.50", "12", "abc", "<p>Hi</p> <b>x</b>"]),
    st.sampled_from(["USD", "usd", "yes", "0", "a, b | c", "\u200bK", "\t"]),
    st.sampled_from(["k" * 513, f" {'k' * 512}\t", f" {'k' * 512} ", "caf\u00e9"]),  # keys
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53 + 1, 0, True, False, 1.5, -0.0, 1e-7, math.nan, math.inf]),
    st.sampled_from([Decimal("2.50"), Decimal("1E+2"), b"bytes"]),
    st.lists(st.sampled_from(["x", " y ", "", None, 3, 2.5, {"k": "v"}]), max_size=3),
    st.dictionaries(
        st.sampled_from(["k", "color", "dims", "b"]),
        st.sampled_from(["v", "", 1, 2.25, None, [1, "two"], {"w": 1}]),
        max_size=3,
    ),
)

_SPECS = st.one_of(
    st.sampled_from(_KEYS),  # a plain path
    st.fixed_dictionaries(
        {"path": st.sampled_from([*_KEYS, "attrs.k", "tags.0"])},
        optional={
            "type": st.sampled_from(["string", "number", "integer", "boolean", "list", "json"]),
            "required": st.booleans(),
            "html": st.just(True),
            "max_length": st.sampled_from([3, 50]),
            "default": st.sampled_from(["n/a", "0"]),
            "fallback": st.just(["title"]),
            "decimal_separator": st.just(","),
            "trim": st.sampled_from([False, "*"]),
            "split": st.just(","),
        },
    ),
    st.fixed_dictionaries(  # HTML as text, perhaps typed and cut: written out inline
        {"path": st.sampled_from(["desc", "title", "price", "tags", "a.b"]), "html": st.just(True)},
        optional={
            "type": st.sampled_from(["string", "number", "json"]),
            "required": st.booleans(),
            "max_length": st.sampled_from([1, 3, 50]),
        },
    ),
    st.fixed_dictionaries({"const": st.sampled_from(["USD", "EUR", 5, True])}),
    st.fixed_dictionaries({"template": st.sampled_from(["{title} ({id})", "{price:.2f}"])}),
)


_RECORDS = st.lists(
    st.builds(
        lambda base, changed: {**base, **changed},
        st.fixed_dictionaries(
            {},
            optional={
                "id": st.sampled_from(["SKU-1", " k ", 7]),
                "title": st.just("T"),
                "desc": st.just("<p>D</p>"),
                "price": st.just("19.90"),
                "flag": st.just("usd"),
            },
        ),
        st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4),
    ),
    min_size=1,
    max_size=4,
)
"""Records, many with usable values for the fields most mappings read."""


def _mostly(usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four, else any spec."""
    return st.integers(0, 3).flatmap(lambda n: usual if n else _SPECS)


def _outcome(mapper: UserfluxMapper | VambeMapper, map_: Any, record: dict[str, Any]) -> Any:
    """A document as its key, canonical bytes and hash; a refusal as all it says."""
    try:
        document = map_(record)
    except RecordError as exc:
        return ("refused", str(exc), exc.key, exc.field, exc.also_keys)
    except Exception as exc:  # the same unexpected error from both is still the same
        return ("raised", type(exc).__name__, str(exc))
    return (document.key, document.canonical, document.hash)


def _same(mapper: UserfluxMapper | VambeMapper, record: dict[str, Any]) -> None:
    outcome = _outcome(mapper, mapper.map, record)
    assert outcome == _outcome(mapper, mapper.interpret, record)
    assert _outcome(mapper, partial(_encoded_document, mapper), record) == outcome


def _encoded_document(mapper: UserfluxMapper | VambeMapper, record: dict[str, Any]) -> Document:
    """The one document the planner makes of ``encode`` (checked against ``map``'s)."""
    key, payload, canonical = mapper.encode(record)
    document = Document.encoded(key, canonical, SOURCE_HASH)
    mapped = mapper.map(record)
    assert payload == mapped.payload and document == mapped.slim(SOURCE_HASH)
    assert document.decoded is None  # the plan holds bytes, not dicts
    return document


SOURCE_HASH = b"\x07" * 16
_PROPERTY_NAMES = st.sampled_from(
    ["name", "price", "tags", "d.html", "d.text", "x.y.z", "stock", "on"]
)
"""Property names of the generated mappings: plain, nested (``d.html``), deeper (``x.y.z``)."""
_OVERRIDE_NAMES = st.sampled_from(["name", "brand"])


@given(
    properties=st.dictionaries(_PROPERTY_NAMES, _SPECS, max_size=6),
    overrides=st.dictionaries(_OVERRIDE_NAMES, _SPECS, max_size=2),
    key=st.sampled_from([None, "id", {"path": "id", "type": "string"}, {"template": "{id}-x"}]),
    records=_RECORDS,
)
@settings(max_examples=300, deadline=None)
def test_the_generated_userflux_map_gives_what_the_interpreted_one_gives(
    properties: dict[str, Any],
    overrides: dict[str, Any],
    key: Any,
    records: list[dict[str, Any]],
) -> None:
    mapping: dict[str, Any] = {"properties": properties, "ai_property_overrides": overrides}
    if key is not None:
        mapping["key"] = key
    config = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "t", "mapping": mapping}
    )
    try:
        mapper = build_mapper(config, "id")
    except ConfigError:
        return  # colliding names, a bad const: refused before any code is generated
    assert isinstance(mapper, UserfluxMapper)
    for record in records:
        _same(mapper, record)


_TINY = st.sampled_from([1e-5, 1.5e-8, -1e-7, 5e-324, "1e-5", "0.00001", Decimal("1E-5")])
"""Values that are (or a type reads as) a float orjson writes otherwise than the standard
library: under 1e-4."""
_FLOAT_VALUES = st.one_of(
    _TINY,
    _VALUES,
    st.sampled_from([1e-4, 1e16, 1e22, -0.0, 0.0, 2.5, 2**64, "0,00001", "1e-05, 2.5", "3 | 1e-7"]),
    st.sampled_from(['{"a": 1e-7, "b": [1.5e-8, 2]}', "[1e-05, 2]", "[-0.0]", "[1e999]", "2e400"]),
    st.lists(
        st.one_of(_TINY, st.sampled_from([2.5, [1.5e-8], {"w": 1e-6}, None, "x"])), max_size=3
    ),
    st.dictionaries(
        st.sampled_from(["k", "w", "d"]),
        st.one_of(_TINY, st.sampled_from([2.5, -0.0, [1e-7, "x"], {"x": 1.5e-8}, "1e-5"])),
        max_size=3,
    ),
)
"""Record values that hold such floats anywhere: as numbers, in texts a type reads, in
lists and objects (and the values ``_VALUES`` has for every mapping)."""

_FLOAT_PATHS = st.sampled_from([*_KEYS[1:], "attrs.k", "attrs.d", "tags.0"])
_FLOAT_TYPES = st.sampled_from(["number", "integer", "list", "json", "string", "boolean"])
_TYPED = st.fixed_dictionaries(  # a typed path: written out inline
    {"path": _FLOAT_PATHS, "type": _FLOAT_TYPES},
    optional={"required": st.booleans(), "decimal_separator": st.just(",")},
)
_FLOAT_SPECS = st.one_of(
    _FLOAT_PATHS,  # a plain path (a dotted one: a call)
    _TYPED,
    _TYPED,
    st.fixed_dictionaries(  # HTML as text, perhaps typed: written out inline
        {"path": _FLOAT_PATHS, "html": st.just(True)},
        optional={"type": st.sampled_from(["string", "number", "json", "list"])},
    ),
    st.fixed_dictionaries(  # unpacked: a call
        {"path": _FLOAT_PATHS},
        optional={
            "type": _FLOAT_TYPES,
            "split": st.sampled_from([",", "|"]),
            "aggregate": st.sampled_from(["min", "max", "sum", "first", "last", "count"]),
            "pick": st.sampled_from(["w", "k", "d.x"]),
            "index": st.sampled_from([0, -1]),
            "required": st.booleans(),
        },
    ),
    st.fixed_dictionaries(
        {"const": st.sampled_from([1e-5, 2.5, -0.0, [1e-7, "x"], {"a": {"b": 1.5e-8}}, "1e-5"])},
        optional={"type": st.sampled_from(["number", "list", "json"])},
    ),
    st.fixed_dictionaries(
        {"path": _FLOAT_PATHS, "default": st.sampled_from([1e-5, [1e-6], {"d": 1.5e-8}])}
    ),
    st.fixed_dictionaries(
        {"template": st.just("{price}"), "type": st.sampled_from(["number", "json", "list"])}
    ),
)
"""Field specs whose values may hold such floats: every kind of field ``_field_code``
writes (a plain path, a typed one, HTML, unpacked, constant, defaulted, templated)."""


def _payload_and_floats(
    mapper: UserfluxMapper, record: dict[str, Any]
) -> tuple[dict[str, Any], Any] | None:
    """The payload a generated ``map`` hands its ``out`` and the floats it noted (None:
    the record is refused)."""
    handed: list[tuple[dict[str, Any], Any]] = []
    map_ = mapper.code.compile(
        "test", out=lambda _, payload, floats: handed.append((payload, floats))
    )
    try:
        map_(record)
    except RecordError:
        return None
    return handed[0]


def _float_texts(value: Any) -> Counter[str]:
    """Every float in ``value`` (at any depth), as a multiset of texts (``-0.0`` is not 0)."""
    if isinstance(value, dict):
        return sum((_float_texts(item) for item in value.values()), Counter())
    if isinstance(value, list | tuple):
        return sum((_float_texts(item) for item in value), Counter())
    return Counter([repr(value)] if isinstance(value, float) else [])


def _userflux(properties: dict[str, Any], overrides: dict[str, Any]) -> UserfluxMapper | None:
    """The mapper of these properties and overrides; None when the config is refused
    (options that don't go together, colliding names, a bad const)."""
    try:
        config = UserfluxTargetConfig.model_validate(
            {
                "kind": "userflux",
                "name": "uf",
                "api_key_env": "K",
                "type_id": "t",
                "mapping": {"properties": properties, "ai_property_overrides": overrides},
            }
        )
        mapper = build_mapper(config, "id")
    except (ValidationError, ConfigError):
        return None
    assert isinstance(mapper, UserfluxMapper)
    return mapper


def _floats_noted(mapper: UserfluxMapper, record: dict[str, Any]) -> dict[str, Any] | None:
    """Check that ``map`` notes every float of its payload, whose bytes are then those
    of the payload untold, the standard library's; the payload (None: refused)."""
    _same(mapper, record)
    handed = _payload_and_floats(mapper, record)
    if handed is None:
        return None
    payload, floats = handed
    assert floats is not None and _float_texts(payload) <= _float_texts(floats)
    assert canonical_json(payload, floats) == canonical_json(payload)
    assert canonical_json(payload) == _reference_json(payload)
    assert mapper.map(record).canonical == _reference_json(payload)
    return payload


@given(
    properties=st.dictionaries(_PROPERTY_NAMES, _FLOAT_SPECS, max_size=4),
    overrides=st.dictionaries(_OVERRIDE_NAMES, _FLOAT_SPECS, max_size=2),
    records=st.lists(
        st.fixed_dictionaries({"id": st.just("SKU-1")} | dict.fromkeys(_KEYS[1:], _FLOAT_VALUES)),
        min_size=1,
        max_size=4,
    ),
)
@settings(max_examples=500, deadline=None)
def test_a_userflux_map_notes_every_float_of_its_payload_whose_bytes_are_the_standard_librarys(
    properties: dict[str, Any], overrides: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    """Without a hook, ``map`` tells ``canonical_json`` the payload's floats instead of
    having its text searched: they are all there, so the bytes are those of the payload
    untold, which are the standard library's."""
    mapper = _userflux(properties, overrides)
    if mapper is None:
        return
    for record in records:
        _floats_noted(mapper, record)


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ("price", {"w": [1e-5]}),  # a plain path's value made JSON data: ``jsonable``
        ("attrs.k", 1e-5),  # a dotted path: a call
        ({"path": "price", "type": "number"}, "1e-5"),  # the coercion
        ({"path": "price", "type": "number"}, "0.00001"),  # ``plain_number``
        ({"path": "price", "type": "number"}, 1.5e-8),
        ({"path": "price", "type": "number", "decimal_separator": ","}, "0,00001"),
        ({"path": "price", "type": "list"}, [1e-5, "x"]),  # ``jsonable``
        ({"path": "price", "type": "list"}, 1e-5),  # the coercion
        ({"path": "price", "type": "json"}, {"a": {"b": 1e-7}}),  # ``jsonable``
        ({"path": "price", "type": "json"}, '{"a": [1e-7]}'),  # the coercion
        ({"path": "price", "type": "json"}, [1e-7]),
        ({"path": "price", "required": True}, {"w": 1e-5}),  # untyped, inline
        ({"path": "price", "html": True}, {"w": 1e-5}),  # HTML, a value not a text
        ({"path": "price", "html": True, "type": "number"}, "<b>1e-5</b>"),
        ({"path": "price", "split": ",", "type": "number"}, "1e-5, 2.5"),  # unpacked: a call
        ({"path": "price", "aggregate": "min"}, [1e-5, 2.5]),
        ({"const": 1e-5}, None),
        ({"const": {"a": [1e-7]}}, None),
        ({"path": "price", "default": 1e-5}, None),
        ({"template": "{price}", "type": "number"}, "1e-5"),
    ],
)
@pytest.mark.parametrize("where", ["property", "nested", "override"])
def test_a_userflux_map_notes_a_small_float_whatever_field_holds_it(
    spec: Any, value: Any, where: str
) -> None:
    """Each way ``_field_code`` writes a field, holding a float under 1e-4 (which orjson
    writes otherwise: ``0.00001``, not ``1e-05``)."""
    properties = {"name": "title"}
    overrides = {}
    if where == "override":
        overrides["o"] = spec
    else:
        properties["n.v" if where == "nested" else "v"] = spec
    mapper = _userflux(properties, overrides)
    assert mapper is not None
    payload = _floats_noted(
        mapper, {"id": "SKU-1", "title": "T", "price": value, "attrs": {"k": value}}
    )
    assert payload is not None
    assert any(0 < abs(float(text)) < 1e-4 for text in _float_texts(payload))


def test_a_userflux_map_with_a_hook_has_its_payloads_text_searched() -> None:
    """A hook may put floats anywhere: the generated ``map`` notes none."""
    config = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "t",
         "mapping": {"properties": {"p": {"path": "price", "type": "number"}},
                     "callable": "tests.test_mapping_code:_tiny_hook"}}
    )  # fmt: skip
    mapper = build_mapper(config, "id")
    assert isinstance(mapper, UserfluxMapper)
    assert "floats" not in mapper.code.text
    document = mapper.map({"id": "k", "price": "2.5"})
    assert document.payload["properties"] == {"p": 2.5, "tiny": 1e-5}
    assert document.canonical == _reference_json(document.payload)
    assert b'"tiny":1e-05' in document.canonical


def _tiny_hook(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    payload["properties"]["tiny"] = 1e-5
    return payload


@given(
    fields=st.fixed_dictionaries(
        {
            "name": _mostly(st.sampled_from(["title", "desc"])),
            "description": _mostly(st.just({"path": "desc", "html": True})),
            "price": _mostly(st.just("price")),
            "currency": _mostly(
                st.sampled_from([{"const": "USD"}, {"const": " eur "}, {"const": 3}, "flag"])
            ),
        },
        optional={"file_url": _SPECS, "sku": _SPECS},
    ),
    metadata=st.one_of(
        st.lists(st.sampled_from(_KEYS), max_size=4, unique=True),
        st.dictionaries(st.sampled_from(["brand", "size", "m"]), _SPECS, max_size=3),
    ),
    records=_RECORDS,
)
@settings(max_examples=300, deadline=None)
def test_the_generated_vambe_map_gives_what_the_interpreted_one_gives(
    fields: dict[str, Any], metadata: Any, records: list[dict[str, Any]]
) -> None:
    config = VambeTargetConfig.model_validate(
        {
            "kind": "vambe",
            "name": "vb",
            "api_key_env": "K",
            "block_id": "b-1",
            "mapping": {**fields, "metadata": metadata},
        }
    )
    try:
        mapper = build_mapper(config, "id")
    except ConfigError:
        return
    assert isinstance(mapper, VambeMapper)
    for record in records:
        _same(mapper, record)
        _canonical(mapper, record)


def _canonical(mapper: VambeMapper, record: dict[str, Any]) -> None:
    """A Vambe document's canonical bytes are the standard library's (``_finish`` checks
    only its price for what orjson writes otherwise: the payload's only float)."""
    try:
        document = mapper.map(record)
    except RecordError:
        return
    assert document.canonical == _reference_json(document.payload)


@pytest.mark.parametrize("price", ["0.00001", "0.000099", "1.5e-8", "1e-10", "0.0001", "12.5"])
def test_a_vambe_price_is_written_as_the_standard_library_writes_it(price: str) -> None:
    vambe = build_mapper(_bench_config().targets[1], "id")
    assert isinstance(vambe, VambeMapper)
    record = {**next(iter(catalog.products(1))), "price": price}
    _canonical(vambe, record)
    assert f'"price":{float(price)!r}'.encode() in vambe.map(record).canonical


@pytest.mark.parametrize(
    ("kind", "price"), [("list", [0.00001, 5.0]), ("json", {"amount": 1e-7}), ("json", [1.5e-8])]
)
def test_a_vambe_price_holding_floats_is_written_as_the_standard_library_writes_it(
    kind: str, price: Any
) -> None:
    """A price typed ``list`` or ``json`` (the contract refuses it, but its rejection is
    remembered by hash) is not the lone float ``_finish`` checks: its text is searched."""
    config = VambeTargetConfig.model_validate(
        {
            "kind": "vambe",
            "name": "vb",
            "api_key_env": "K",
            "block_id": "b-1",
            "mapping": {
                "name": "title",
                "description": "title",
                "price": {"path": "price", "type": kind},
                "currency": {"const": "USD"},
            },
        }
    )
    mapper = build_mapper(config, "id")
    assert isinstance(mapper, VambeMapper)
    document = mapper.map({"id": "A", "title": "T", "price": price})
    assert document.canonical == _reference_json(document.payload)


def test_the_generated_maps_give_the_interpreted_documents_of_the_benchmark() -> None:
    mappers = [build_mapper(target, "id") for target in _bench_config().targets]
    for record in catalog.products(2000):
        for mapper in mappers:
            assert isinstance(mapper, (UserfluxMapper, VambeMapper))
            _same(mapper, record)


def test_the_generated_code_can_be_read_and_names_each_field() -> None:
    userflux, vambe = (build_mapper(target, "id") for target in _bench_config().targets)
    assert isinstance(userflux, UserfluxMapper) and isinstance(vambe, VambeMapper)
    text = source_of(userflux.map)
    assert text == userflux.code.text
    assert text.startswith("def map(record):")
    assert "# 'properties.description.text'" in text
    assert "properties['brand'] = value" in text
    assert "# 'metadata.attributes'" in source_of(vambe.map)
    assert source_of(vambe.encode) == source_of(vambe.map)  # the same lines, ended two ways


def test_show_code_prints_each_generated_function(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(SHOW_CODE_ENV, "1")
    mapper = build_mapper(_bench_config().targets[0], "id")
    assert isinstance(mapper, UserfluxMapper)
    assert mapper.code.text in capsys.readouterr().err


def test_a_traceback_through_generated_code_shows_its_line() -> None:
    config = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "t",
         "mapping": {"properties": {"name": "title"}}}
    )  # fmt: skip
    mapper = build_mapper(config, "id")
    with pytest.raises(AttributeError) as caught:
        mapper.map(None)  # type: ignore[arg-type]
    lines = traceback.format_exception(caught.value)
    assert any(
        "<syncd-code-" in line and "record.get" in line for line in "".join(lines).split("\n\n")
    )


def test_names_from_the_config_stay_quoted_in_the_code() -> None:
    odd = "x'\n    import os  # \"\\"
    config = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "t",
         "mapping": {"properties": {odd: odd, f"n.{odd}": {"path": odd, "type": "string"}}}}
    )  # fmt: skip
    mapper = build_mapper(config, "id")
    assert isinstance(mapper, UserfluxMapper)
    document = mapper.map({"id": "k", odd: " v "})
    assert document.payload["properties"] == {odd: "v", "n": {odd: "v"}}
    assert "import os" not in [line.strip() for line in mapper.code.lines]


@pytest.mark.parametrize("text", ["abc", "ab cd", "abcd", "a b", "abc d", "<p>Hi</p> <b>x</b>"])
@pytest.mark.parametrize("kind", [None, "string"])
def test_an_html_text_is_cut_at_its_limit_as_interpreted(text: str, kind: str | None) -> None:
    spec = {"path": "desc", "html": True, "max_length": 3, "type": kind}
    config = UserfluxTargetConfig.model_validate(
        {"kind": "userflux", "name": "uf", "api_key_env": "K", "type_id": "t",
         "mapping": {"properties": {"d": spec}}}
    )  # fmt: skip
    mapper = build_mapper(config, "id")
    assert isinstance(mapper, UserfluxMapper)
    _same(mapper, {"id": "k", "desc": text})


def _flattened_the_long_way(label: str, value: Any) -> list[dict[str, str]]:
    """Vambe's metadata pairs of ``value``, by the rule ``_flatten`` follows."""
    if isinstance(value, str):
        return [{"key": label, "value": value}] if value and not value.isspace() else []
    if isinstance(value, list):
        items = list(enumerate(value))
    elif isinstance(value, dict):
        try:
            items = sorted(value.items(), key=lambda item: item[0])
        except TypeError:
            items = sorted(value.items(), key=lambda item: str(item[0]))
    else:
        return [] if value is None else [{"key": label, "value": stringify(value)}]
    return [
        pair for name, item in items for pair in _flattened_the_long_way(f"{label}.{name}", item)
    ]


_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", " ", "x", " y "]),
)
_NAMES = st.one_of(st.sampled_from(["b", "a", "B", "ä"]), st.integers(0, 2))  # mixed: by text
_NESTED = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=10,
)


@given(_NESTED)
def test_vambe_metadata_is_flattened_by_its_rule(value: Any) -> None:
    found: list[dict[str, str]] = []
    _flatten(found, "m", value)
    assert found == _flattened_the_long_way("m", value)


_INLINE = VambeTargetConfig.model_validate(
    {
        "kind": "vambe",
        "name": "vb",
        "api_key_env": "K",
        "block_id": "b-1",
        "mapping": {
            "name": "title",
            "description": "description",
            "price": "price",
            "currency": {"const": "USD"},
            "metadata": ["m", "n"],
        },
    }
)


@given(st.one_of(_NESTED, st.lists(_LEAVES, min_size=14, max_size=20), st.tuples(_LEAVES)))
@settings(max_examples=300, deadline=None)
def test_vambe_metadata_flattened_inline_is_flattened_by_its_rule(value: Any) -> None:
    """The generated ``map`` flattens a list (longer ones too) or a dict itself, not with
    ``_flatten`` (``_flatten_code``): the same pairs, in the same order."""
    mapper = build_mapper(_INLINE, "id")
    assert isinstance(mapper, VambeMapper)
    record = {"id": "A", "title": "T", "description": "D", "price": "1", "m": value, "n": value}
    mapped = mapper.map(record)
    assert mapped.payload == mapper.interpret(record).payload
    if not isinstance(value, str):
        assert mapped.payload["metadata"] == [
            *_flattened_the_long_way("m", list(value) if isinstance(value, tuple) else value),
            *_flattened_the_long_way("n", list(value) if isinstance(value, tuple) else value),
        ]
