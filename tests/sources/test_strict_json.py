"""``quick_object`` (orjson, checked) gives what ``loads_strict`` (the standard library,
the reference) gives, or leaves the line to it: over generated JSON lines (repeated keys,
escapes, big integers, floats, unicode, nesting), malformed ones, and the benchmark's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench import catalog
from syncd.sources.base import loads_strict, quick_object, quick_objects


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, key order and float bits included (``0 == 0.0 ==
    -0.0`` and ``{"a": 1, "b": 2} == {"b": 2, "a": 1}`` are not the same parse)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        return a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def reference(data: bytes) -> Any:
    """What syncd makes of a line without the fast path: its value, or the exception."""
    try:
        return loads_strict(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        return exc


def check(data: bytes) -> dict[str, Any] | None:
    """``quick_object(data)``, asserted to be ``loads_strict``'s object when not None."""
    quick = quick_object(data)
    if quick is not None:
        expected = reference(data)
        assert same(quick, expected), (data, quick, expected)
    return quick


# --------------------------------------------------------------------------------------
# JSON text, written in the many ways JSON allows
# --------------------------------------------------------------------------------------

_SPACE = st.sampled_from(["", "", " ", "\t", "\r\n", "  "])
_CHARS = st.one_of(
    st.sampled_from(list(':a"\\/é\x00\x1f\x7f\u2028\ufeff\U0001f600+e.0')),
    st.characters(codec="utf-8"),
)
_ESCAPES = st.sampled_from(["raw", "raw", "raw", "u", "U", "short"])
_LONE_SURROGATES = st.sampled_from([""] * 12 + ["\\ud800", "\\udfff", "\\udc00\\ud800"])
_SHORT = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}


@st.composite
def _string(draw: st.DrawFn, chars: st.SearchStrategy[str] = _CHARS) -> str:
    """A JSON string, each character raw or escaped (lone surrogates now and then)."""
    out = ['"']
    for char, way in draw(st.lists(st.tuples(chars, _ESCAPES), max_size=5)):
        code = ord(char)
        if way == "short" and char in _SHORT:
            out.append("\\" + _SHORT[char])
        elif way in ("u", "U") or char in '"\\' or code < 0x20:
            hex4 = "\\u{:04X}" if way == "U" else "\\u{:04x}"
            if code > 0xFFFF:  # a surrogate pair
                code -= 0x10000
                out.append(
                    hex4.format(0xD800 + (code >> 10)) + hex4.format(0xDC00 + (code & 0x3FF))
                )
            else:
                out.append(hex4.format(code))
        else:
            out.append(char)
    out.append(draw(_LONE_SURROGATES))
    out.append('"')
    return "".join(out)


_INTEGERS = st.one_of(
    st.integers(-1000, 1000),
    st.integers(-(2**62), 2**62),
    st.integers(-(2**70), 2**70),
    st.integers(2**63 - 3, 2**64 + 3),
    st.integers(-(2**63) - 3, -(2**63) + 3),
).map(str)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(
        lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
        st.sampled_from(["", "-"]),
        st.one_of(st.just("0"), st.integers(1, 10**30).map(str)),
        st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=30).map(".".__add__)),
        st.one_of(
            st.just(""),
            st.builds(
                "{}{}{}".format,
                st.sampled_from("eE"),
                st.sampled_from(["", "+", "-"]),
                st.integers(0, 400).map(str),
            ),
        ),
    ),
)
_NUMBERS = st.one_of(_INTEGERS, _FLOATS, st.just("-0"), st.just("-0.0"))
_KEYS = st.one_of(
    st.sampled_from(['"a"', '"\\u0061"', '"b"', '":"', '"a:b"', '"\\u003a"', '"\\u003A"', '""']),
    _string(),
)
_SCALARS = st.one_of(
    _NUMBERS, _string(), st.sampled_from(["true", "false", "null"] * 3 + ["NaN", "-Infinity"])
)


def _wrap(space: str, value: str) -> str:
    return f"{space}{value}{space}"


_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.builds(
            lambda items, space: "[" + ",".join(_wrap(space, v) for v in items) + "]",
            st.lists(inner, max_size=4),
            _SPACE,
        ),
        st.builds(
            lambda members, space: "{"
            + ",".join(f"{space}{k}{space}:{_wrap(space, v)}" for k, v in members)
            + "}",
            st.lists(st.tuples(_KEYS, inner), max_size=5),
            _SPACE,
        ),
    ),
    max_leaves=10,
)
_OBJECTS = st.builds(
    lambda members, space, end: "{"
    + ",".join(f"{space}{k}{space}:{_wrap(space, v)}" for k, v in members)
    + "}"
    + end,
    st.lists(st.tuples(_KEYS, _VALUES), max_size=6),
    _SPACE,
    st.sampled_from(["", "\n", "\r\n", " "]),
)


@given(_OBJECTS)
@settings(max_examples=600, deadline=None)
@example('{"a": 1, "a": 2}')
@example('{"a": {"b": ":", "b": 1}}')
@example('{"a": 1, "\\u0061": 1}')
@example('{"a": "\\u003a", "a": 1}')  # an escaped colon making up for a dropped copy
@example('{"n": 18446744073709551616}')
@example('{"n": -9223372036854775809}')
@example('{"n": 1e400}')
@example('{"s": "\\ud800"}')
def test_a_json_line_parses_as_the_standard_library_parses_it(text: str) -> None:
    check(text.encode())


@given(st.lists(st.one_of(_OBJECTS, _VALUES).map(str.encode), max_size=6))
@settings(max_examples=300, deadline=None)
@example([b'{"a": 1}', b'{"a": 1, "a": 2}', b'{"b": ":"}'])
@example([b'{"a": "C++"}', b'{"n": 18446744073709551616}', b'{"a": 1}'])  # a + in one dump
@example([b'{"a": "\\\\"}', b'{"a": "\\u003a", "a": 1}', b"[1]", b'{"b": 2}'])  # backslashes
@example([b'{"a":0,"a":0}', b'{"a":0,"\\u003a":0}'])  # a dropped copy, an escaped colon
@example([b'{"n": 1e400}', b"7", b'{"s": "\\ud800"}', b'{"a": {"b": 1, "b": 2}}'])
def test_lines_parsed_together_are_each_what_it_is_alone(lines: list[bytes]) -> None:
    together = quick_objects(lines)
    assert len(together) == len(lines)
    for line, quick in zip(lines, together, strict=True):
        alone = quick_object(line)
        assert (quick is None and alone is None) or same(quick, alone), (line, quick, alone)


@given(st.lists(_OBJECTS.map(str.encode), max_size=6))
@settings(max_examples=300, deadline=None)
@example([b'{"a":1}', b'{"a":0,"a":0}'])  # compact, but a dropped copy: not its dump
@example([b'{"a":1}', b'{"b":":"}'])
def test_lines_written_as_orjson_writes_them_are_each_what_it_is_alone(
    lines: list[bytes],
) -> None:
    """Lines that are their dumps skip the count of colons: each is still what it is alone."""
    lines = [
        line if quick_object(line) is None else orjson.dumps(orjson.loads(line)) for line in lines
    ]
    together = quick_objects(lines)
    for line, quick in zip(lines, together, strict=True):
        alone = quick_object(line)
        assert (quick is None and alone is None) or same(quick, alone), (line, quick, alone)


@given(_VALUES)
@settings(max_examples=300, deadline=None)
def test_any_json_value_that_is_not_an_object_is_left_to_the_standard_library(
    text: str,
) -> None:
    quick = check(text.encode())
    if not text.startswith("{"):
        assert quick is None


_BYTES = st.one_of(st.sampled_from(b'{}[]":,\\ 0e-+.\xff\xc3\xed\x00'), st.integers(0, 255))


@given(_OBJECTS, st.data())
@settings(max_examples=500, deadline=None)
def test_a_malformed_json_line_is_left_to_the_standard_library(
    text: str, data: st.DataObject
) -> None:
    line = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(line)))
        how = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(_BYTES)
        if how == "insert":
            line[at:at] = bytes([byte])
        elif at < len(line):
            line[at : at + 1] = b"" if how == "delete" else bytes([byte])
    line_bytes = bytes(line)
    quick = check(line_bytes)
    if isinstance(reference(line_bytes), Exception):
        assert quick is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": {"b": 1, "b": 1}}',
        b'{"a": [{"b": 1}, {"c": ":", "c": ":"}]}',
        b'{"a": 1, "\\u0061": 1}',
        b'{"a": "\\u003a", "a": 1}',
        b'{"n": 18446744073709551616}',
        b'{"n": [-9223372036854775809]}',
        b'{"n": 1e400}',
        b'{"n": NaN}',
        b'{"s": "\\ud800"}',
        b'{"s": "\xed\xa0\x80"}',
        b'\xef\xbb\xbf{"a": 1}',
        b'\x0c{"a": 1}',
        b'[{"a": 1}]',
        b"[" * 300 + b"]" * 300,
        b'{"a":' + b"[" * 300 + b"]" * 300 + b"}",
    ],
)
def test_what_the_fast_parse_cant_vouch_for_is_left_to_the_standard_library(
    line: bytes,
) -> None:
    assert quick_object(line) is None


def test_orjson_writes_every_float_past_2_to_the_63_with_a_positive_exponent() -> None:
    """What the test for big integers relies on: ``orjson.dumps`` writes a float of at
    least 2**63 in size with an exponent (``e+18``)."""
    for power in range(63, 1024):
        for number in (2.0**power, -(2.0**power), math.nextafter(2.0**power, math.inf)):
            assert b"e+" in orjson.dumps(number), number
    assert b"e+" in orjson.dumps(math.nextafter(2.0**63, 0))  # already past 1e16


@pytest.mark.parametrize(
    "line", [b'{"a":"C++"}', b'{"a":"+1 555 0100","b":[1,{"c":"x+y"}]}', b'{"a":1e3}']
)
def test_a_plus_outside_an_exponent_keeps_the_fast_path(line: bytes) -> None:
    assert quick_object(line) == loads_strict(line.decode())
    assert check(line) is not None


def test_every_line_of_the_benchmark_takes_the_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    catalog.write_jsonl(path, 2000)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2000
    assert all(check(line) is not None for line in lines)
