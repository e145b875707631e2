"""Values that only look right: keys with invisible characters, numbers a double can't hold.

Each class of bad value is a table with several members; the number rule is also checked
on generated decimals (hypothesis), and the key rule through a whole run against the fakes.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import RecordError
from syncd.model import canonical_json
from syncd.sandbox import RecordedRequest
from syncd.values import coerce, float_leaves, jsonable, key_text, visible_twin
from tests.robustness.helpers import (
    UF_NAME,
    VB_NAME,
    Sandbox,
    deleted_keys,
    make_records,
    sandbox,
    shared_tls_context,
    state_rows,
)


def refusal(function: Any, *args: Any, **kwargs: Any) -> RecordError:
    with pytest.raises(RecordError) as caught:
        function(*args, **kwargs)
    return caught.value


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------

NON_ASCII_DIGITS = [
    "١٢٣",  # Arabic-Indic
    "۱۲۳",  # Extended Arabic-Indic (Persian)
    "१२३",  # Devanagari
    "\uff11\uff12\uff13",  # full-width
    "1٢3",  # one digit swapped
    "12.\u0665",  # in the fraction
    "1e\uff11",  # in the exponent
    "$ ১২",  # Bengali, with a currency
]
UNDERFLOWING = ["5e-400", "1e-330", "-2.5e-350", "0.000000000001e-320", Decimal("5E-400")]
OVERFLOWING = ["1e400", "-1.8e309", "2e308", Decimal("1E+400"), "1e99999999999999999999"]
INEXACT = [
    "123456789012345678901234567890",
    "0.1000000000000000000001",
    "9007199254740993",  # 2**53 + 1
    "1.00000000000000001",
    "3.14159265358979323846",
    "-0.30000000000000001",
    "1,234,567,890,123,456,789",
    Decimal("123456789012345678901234567890"),
    Decimal("0.1000000000000000000001"),
    2**53 + 1,
    -(10**30) - 1,
]
NOT_FINITE = [
    "nan", "NaN", "-nan", "+NaN", "sNaN", "inf", "-inf", "INF", "Infinity", "-Infinity",
    "infinity", float("nan"), float("-inf"), Decimal("NaN"), Decimal("-Infinity"),
    Decimal("sNaN"),
]  # fmt: skip
UNDERSCORED = ["1_000", "1_000.50", "1e1_0", "0x10", "1__0"]
INVISIBLE_INSIDE = ["1\u200b000", "12\ufeff.50", "1\u00ad5", "\u20601.5"]


@pytest.mark.parametrize("value", NON_ASCII_DIGITS)
def test_a_number_written_with_non_ascii_digits_is_refused(value: str) -> None:
    error = refusal(coerce, value, "number")
    assert error.reason == f"not a number: {value!r}"


@pytest.mark.parametrize("value", NON_ASCII_DIGITS[:4])
def test_an_integer_written_with_non_ascii_digits_is_refused(value: str) -> None:
    assert refusal(coerce, value, "integer").reason == f"not a number: {value!r}"


@pytest.mark.parametrize("value", UNDERFLOWING)
def test_a_number_too_small_for_a_double_is_refused_rather_than_sent_as_zero(value: Any) -> None:
    reason = refusal(coerce, value, "number").reason
    assert "can't be sent exactly: a JSON number holds " in reason
    assert str(value) in reason


@pytest.mark.parametrize("value", OVERFLOWING)
def test_a_number_too_large_for_a_double_is_refused(value: Any) -> None:
    reason = refusal(coerce, value, "number").reason
    assert reason.endswith("is too large to be sent as a number")
    assert str(value)[:20] in reason


@pytest.mark.parametrize("value", INEXACT, ids=repr)
def test_a_number_with_more_digits_than_a_double_keeps_is_refused(value: Any) -> None:
    reason = refusal(coerce, value, "number").reason
    assert "can't be sent exactly" in reason


def test_the_refusal_names_the_value_and_what_the_target_would_have_read() -> None:
    reason = refusal(coerce, "0.1000000000000000000001", "number").reason
    assert reason.startswith("'0.1000000000000000000001' can't be sent exactly")
    assert "a JSON number holds 0.1 " in reason
    decimal = refusal(coerce, Decimal("123456789012345678901234567890"), "number").reason
    assert decimal.startswith("123456789012345678901234567890 can't be sent exactly")


def test_a_huge_integer_is_named_by_its_size_not_printed() -> None:
    reason = refusal(coerce, 10**5000 + 1, "number").reason
    assert reason.startswith("an integer of about 5001 digits can't be sent exactly")


@pytest.mark.parametrize("value", NOT_FINITE, ids=repr)
def test_nan_and_infinity_in_any_spelling_are_refused(value: Any) -> None:
    reason = refusal(coerce, value, "number").reason
    assert reason.startswith(("not a number: ", "not a finite number: "))


@pytest.mark.parametrize("value", UNDERSCORED + INVISIBLE_INSIDE)
def test_underscores_and_invisible_characters_inside_a_number_are_refused(value: str) -> None:
    assert refusal(coerce, value, "number").reason.startswith("not a number: ")
    assert refusal(coerce, value, "integer").reason.startswith("not a number: ")


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("+5", 5),
        (" 7 ", 7),
        ("\u00a012.50\u00a0", 12.5),
        ("\t-3.25\n", -3.25),
        ("1,000.00", 1000),
        ("0.1", 0.1),
        ("0.30000000000000004", 0.30000000000000004),
        ("1.10", 1.1),
        ("1e20", 1e20),
        ("5e-324", 5e-324),
        ("1.7976931348623157e308", 1.7976931348623157e308),
        ("9007199254740992", 2**53),
        (Decimal("11.05"), 11.05),
        (Decimal("1E+2"), 100),
        (Decimal("-0.000"), 0),
        (2**53, 2**53),
        (2**60, 2**60),  # a power of two: a double holds it exactly
        (10**22, 10**22),
        (0.1, 0.1),
    ],
    ids=repr,
)
def test_a_number_the_target_reads_back_unchanged_is_accepted(value: Any, number: Any) -> None:
    result = coerce(value, "number")
    assert result == number
    assert type(result) is type(number)


_SIGNIFICANT_15 = st.integers(min_value=1, max_value=10**15 - 1)


@given(mantissa=_SIGNIFICANT_15, exponent=st.integers(min_value=-290, max_value=290))
def test_any_decimal_with_at_most_15_significant_digits_is_sent_exactly(
    mantissa: int, exponent: int
) -> None:
    text = f"{mantissa}e{exponent}"
    result = coerce(text, "number")
    assert result == float(text)
    assert Decimal(repr(float(result))) == Decimal(text)


@given(mantissa=_SIGNIFICANT_15, places=st.integers(min_value=0, max_value=15))
def test_any_plain_price_with_at_most_15_significant_digits_is_sent_exactly(
    mantissa: int, places: int
) -> None:
    text = str(Decimal(mantissa).scaleb(-places))
    assert Decimal(repr(float(coerce(text, "number")))) == Decimal(text)


@given(
    digits=st.text(alphabet="0123456789", min_size=16, max_size=40),
    places=st.integers(min_value=0, max_value=40),
)
def test_a_longer_decimal_is_sent_only_when_the_double_is_the_same_number(
    digits: str, places: int
) -> None:
    text = str(Decimal(digits).scaleb(-places))
    try:
        result = coerce(text, "number")
    except RecordError as exc:
        assert "can't be sent exactly" in exc.reason
        assert Decimal(repr(float(text))) != Decimal(text)
    else:
        assert Decimal(repr(float(result))) == Decimal(text)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_from_sql_is_sent_exactly_or_refused(value: Decimal) -> None:
    try:
        result = coerce(value, "number")
    except RecordError as exc:
        assert "can't be sent exactly" in exc.reason or "too large" in exc.reason
    else:
        assert Decimal(repr(float(result))) == value


def test_an_integer_field_refuses_an_exponent_too_large_to_build() -> None:
    assert refusal(coerce, "1e20000", "integer").reason == "too large for an integer: '1e20000'"
    assert refusal(coerce, Decimal("1E+99999999"), "integer").reason.startswith("too large")
    assert coerce("1e3", "integer") == 1000


@pytest.mark.parametrize(
    "value", [Decimal("123456789012345678901234567890"), Decimal("0.1000000000000000000001")]
)
def test_an_untyped_decimal_is_refused_when_a_double_would_change_it(value: Decimal) -> None:
    assert "can't be sent exactly" in refusal(jsonable, {"price": value}).reason
    assert "can't be sent exactly" in refusal(coerce, [value], "list").reason


def test_an_untyped_decimal_a_double_holds_is_sent_as_a_number() -> None:
    assert jsonable({"price": Decimal("12.99")}) == {"price": 12.99}


_JSON_DATA = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.text(max_size=2),
        st.floats(),
        st.sampled_from([2.5, -0.0, math.nan, math.inf, -math.inf]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=8,
)


def _floats_in(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _floats_in(item)


@given(_JSON_DATA)
@settings(max_examples=300)
def test_json_data_is_kept_as_it_is_unless_a_float_in_it_is_not_finite(value: Any) -> None:
    if all(math.isfinite(number) for number in _floats_in(value)):
        assert jsonable(value) is value
    else:
        assert refusal(jsonable, value).reason.startswith("not a finite number")


class _Float(float):
    """A float subclass: orjson passes it to the standard library's encoder."""


class _Tiny(enum.Enum):
    """An enum orjson writes (its value) and the standard library refuses."""

    FLOAT = 1e-5


_NOT_JSON_DATA = st.recursive(
    st.one_of(
        _JSON_DATA,
        st.sampled_from([Decimal("2.50"), Decimal("1E-5"), Decimal("1e400"), Decimal("NaN")]),
        st.sampled_from([_Float(1e-5), _Float(2.5), _Tiny.FLOAT, True, 2**64, 1e-7, 1.5e-8]),
        st.sampled_from([1e16, 1e22, 5e-324]),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=2), inner, max_size=3)
        | st.dictionaries(st.text(max_size=2), inner, max_size=2).map(MappingProxyType)
    ),
    max_leaves=10,
)
"""JSON data and what ``jsonable`` makes JSON data (or refuses): decimals, tuples, a float
subclass, an enum, a mapping that is not a dict."""


def _reprs(floats: Iterable[float]) -> Counter[str]:
    """Floats as a multiset of their text (``-0.0`` is not ``0.0``, NaN is NaN)."""
    return Counter(map(repr, floats))


@given(_NOT_JSON_DATA)
@settings(max_examples=500)
def test_jsonable_told_a_list_notes_every_float_it_returns_and_returns_the_same(
    value: Any,
) -> None:
    floats: list[float] = []
    try:
        expected = jsonable(value)
    except RecordError as exc:
        assert refusal(jsonable, value, 0, floats).reason == exc.reason
        return
    found = jsonable(value, 0, floats)
    assert found == expected and repr(found) == repr(expected)
    assert (found is value) == (expected is value)
    assert all(number.__class__ is float for number in floats)
    assert _reprs(floats) == _reprs(_floats_in(found))


@given(_JSON_DATA)
@settings(max_examples=300)
def test_float_leaves_notes_every_float_of_json_data(value: Any) -> None:
    floats: list[float] = []
    float_leaves(value, floats)
    assert _reprs(floats) == _reprs(_floats_in(value))


@given(_NOT_JSON_DATA)
@settings(max_examples=300, deadline=None)
def test_canonical_json_told_the_float_leaves_of_anything_writes_what_it_writes_untold(
    value: Any,
) -> None:
    """What is not JSON data (a decimal, a float subclass) notes NaN: ``canonical_json``
    then writes (or refuses) the payload the standard library's way, as it does untold."""
    payload = {"v": value, "n": None}
    floats: list[float] = []
    float_leaves(payload, floats)
    outcomes = []
    for told in (None, floats):
        try:
            outcomes.append(canonical_json(payload, told))
        except (TypeError, ValueError) as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("A1", "A1"),
        ("  A1\t", "A1"),
        ("\u00a0A1\u3000", "A1"),
        ("\ufeffA1", "A1"),
        (" \ufeffA1 ", "A1"),
        ("\ufeff\ufeffA1", "A1"),
        ("e\u0301-1", "\u00e9-1"),  # decomposed é: the same key as the precomposed one
        ("\u00e9-1", "\u00e9-1"),
        ("\u212b-1", "\u00c5-1"),  # ANGSTROM SIGN is canonically Å
        ("A 1", "A 1"),
        ("Ü-1", "Ü-1"),
        ("商品-1", "商品-1"),
        (1, "1"),
        (1.0, "1"),
        (1e3, "1000"),
        (-0.0, "0"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (float(2**53), "9007199254740992"),
        (Decimal("1"), "1"),
        (Decimal("1.00"), "1"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.50"), "1.5"),
        (Decimal("123456789012345678901234567890"), "123456789012345678901234567890"),
        (12345678901234567890, "12345678901234567890"),
    ],
    ids=repr,
)
def test_a_key_is_stable_text_whatever_form_the_source_gives_it(value: Any, key: str) -> None:
    assert key_text(value) == key


def test_numbers_that_are_the_same_number_give_the_same_key() -> None:
    assert len({key_text(v) for v in (1000, 1000.0, 1e3, Decimal("1000.00"), Decimal("1E3"))}) == 1
    assert key_text("1.0") == "1.0"  # text is not read as a number


INVISIBLE_KEYS = [
    ("A\u200b1", "U+200B ZERO WIDTH SPACE", "A1"),
    ("A\ufeff1", "U+FEFF ZERO WIDTH NO-BREAK SPACE", "A1"),
    ("A1\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE", "A1"),
    ("A\u200d1", "U+200D ZERO WIDTH JOINER", "A1"),
    ("A\u00ad1", "U+00AD SOFT HYPHEN", "A1"),
    ("A\u20601", "U+2060 WORD JOINER", "A1"),
    ("\u202eA1", "U+202E RIGHT-TO-LEFT OVERRIDE", "A1"),
    ("A\t1", "U+0009 Cc", "A1"),
    ("A\x001", "U+0000 Cc", "A1"),
    ("A\x7f1", "U+007F Cc", "A1"),
    ("A\x1b[0m1", "U+001B Cc", "A[0m1"),
    ("A\u20281", "U+2028 LINE SEPARATOR", "A1"),
    ("A\u20291", "U+2029 PARAGRAPH SEPARATOR", "A1"),
    ("A\ue0001", "U+E000 Co", "A1"),
    ("A\ud8001", "U+D800 Cs", "A1"),
    ("A\U000e00001", "U+E0000 Cn", "A1"),
    ("A\u00a01", "U+00A0 NO-BREAK SPACE", "A 1"),
    ("A\u30001", "U+3000 IDEOGRAPHIC SPACE", "A 1"),
    ("A\u20091", "U+2009 THIN SPACE", "A 1"),
    # default-ignorable though str.isprintable() calls them printable
    ("A\u034f1", "U+034F COMBINING GRAPHEME JOINER", "A1"),
    ("A\u31641", "U+3164 HANGUL FILLER", "A1"),
    ("A\ufe0f1", "U+FE0F VARIATION SELECTOR-16", "A1"),
]


@pytest.mark.parametrize(("value", "named", "twin"), INVISIBLE_KEYS, ids=repr)
def test_a_key_with_an_invisible_character_is_refused_shown_escaped(
    value: str, named: str, twin: str
) -> None:
    error = refusal(key_text, value)
    shown, _, rest = error.reason.partition(" holds invisible or control characters")
    assert shown.startswith("the key '") and rest
    hidden = {char for char in value if char not in "A1[0m"}
    assert hidden and not hidden & set(shown)  # escaped, never shown invisible
    assert "\\" in shown
    assert named in error.reason
    assert error.reason.endswith(f"fix the source; the product {twin!r} is kept as it is")
    assert error.key == twin
    assert error.also_keys[0] == value
    assert error.also_keys[1:] == (() if twin == twin.replace(" ", "") else ("A1",))


@pytest.mark.parametrize("value", ["\u200b", "\ufeff\u200b", "\x00", "\u2028\u200d"], ids=repr)
def test_a_key_of_nothing_but_invisible_characters_is_refused_without_a_key(value: str) -> None:
    error = refusal(key_text, value)
    assert "holds invisible or control characters" in error.reason
    assert error.key is None  # nothing visible: it can't stand for any product


def test_the_visible_twin_drops_invisible_characters_and_plains_spaces() -> None:
    assert visible_twin("\u200bA\u00a0\u200b1\u2028") == "A 1"
    assert visible_twin("e\u200b\u0301") == "\u00e9"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "a boolean is not a key: True"),
        (False, "a boolean is not a key: False"),
        (1e17, "the key 1e+17 is a float past 2**53"),
        (-(2.0**60), "is a float past 2**53"),
        (float("nan"), "not a finite number: nan"),
        (float("inf"), "not a finite number: inf"),
        (Decimal("NaN"), "not a finite number: NaN"),
    ],
    ids=repr,
)
def test_a_key_that_is_no_stable_text_is_refused(value: Any, reason: str) -> None:
    assert reason in refusal(key_text, value).reason


# --------------------------------------------------------------------------------------
# Through a run: a key that gains an invisible character keeps its product
# --------------------------------------------------------------------------------------

BASE = make_records(6)
BAD = "P00003"


@pytest.fixture
def pushed(tmp_path: Path) -> Iterator[Sandbox]:
    with shared_tls_context(), sandbox(tmp_path / "box") as box:
        box.write_catalog(BASE)
        box.configure(log_level="warning")
        assert box.sync().ok
        box.mark()
        yield box


def _writes(*requests: list[RecordedRequest]) -> list[str]:
    return [f"{r.method} {r.path}" for sent in requests for r in sent if r.method != "GET"]


def _rows(box: Sandbox) -> dict[str, Any]:
    return {name: state_rows(box.state_path, name) for name in (UF_NAME, VB_NAME)}


@pytest.mark.parametrize(
    ("clean", "dirty"),
    [
        (BAD, "P\u200b00003"),
        (BAD, "P00003\ufeff"),
        (BAD, "P00\t003"),
        (BAD, "\u2060P00003"),
        ("P 00003", "P\u00a000003"),  # a space that became a no-break space
        ("P 00003", "P\u300000003"),
    ],
    ids=repr,
)
def test_a_key_that_gains_an_invisible_character_is_rejected_and_its_product_kept(
    pushed: Sandbox, clean: str, dirty: str
) -> None:
    records = [dict(r) for r in BASE]
    if clean != BAD:
        records[2]["id"] = clean
        pushed.write_catalog(records)
        assert pushed.sync().ok
        pushed.mark()
    before = _rows(pushed)
    records[2] = dict(records[2], id=dirty, title="Changed title")
    pushed.write_catalog(records)

    report = pushed.sync()

    assert report.ok, [(t.target, t.outcome, t.error) for t in report.targets]
    assert [(t.rejected, t.deleted, t.created) for t in report.targets] == [(1, 0, 0), (1, 0, 0)]
    uf, vb = pushed.new_requests()
    assert list(deleted_keys(uf, vb)) == []
    assert _writes(uf, vb) == []  # nothing sent: neither a delete nor a "new" product
    assert _rows(pushed) == before
    store = pushed.store()
    try:
        reasons = {(r.target, r.key): r.reason for r in store.open_rejections()}
    finally:
        store.close()
    assert reasons[(UF_NAME, clean)].startswith(f"{clean}: id: the key {dirty!r} holds invisible")
    assert reasons[(VB_NAME, clean)].startswith(f"{clean}: external_id: the key ")


def test_a_stray_row_whose_key_is_a_valid_key_plus_an_invisible_character_deletes_nothing(
    pushed: Sandbox,
) -> None:
    """The stray row is refused; the valid row of the same visible key is still pushed as
    usual: no duplicate, no withdrawal."""
    before = _rows(pushed)
    records = [*BASE, dict(BASE[3], id=BASE[3]["id"] + "\u200b", title="Stray")]
    pushed.write_catalog(records)

    report = pushed.sync()

    assert report.ok, [(t.target, t.outcome, t.error) for t in report.targets]
    assert [(t.rejected, t.deleted) for t in report.targets] == [(1, 0), (1, 0)]
    assert _writes(*pushed.new_requests()) == []
    assert _rows(pushed) == before


@pytest.mark.parametrize("dressed", ["\ufeffP00003", "  P00003 ", "\ufeff P00003"])
def test_a_key_that_gains_a_bom_or_padding_is_the_same_product(
    pushed: Sandbox, dressed: str
) -> None:
    before = _rows(pushed)
    records = [dict(r) for r in BASE]
    records[2] = dict(records[2], id=dressed)
    pushed.write_catalog(records)

    report = pushed.sync()

    assert report.ok
    assert [(t.rejected, t.deleted, t.created) for t in report.targets] == [(0, 0, 0), (0, 0, 0)]
    assert _writes(*pushed.new_requests()) == []
    assert _rows(pushed) == before
