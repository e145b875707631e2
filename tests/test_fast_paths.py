"""The fast paths of mapping give what the general ones give: HTML to text without the
parser, canonical JSON by orjson, and the mappers, over generated input and the
benchmark's catalog (the general path is the reference, kept in the package)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import struct
import tempfile
import unicodedata
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bench import catalog
from bench.config import ENV, write_config
from syncd import values
from syncd.config import SyncdConfig, load_config
from syncd.errors import RecordError
from syncd.mapping import WELL_FORMED_PRODUCT, build_mapper
from syncd.model import canonical_json
from syncd.targets.userflux import unsafe_segment
from syncd.text import _bare_html_text, _parsed_html_text, _simple_html_text, html_to_text


def _bench_config(tmp: Path | None = None) -> SyncdConfig:
    """The benchmark's config: its UserFlux and Vambe mappings use every kind of field."""
    folder = Path(tempfile.mkdtemp()) if tmp is None else tmp
    path = write_config(
        folder / "bench.toml",
        source="jsonl",
        location=str(folder / "catalog.jsonl"),
        state=folder / "state.db",
        userflux="http://127.0.0.1:9",
        vambe="http://127.0.0.1:9",
        block="block",
    )
    return load_config(path, ENV)


# --------------------------------------------------------------------------------------
# HTML to text
# --------------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    [
        "p", "P", "div", "li", "ul", "h2", "br", "BR", "b", "i", "span", "a", "td", "th",
        "tr", "table", "script", "style", "template", "noscript", "head", "textarea",
        "title", "hr", "img", "x-y", "h1", "em",
    ]
)  # fmt: skip
_ATTR_VALUES = st.sampled_from(
    [
        '"x"',
        "'y z'",
        "plain",
        '"a>b"',
        "'<'",
        "/path/",
        '""',
        "x/",
        '"&amp;"',
        "=x",
        "`v`",
        '"<p>"',
        "'<td>'",
        "<br>",
        '"\x00"',
    ]
)
_SPACES = st.sampled_from(["", " ", "  ", "\n", "\t", "\u00a0", "\f", "\r"])


@st.composite
def _tags(draw: st.DrawFn) -> str:
    name = draw(_NAMES)
    if draw(st.booleans()):
        return f"</{name}{draw(_SPACES)}>"
    attrs = "".join(
        f"{draw(st.sampled_from([' ', '  ', chr(10), chr(160)]))}"
        f"{draw(st.sampled_from(['class', 'href', 'data-x', 'on:y', 'ÄB', '1a']))}"
        f"{draw(st.sampled_from(['', '=', ' = ']))}"
        f"{draw(_ATTR_VALUES)}"
        for _ in range(draw(st.integers(0, 2)))
    )
    return f"<{name}{attrs}{draw(_SPACES)}{draw(st.sampled_from(['', '/']))}>"


_PIECES = [
    "Durable", " design ", "a  b", "\u2028", "\u00a0", "&amp;", "&lt;3", "&eacute;",
    "&#233;", "&#x2019;", "&bogus;", "&", "&amp", "5 < 6", "7 > 3", "<", "<!-- c -->",
    "<!DOCTYPE html>", "<?pi?>", "</ >", "<3", "\n\n", "&nbsp;", "x&#0;y", "é",
    '<a title="<p>">', "<a title='<td>'>", "<!-- <br> -->", "\x00", "\x01", "\x02", "&#1;",
    "&am", "p;", "&#23", "4;", "&", "#x41;", "\x1f", "<\u017fection>", "<SCRIPT>", "</p attr=1>",
    "\u00b6", "<<b>p>", "<b<i>>", "<P>", "</BR>", "<Td>", "<br>", "</br>", "<h2>", "</LI>",
]  # fmt: skip
_TEXT = st.one_of(st.sampled_from(_PIECES), st.text(max_size=6))


@given(st.lists(st.one_of(_tags(), _TEXT), max_size=14).map("".join))
@settings(max_examples=400, deadline=None)
def test_html_to_text_without_the_parser_gives_the_parsers_text(html: str) -> None:
    assert html_to_text(html) == _parsed_html_text(html)
    fast = _simple_html_text(html)
    assert fast is None or fast == _parsed_html_text(html)
    bare = _bare_html_text(html)
    assert bare is None or bare == _parsed_html_text(html)


_SIMPLE_NAMES = st.sampled_from(["p", "LI", "div", "br", "b", "td", "h2", "span", "ul"])
_SIMPLE_TEXT = st.sampled_from(
    ["Durable", " de sign ", "\u2028", "\u00a0", "&amp;", "&lt;3", "&#x2019;", "&bogus", "7 > 3"]
)


@given(
    st.lists(
        st.one_of(
            _SIMPLE_NAMES.map(lambda name: f"<{name}>"),
            _SIMPLE_NAMES.map(lambda name: f"</{name}>"),
            _SIMPLE_NAMES.map(lambda name: f'<{name} class="c" />'),
            _SIMPLE_TEXT,
        ),
        max_size=20,
    ).map("".join)
)
@settings(max_examples=200, deadline=None)
def test_simple_html_takes_the_fast_path(html: str) -> None:
    assert _simple_html_text(html) == _parsed_html_text(html)
    bare = _bare_html_text(html)
    assert bare is None or bare == _parsed_html_text(html)


_BARE_TEXT = st.sampled_from(
    ["Durable", " de sign ", "\u2028", "\u00a0", "7 > 3", "  ", "\n", "\t", "x\x85y", "¶", ""]
)


@given(
    st.lists(
        st.one_of(
            _SIMPLE_NAMES.map(lambda name: f"<{name}>"),
            _SIMPLE_NAMES.map(lambda name: f"</{name}>"),
            _BARE_TEXT,
            st.text(max_size=4),
        ),
        max_size=20,
    ).map("".join)
)
@settings(max_examples=300, deadline=None)
def test_bare_html_gives_the_parsers_text_without_a_step_per_tag(html: str) -> None:
    _bare_text_is_the_parsers(html)


def _bare_text_is_the_parsers(html: str) -> None:
    """``_bare_html_text`` gives the parser's text or leaves ``html`` to the other paths,
    and gives it whenever every ``<`` starts a bare tag and there is no entity."""
    bare = _bare_html_text(html)
    assert bare is None or bare == _parsed_html_text(html)
    text = re.sub(r"</?[a-zA-Z][a-zA-Z0-9]*>", "", html)
    if not any(char in text for char in "<&¶"):  # every "<" starts a tag, no entity
        assert bare == _parsed_html_text(html)


_BREAK_NAMES = st.sampled_from(["p", "P", "li", "LI", "ul", "h2", "div", "br", "BR", "Li", "tr"])
_CUT_TEXT = st.sampled_from(
    [
        "Durable", " ", "  ", "\n", "\u00a0", "¶", ">", "> ", "> p", "> /p", "<", "< p", "<p",
        "7 > 3", "é", "",
    ]
)  # fmt: skip


@given(
    st.lists(
        st.one_of(
            _BREAK_NAMES.map(lambda name: f"<{name}>"),
            _BREAK_NAMES.map(lambda name: f"</{name}>"),
            _SIMPLE_NAMES.map(lambda name: f"<{name}>"),
            _CUT_TEXT,
            st.text(alphabet="<>/p ¶\n", max_size=4),
        ),
        max_size=20,
    ).map("".join)
)
@settings(max_examples=400, deadline=None)
def test_bare_html_cut_at_its_brackets_gives_the_parsers_text(html: str) -> None:
    _bare_text_is_the_parsers(html)


@pytest.mark.parametrize(
    "html",
    [
        "a> p<b",  # as many ">" as "<", a text ">" before what looks like a tag name
        "x>p<y",
        "<p>a> /p<b</p>",
        "<li>7 > 3</li><li>¶ kept</li>",  # a ">" in the text; a mark in a line
        "<P>one</P>two<BR>three</br>four<Li>five",
        "<p>a  b</p>\n<p>\tc </p>",
    ],
)
def test_bare_html_whose_brackets_do_not_pair_up_gives_the_parsers_text(html: str) -> None:
    assert html_to_text(html) == _parsed_html_text(html)
    bare = _bare_html_text(html)
    assert bare is None or bare == _parsed_html_text(html)


def test_the_benchmark_descriptions_take_the_fast_path_and_give_the_parsers_text() -> None:
    for record in catalog.products(2000):
        html = record["description"]
        assert _simple_html_text(html) == _parsed_html_text(html) != ""
        assert _bare_html_text(html) == _parsed_html_text(html)


def test_html_the_fast_path_leaves_to_the_parser_is_still_converted() -> None:
    html = "<p>a <!-- no --> b</p><script>if (a < b) x()</script><p>5 < 6</p>"
    assert _simple_html_text(html) is None
    assert html_to_text(html) == "a b\n5 < 6"


# --------------------------------------------------------------------------------------
# Canonical JSON
# --------------------------------------------------------------------------------------


def _reference_json(payload: Any) -> bytes:
    """The canonical JSON as syncd wrote it before orjson (the standard library's)."""
    encoder = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return encoder.encode(payload).encode()


def _same_or_same_error(payload: Any) -> None:
    try:
        expected: bytes | type[BaseException] = _reference_json(payload)
    except (TypeError, ValueError) as exc:
        expected = type(exc)
    try:
        found: bytes | type[BaseException] = canonical_json(payload)
    except (TypeError, ValueError) as exc:
        found = type(exc)
    assert found == expected


_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", bits.to_bytes(8, "little"))[0]),
    st.sampled_from([1e-05, 1.5e-08, 1e-4, 1e16, 1e22, -0.0, 5e-324, 1.7976931348623157e308]),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    _FLOATS,
    st.text(),
    st.sampled_from(["0.00001", "1e-5", "null", "\ud800", "\u2028", "\x7f", "\x00\x1f"]),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(), st.booleans(), st.none()), inner, max_size=2),
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5))
@settings(max_examples=300, deadline=None)
def test_canonical_json_is_the_standard_librarys_byte_for_byte(payload: dict[str, Any]) -> None:
    _same_or_same_error(payload)


@given(st.lists(_FLOATS, min_size=1, max_size=3))
@settings(max_examples=500, deadline=None)
def test_canonical_json_writes_every_float_as_repr_does(floats: list[float]) -> None:
    _same_or_same_error({"f": floats})
    if all(math.isfinite(f) for f in floats):
        assert json.loads(canonical_json({"f": floats})) == {"f": floats}


def _floats_in(value: Any) -> list[Any]:
    """Every float in ``value`` (at any depth), and a few values that are not floats."""
    if isinstance(value, dict):
        return [found for item in value.values() for found in _floats_in(item)]
    if isinstance(value, list | tuple):
        return [found for item in value for found in _floats_in(item)]
    return [value] if isinstance(value, float) else []


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5), st.sampled_from([(), (1, "x")]))
@settings(max_examples=300, deadline=None)
def test_canonical_json_told_every_float_is_the_standard_librarys_byte_for_byte(
    payload: dict[str, Any], others: tuple[Any, ...]
) -> None:
    floats = (*_floats_in(payload), *others)
    try:
        expected: bytes | type[BaseException] = _reference_json(payload)
    except (TypeError, ValueError) as exc:
        expected = type(exc)
    try:
        found: bytes | type[BaseException] = canonical_json(payload, floats)
    except (TypeError, ValueError) as exc:
        found = type(exc)
    assert found == expected


@given(st.lists(_FLOATS, min_size=1, max_size=3))
@settings(max_examples=500, deadline=None)
def test_canonical_json_told_the_floats_writes_each_as_repr_does(floats: list[float]) -> None:
    payload = {"f": floats, "n": None}
    try:
        expected: bytes | type[BaseException] = _reference_json(payload)
    except ValueError as exc:
        expected = type(exc)
    try:
        found: bytes | type[BaseException] = canonical_json(payload, tuple(floats))
    except ValueError as exc:
        found = type(exc)
    assert found == expected


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5))
@settings(max_examples=300, deadline=None)
def test_canonical_json_told_its_floats_are_finite_is_the_standard_librarys_byte_for_byte(
    payload: dict[str, Any],
) -> None:
    """A mapper's payload (``finite``): its nulls are Nones, not searched for."""
    assume(all(math.isfinite(found) for found in _floats_in(payload)))
    try:
        expected: bytes | type[BaseException] = _reference_json(payload)
    except (TypeError, ValueError) as exc:
        expected = type(exc)
    try:
        found: bytes | type[BaseException] = canonical_json(payload, None, True)
    except (TypeError, ValueError) as exc:
        found = type(exc)
    assert found == expected


def test_canonical_json_of_the_benchmark_payloads_is_unchanged() -> None:
    config = _bench_config()
    mappers = [build_mapper(target, "id") for target in config.targets]
    for record in catalog.products(3000):
        for mapper in mappers:
            payload = mapper.map(record).payload
            assert canonical_json(payload) == _reference_json(payload)


def test_canonical_json_refuses_what_it_always_refused() -> None:
    class Text(str):
        pass

    assert canonical_json({"a": Text("x"), "b": {1: 2}}) == b'{"a":"x","b":{"1":2}}'
    for bad in (math.nan, math.inf, "\ud800", object()):
        try:
            canonical_json({"a": bad})
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"{bad!r} was encoded")


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


def _number_the_long_way(text: str, separator: str) -> Any:
    """``_to_number`` of a string before its plain-decimal shortcut."""
    try:
        exact = Decimal(values._number_text(text, separator))
        number = values.exact_float(exact, text)
    except (RecordError, InvalidOperation) as exc:
        return type(exc)
    return int(number) if number.is_integer() and abs(number) <= values.EXACT_INTEGER else number


def _number(text: str, separator: str) -> Any:
    try:
        return values.COERCIONS["number"](text, separator)
    except RecordError as exc:
        return type(exc)


@given(
    st.one_of(
        st.from_regex(r"[0-9]{0,17}\.?[0-9]{0,17}", fullmatch=True),
        st.from_regex(r"[0-9]{0,4}(,[0-9]{2,4}){0,5}\.?[0-9]{0,6}", fullmatch=True),
        st.from_regex(r"[0-9,]{0,8}\.?[0-9,]{0,4}", fullmatch=True),
        st.from_regex("[0-9\u0660-\u0669\uff10-\uff19\u00b2]{1,4}\\.?[0-9]{0,3}", fullmatch=True),
        st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["9999999999999999", "12.", ".5", ".", "", "007", "0.1000000000000001"]),
        st.sampled_from(["1,234.56", "123,456,789,012,345", "1,234,567,890,123,456", ",123"]),
        st.sampled_from(["1.234,50", "1,234.5,6", "12,345.678,901", "1.2,3", "1,234."]),
    ),
    st.sampled_from([".", ","]),
)
@settings(max_examples=400, deadline=None)
def test_a_plain_decimal_string_is_the_number_the_long_way_gives(text: str, sep: str) -> None:
    found, expected = _number(text, sep), _number_the_long_way(text, sep)
    assert found == expected
    assert type(found) is type(expected)


def test_a_price_text_is_converted_once_for_every_target_that_maps_it() -> None:
    config = _bench_config()
    mappers = [build_mapper(target, "id") for target in config.targets]
    record = {"id": "SKU-1", "title": "A", "description": "B", "price": "1,234.57"}
    values.plain_number.cache_clear()
    documents = [mapper.map(record) for mapper in mappers]
    info = values.plain_number.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # the second target took the first one's
    assert documents[0].payload["properties"]["price"] == 1234.57
    assert documents[1].payload["price"] == 1234.57


def test_a_remembered_price_is_never_another_texts_or_another_separators() -> None:
    number = values.COERCIONS["number"]
    assert number("1,234", ".") == 1234
    assert number("1,234", ",") == 1.234  # the comma a decimal separator: not remembered
    assert number("1,234", ".") == 1234
    assert number("1.5", ".") == 1.5
    assert number("1.50", ".") == 1.5
    assert number("1.0", ".") == 1 and type(number("1.0", ".")) is int
    assert number("1.234,5", ",") == 1234.5
    assert _number("1.234,5", ".") is RecordError  # not plain with ".": the long way refuses
    assert number("2", ".") == 2 and number("3", ".") == 3
    assert _number("12a", ".") is RecordError
    assert _number("12a", ".") is RecordError  # a refusal is never remembered as a number


def _unsafe_segment_the_long_way(value: str) -> str | None:
    """``unsafe_segment`` before its ASCII shortcut."""
    if not value:
        return "is empty"
    if value in (".", ".."):
        return f"is {value!r}, which a URL path resolves as a relative step"
    if value != value.strip():
        return "has leading or trailing whitespace"
    for char in value:
        if char in "/\\?#%":
            return f"contains {char!r}, which a URL path segment can't carry safely"
        if unicodedata.category(char) == "Cc":
            return f"contains the control character U+{ord(char):04X}"
    return None


@given(st.text(alphabet=st.sampled_from("aZ09-_. /\\?#%\x00\x1f\x7f\x85é\u2028"), max_size=8))
@settings(max_examples=500, deadline=None)
def test_a_url_segment_is_judged_as_before(value: str) -> None:
    assert unsafe_segment(value) == _unsafe_segment_the_long_way(value)


# --------------------------------------------------------------------------------------
# The mappers, whole
# --------------------------------------------------------------------------------------

BENCH_DOCUMENTS_SHA256 = "810bb9745aa55233e98490feb8edd6cb0921ef2485e63e5a9e89ecb0ea689e46"
"""The first 3,000 benchmark products mapped for both targets (key, canonical payload and
hash of each document), digested, by the code before the fast paths (commit 6043dca). The
hash was then BLAKE2b-128; since it is XXH3-128 the digest takes BLAKE2b-128 of the
canonical bytes in its place (so the pin still holds) and each hash is checked apart."""


def test_the_benchmark_documents_are_byte_for_byte_those_of_before() -> None:
    mappers = [build_mapper(target, "id") for target in _bench_config().targets]
    digest = hashlib.sha256()
    for record in catalog.products(3000):
        for mapper in mappers:
            document = mapper.map(record)
            canonical = document.canonical
            digest.update(document.key.encode() + b"\0" + canonical + b"\0")
            digest.update(hashlib.blake2b(canonical, digest_size=16).digest())
            assert document.hash == xxhash.xxh3_128_digest(canonical)
    assert digest.hexdigest() == BENCH_DOCUMENTS_SHA256


# --------------------------------------------------------------------------------------
# Vambe's contract, checked in one pass first
# --------------------------------------------------------------------------------------


class _Text(str):
    pass


_VAMBE_VALUES = {
    "name": st.sampled_from(["Shoe", "", None, 3, _Text("Shoe")]),
    "external_id": st.sampled_from(["SKU-1", "", None, 1]),
    "type": st.sampled_from(["vambe", "", None]),
    "description": st.sampled_from(["Nice", "", "x" * 8192, "x" * 8193, None, b"b"]),
    "price": st.sampled_from([1, 2.5, 0, -1, 0.0, math.nan, math.inf, True, "3", None, 10**30]),
    "currency": st.sampled_from(["USD", "usd", "XXX", None, ["USD"]]),
    "metadata": st.one_of(
        st.sampled_from([None, {}, "x", ()]),
        st.lists(
            st.sampled_from(
                [
                    {"key": "a", "value": "b"},
                    {"key": "a", "value": 1},
                    {"key": "a"},
                    {"key": "a", "value": "b", "x": "c"},
                    {"key": "a", "other": "b"},
                    {"key": _Text("a"), "value": "b"},
                    ["key", "value"],
                    None,
                ]
            ),
            max_size=4,
        ),
    ),
    "file_url": st.sampled_from(["https://x/y.jpg", "", None, 5]),
    "sku": st.sampled_from(["A-1", None, 7]),
    "extra": st.sampled_from(["field"]),
}


@st.composite
def _vambe_products(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.sets(st.sampled_from(sorted(_VAMBE_VALUES))))
    required = {"name", "external_id", "type", "description", "price", "currency", "metadata"}
    names |= required if draw(st.booleans()) else set()
    return {name: draw(_VAMBE_VALUES[name]) for name in sorted(names)}


@given(_vambe_products())
@settings(max_examples=500, deadline=None)
def test_a_vambe_product_passed_in_one_pass_breaks_no_rule(product: dict[str, Any]) -> None:
    from syncd.targets.vambe.contract import _plainly_valid, _product_problems

    problems = _product_problems(product)
    if _plainly_valid(product):
        assert problems == []
    elif _exact(product):
        assert problems != [], "a valid product of exact types passes the one-pass check"


def _exact(value: object) -> bool:
    """No subclass of str anywhere (the one-pass check leaves those to the long one)."""
    if isinstance(value, dict):
        return all(map(_exact, value.values())) and all(map(_exact, value))
    if isinstance(value, list):
        return all(map(_exact, value))
    return not isinstance(value, _Text)


def _metadata_of_numbers(record: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
    """A mapping callable that breaks the metadata's shape (a number value)."""
    product["metadata"] = [*product["metadata"], {"key": "stock", "value": 7}]
    return product


def _vambe_config(**mapping: Any) -> Any:
    from syncd.config import VambeTargetConfig

    base = {"name": "title", "description": "title", "price": "price", "currency": "currency"}
    return VambeTargetConfig.model_validate(
        {"kind": "vambe", "name": "vb", "api_key_env": "VB_KEY", "block_id": "b-1",
         "mapping": {**base, **mapping}}
    )  # fmt: skip


@contextlib.contextmanager
def _vambe_target() -> Iterator[Any]:
    from syncd.config import HttpConfig
    from syncd.targets import open_target

    target = open_target(_vambe_config(), HttpConfig(), api_key="k")
    try:
        yield target
    finally:
        target.close()


_RECORD = {"id": "A-1", "title": "Shoe", "price": "9.5", "currency": "usd", "brand": "X"}


def test_a_vambe_mapper_vouches_for_its_metadata_only_without_a_callable() -> None:
    assert build_mapper(_vambe_config(metadata=["brand"]), "id").well_formed == {"metadata"}
    hooked = _vambe_config(
        metadata=["brand"], callable="tests.test_fast_paths:_metadata_of_numbers"
    )
    assert build_mapper(hooked, "id").well_formed == frozenset()
    assert build_mapper(_bench_config().targets[0], "id").well_formed == WELL_FORMED_PRODUCT


def test_metadata_a_callable_breaks_is_still_refused_item_by_item() -> None:
    hooked = _vambe_config(
        metadata=["brand"], callable="tests.test_fast_paths:_metadata_of_numbers"
    )
    mapper = build_mapper(hooked, "id")
    document = mapper.map(_RECORD)
    with _vambe_target() as target:
        try:
            target.validate(document.key, document.payload, mapper.well_formed)
        except RecordError as exc:
            assert "metadata[1]" in str(exc)
        else:
            raise AssertionError("a metadata value that is a number passed")


def test_a_product_with_well_formed_metadata_still_has_every_other_rule_checked() -> None:
    mapper = build_mapper(_vambe_config(metadata=["brand"]), "id")
    with _vambe_target() as target:
        for change, field in (({"price": "0"}, "price"), ({"currency": "XXX"}, "currency")):
            document = mapper.map({**_RECORD, **change})
            try:
                target.validate(document.key, document.payload, mapper.well_formed)
            except RecordError as exc:
                assert field in str(exc)
            else:
                raise AssertionError(f"a bad {field} passed")


def test_metadata_vouched_for_is_not_looked_at_item_by_item_but_a_bad_product_lists_it() -> None:
    from syncd.targets.vambe.contract import validate_product

    product = {
        "name": "Shoe", "external_id": "A-1", "type": "vambe", "description": "Nice",
        "price": 1, "currency": "USD", "metadata": [{"key": "a", "value": 1}],
    }  # fmt: skip
    validate_product("A-1", product, {"metadata"})  # the item is the mapper's to vouch for
    for well_formed in ((), {"metadata"}):
        try:
            validate_product("A-1", {**product, "price": 0}, well_formed)
        except RecordError as exc:  # found otherwise invalid: every rule checked
            assert "metadata[0]" in str(exc) and "price" in str(exc)
        else:
            raise AssertionError("a price of 0 passed")


_SOURCE_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.text(max_size=4)
    | st.sampled_from(["  ", "a,b|c", "1,234.5", "[1, 2.5]", '{"a": [1, {"b": null}]}']),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), _SOURCE_VALUES))
@settings(max_examples=300, deadline=None)
def test_the_metadata_a_vambe_mapper_builds_is_well_formed_whatever_the_record_holds(
    values: dict[str, Any],
) -> None:
    """What lets ``validate_product`` skip the metadata's items (``Mapper.well_formed``)."""
    metadata = {
        "a": "a",
        "b": {"path": "b", "type": "json"},
        "c": {"path": "c", "split": ",", "type": "number"},
        "d": {"path": "d", "type": "list"},
        "e": {"path": "e", "html": True, "type": "string"},
        "f": {"template": "{a}-{b}"},
    }
    for form in (metadata, ["a", "b", "c", "d", "e"]):
        mapper = build_mapper(_vambe_config(metadata=form), "id")
        try:
            payload = mapper.map({**_RECORD, **values}).payload
        except RecordError:
            continue
        for item in payload["metadata"]:
            assert item.__class__ is dict and len(item) == 2
            assert item["key"].__class__ is str and item["value"].__class__ is str
