"""Values: what a record's field may become, and the coercions that get it there.

JSON-compatible forms (Decimal, datetime, depth limit, NaN refused), strings as targets
want them, product keys (``key_text``), and ``coerce`` for each ``type`` a field spec
names: prices such as ``"1.234,50"`` or ``"$ 12.99"``, booleans, lists, exact integers.
A number is sent only when the target reads back the number the source holds. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import math
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from syncd.config import ValueType
from syncd.errors import RecordError


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""What ``evaluate`` returns for a value the record does not have."""

MAX_DEPTH = 32
"""Containers nested deeper than this reject the record."""


def show(value: object) -> str:
    """A value quoted for an error message, cut to about 40 characters."""
    if isinstance(value, int) and value.bit_length() > 128:  # repr may not even be allowed
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, str):
        text = value
    else:
        text = str(value) if isinstance(value, Decimal) else repr(value)
    if len(text) > 40:
        text = text[:39] + "…"
    if not isinstance(value, str):
        return text
    # repr escapes what isn't printable; default-ignorable characters are escaped too
    return _IGNORABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", repr(text))


def _finite(value: float) -> float:
    if value - value == 0.0:  # false for NaN and both infinities
        return value
    raise RecordError(f"not a finite number: {show(value)}")


def jsonable(value: Any, depth: int = 0, floats: list[float] | None = None) -> Any:
    """``value`` as JSON-compatible data, the same object when it already is.

    ``floats``: a list every float of the result is appended to (each float leaf is
    tested here anyway): what ``canonical_json`` is told instead of searching its text
    (a generated UserFlux ``map``). Nothing more is done for the other leaves."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        value = _finite(value)
        if floats is not None:
            floats.append(value)
        return value
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise RecordError(f"nested deeper than {MAX_DEPTH} levels")
        copy: dict[str, Any] | None = None
        for name, item in value.items():
            if type(name) is not str:
                raise RecordError(f"not JSON-compatible: a {type(name).__name__} key {show(name)}")
            leaf = type(item)
            if leaf is str or leaf is int or leaf is bool or item is None:
                continue  # the common leaves, as they are, without a call
            if leaf is float and item - item == 0.0:
                if floats is not None:  # a finite float (``_finite``'s test), as it is too
                    floats.append(item)
                continue
            new = jsonable(item, depth + 1, floats)
            if new is not item:
                if copy is None:
                    copy = dict(value)
                copy[name] = new
        return value if copy is None else copy
    if kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise RecordError(f"nested deeper than {MAX_DEPTH} levels")
        items: list[Any] | None = None if kind is list else list(value)
        for position, item in enumerate(value):
            leaf = type(item)
            if leaf is str or leaf is int or leaf is bool or item is None:
                continue
            if leaf is float and item - item == 0.0:
                if floats is not None:
                    floats.append(item)
                continue
            new = jsonable(item, depth + 1, floats)
            if new is not item:
                if items is None:
                    items = list(value)
                items[position] = new
        return value if items is None else items
    return _jsonable_other(value, depth, floats)


def _jsonable_other(value: Any, depth: int, floats: list[float] | None = None) -> Any:
    if isinstance(value, Decimal):
        number = exact_float(value, value)
    elif isinstance(value, int):  # an int-based enum, say
        return int(value)
    elif isinstance(value, float):
        number = _finite(float(value))
    elif isinstance(value, str):
        return value[:]  # a plain str, even from a str-based enum
    elif isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    elif isinstance(value, uuid.UUID):
        return str(value)
    elif isinstance(value, Mapping):
        return jsonable(dict(value), depth, floats)
    elif isinstance(value, (list, tuple)):
        return jsonable(list(value), depth, floats)
    else:
        raise RecordError(f"not JSON-compatible: {type(value).__name__} {show(value)}")
    if floats is not None:
        floats.append(number)
    return number


def float_leaves(value: Any, floats: list[float]) -> None:
    """Append every float of ``value`` to ``floats``, at any depth (no limit, no refusal):
    ``jsonable``'s ``floats`` for a value made JSON data elsewhere (a coercion, a field
    function), whose floats no one noted. What is neither JSON data nor a dict, list or
    tuple of it (a subclass, say) appends NaN, which ``canonical_json`` does not take
    for written alike: such a payload is written the long way, as it would be untold."""
    stack = [value]
    pop, push, note = stack.pop, stack.extend, floats.append
    while stack:
        item = pop()
        kind = item.__class__
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            note(item)
        elif kind is dict:
            push(item.values())
        elif kind is list or kind is tuple:
            push(item)
        else:
            note(math.nan)


def stringify(value: Any) -> str:
    """The text of a scalar: ``true``/``false``, ``42`` for 42.0, ISO dates."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        _finite(value)
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RecordError(f"not a finite number: {show(value)}")
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, (list, tuple)):
        return ", ".join(stringify(item) for item in value if item is not None and item != "")
    if isinstance(value, dict):
        return json.dumps(jsonable(value), sort_keys=True, ensure_ascii=False)
    return stringify(_jsonable_other(value, 0))


# --------------------------------------------------------------------------------------
# Exact numbers: what the target reads back is what the source holds
# --------------------------------------------------------------------------------------

EXACT_INTEGER = 2**53
"""Every integer up to this magnitude is a double; past it, only some are."""

MAX_INTEGER_DIGITS = 20
"""An ``integer`` field with more digits than this (``"1e999999999"``) is refused before it is
built (anything past 16 digits is past ``EXACT_INTEGER`` anyway)."""


def exact_float(number: Decimal, value: object) -> float:
    """``number`` as the double a JSON reader holds, when that is the same number.

    The rule: the shortest text of the double (``repr``) must have the decimal value of
    ``number``. So ``0.1`` and ``1.5e3`` pass, while ``0.1000000000000000000001`` (more
    digits than a double keeps), ``123456789012345678901234567890``, ``5e-400`` (which
    would become 0) and ``1e400`` (infinity) are ``RecordError`` naming ``value``.
    """
    if not number.is_finite():
        raise RecordError(f"not a finite number: {show(value)}")
    as_float = float(number)
    if not math.isfinite(as_float):
        raise RecordError(f"{show(value)} is too large to be sent as a number")
    if Decimal(repr(as_float)) != number:
        raise RecordError(
            f"{show(value)} can't be sent exactly: a JSON number holds {as_float!r}"
            " (a double keeps about 15 significant digits); send it as a string"
            " or round it in the source"
        )
    return as_float


def _exact_int(number: int, value: object) -> int:
    """``number`` when a double holds it exactly (so the target reads back the same)."""
    if -EXACT_INTEGER <= number <= EXACT_INTEGER:
        return number
    try:
        exact = int(float(number)) == number
    except OverflowError:
        exact = False
    if not exact:
        raise RecordError(
            f"{show(value)} can't be sent exactly: a JSON number keeps about 15 significant"
            ' digits; send it as a string (type = "string") or an integer field'
        )
    return number


# --------------------------------------------------------------------------------------
# Keys: one product, one key string
# --------------------------------------------------------------------------------------

_BOM = "\ufeff"


def key_text(value: Any) -> str:
    """The product key of a scalar ``value``: stable text, one string per product.

    Numbers are written in their shortest exact decimal form, whatever their type, so
    ``1``, ``1.0``, ``Decimal("1.00")`` and a JSON ``1e3`` (``"1000"``) name the same
    product the next run too; a float key past 2**53 is refused (many integers share
    one such float), and so are booleans and non-finite numbers. A string key is text:
    ``"1.0"`` stays ``"1.0"``.

    Text is normalised where no two real keys can meet: to Unicode NFC (``"é"`` typed
    as e + combining accent is the same key as the precomposed one, and the target
    shows both alike), surrounding whitespace and a leading byte order mark stripped (an
    export that starts writing a BOM, or a padded cell, must not turn a product into a
    "new" one and delete the old). Whatever invisible or control character remains
    (Unicode categories Cc, Cf, Zl, Zp, Co, Cs, Cn, and every space but U+0020: a
    zero-width space, a BOM inside the key, a tab, a no-break space) is **not**
    removed: "A\u200b1" and "A1" may be two products a careless export made look
    alike, and merging them would push one over the other. Such a key is refused with
    ``RecordError`` that shows it escaped and names the characters, and whose ``key``
    is its visible twin (those characters removed, spaces made plain): the reconciler
    stages the key of a refused record as seen, so the product the key passes for in
    state and on the target is kept as it is, not deleted, until the source is fixed.
    The refused key itself (and, when it holds an odd space, its form without it) is in
    ``RecordError.also_keys``: a product pushed under it is to be kept the same way.
    """
    kind = type(value)
    if kind is str:
        return _key_string(value)
    if kind is int:
        return str(value)
    if isinstance(value, bool):
        raise RecordError(f"a boolean is not a key: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(f"not a finite number: {show(value)}")
        if value.is_integer():
            if abs(value) > EXACT_INTEGER:
                raise RecordError(
                    f"the key {value!r} is a float past 2**53, which many integers share;"
                    " give the source's key as text or an integer"
                )
            return str(int(value))
        return repr(float(value))
    if isinstance(value, int):  # an int-based enum, say
        return str(int(value))
    if isinstance(value, str):
        return _key_string(value[:])
    return _key_string(stringify(value))  # Decimal exactly, dates in ISO form, UUIDs


_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
"""Unicode's Default_Ignorable_Code_Point: drawn as nothing, whatever their category
(``str.isprintable`` calls U+034F COMBINING GRAPHEME JOINER and U+3164 HANGUL FILLER
printable)."""


def _invisible(char: str) -> bool:
    return not char.isprintable() or _IGNORABLE.match(char) is not None


def _key_string(text: str) -> str:
    if text.isascii() and text.isprintable():  # nearly every key: nothing to do
        return text.strip()
    text = text.strip().lstrip(_BOM).strip()  # also " \ufeffA1": strip, BOM, strip
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if text.isprintable() and not _IGNORABLE.search(text):
        return text
    hidden = sorted({char for char in text if _invisible(char)})
    names = ", ".join(
        f"U+{ord(char):04X} {unicodedata.name(char, unicodedata.category(char))}"
        for char in hidden[:5]
    )
    twin = visible_twin(text)
    kept = f"; the product {show(twin)} is kept as it is" if twin else ""
    raise RecordError(
        f"the key {show(text)} holds invisible or control characters ({names}):"
        f" fix the source{kept}",
        key=twin or None,
        also_keys=tuple(
            k for k in dict.fromkeys((text, visible_twin(text, spaces=""))) if k != twin
        ),
    )


def visible_twin(text: str, *, spaces: str = " ") -> str:
    """``text`` as it looks: invisible and control characters dropped, other spaces
    made plain (or replaced by ``spaces``)."""
    out = []
    for char in text:
        if not _invisible(char):
            out.append(char)
        elif unicodedata.category(char) == "Zs":
            out.append(spaces)
    return unicodedata.normalize("NFC", "".join(out)).strip()


# --------------------------------------------------------------------------------------
# Coercions
# --------------------------------------------------------------------------------------

_CURRENCY = r"(?:[A-Z]{3}|[A-Za-z]{0,2}\$|[€£¥₹₩₽₺₪₫₱₦₴₡₲₵₸฿¢]|zł|kr|Kč|Fr\.?|S/)"


def _number_pattern(decimal: str, groups: str) -> re.Pattern[str]:
    return re.compile(
        rf"\s*(?:{_CURRENCY}\s*)?(?P<sign>[-+]?)\s*(?:{_CURRENCY}\s*)?"
        rf"(?P<int>[0-9]{{1,3}}(?P<sep>[{groups}])[0-9]{{3}}(?:(?P=sep)[0-9]{{3}})*|[0-9]*)"
        rf"(?:{decimal}(?P<frac>[0-9]*))?(?:[eE](?P<exp>[-+]?[0-9]+))?\s*(?:{_CURRENCY})?\s*"
    )


_NUMBER_TEXT = {
    ".": _number_pattern(r"\.", ",' \u00a0\u202f"),
    ",": _number_pattern(",", r".' \u00a0\u202f"),
}
_INTEGER_TEXT = re.compile(r"\s*[-+]?[0-9]{1,18}\s*")
"""ASCII digits only: ``int()`` and ``float()`` also take Arabic-Indic and full-width ones."""
_LIST_SEPARATORS = re.compile(r"[,|]")
INDEX_TEXT = re.compile(r"-?[0-9]+")
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})


def _number_text(text: str, decimal_separator: str) -> str:
    """A price-like string as plain decimal text (``"-1234.50"``), or ``RecordError``."""
    match = _NUMBER_TEXT[decimal_separator].fullmatch(text)
    if match is None or not (match["int"] or match["frac"]):
        other = "," if decimal_separator == "." else "."
        match = _NUMBER_TEXT[other].fullmatch(text)
        hint = f' (with decimal_separator = "{other}" it would be one)'
        if match is None or not (match["int"] or match["frac"]):
            hint = ""
        raise RecordError(f"not a number: {show(text)}{hint}")
    digits = match["int"] or "0"
    if match["sep"]:
        digits = digits.replace(match["sep"], "")
    exponent = f"e{match['exp']}" if match["exp"] else ""
    return f"{match['sign']}{digits}.{match['frac'] or '0'}{exponent}"


@functools.lru_cache(maxsize=64)
def plain_number(text: str) -> int | float | None:
    """The number of ``"1,234.56"`` (the decimal separator ``.``): ASCII digits, at most
    one ``.``, ``,`` only between groups of three, at most 15 digits; None for any other
    text (the long way reads it).

    Remembered for a while: every target maps the same record in turn, so a price is
    converted once per record rather than once per target. Keyed by the text alone: only
    the ``.`` separator asks (``_to_number``, a mapper's number field), and what it keeps
    (an int, a float, None) can't be changed by a caller."""
    if len(text) > 20 or not text.isascii():
        return None
    digits = text.replace(",", "") if "," in text else text
    if len(digits) - ("." in digits) > 15 or not digits.replace(".", "", 1).isdigit():
        return None
    if digits is not text and _GROUPED.fullmatch(text) is None:
        return None
    # at most 15 digits, which a double's shortest text keeps exactly (what ``exact_float``
    # checks), so the long way gives this same number
    number = float(digits)
    return int(number) if number.is_integer() else number


_GROUPED = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")
"""Groups of three between ``,`` (the first of one to three), none after the ``.``: for a
text whose digits ``plain_number`` already found plain, one C match instead of cutting
and measuring the groups (0.3 against 1.3 µs)."""


def _to_number(value: Any, decimal_separator: str) -> int | float:
    """A number for JSON; an integral one becomes an int, so 45, 45.0 and "45.000" agree.

    Only a value the target reads back unchanged: ASCII digits (``"١٢٣"`` and
    full-width digits are refused, though ``float()`` takes them), no ``_`` separators, no
    NaN or infinity in any spelling, nothing a double can't hold (``exact_float``):
    the same rule for text, ``Decimal`` (a SQL ``NUMERIC``) and big integers.
    """
    kind = type(value)
    if kind is int:
        return _exact_int(value, value)
    if kind is bool:
        raise RecordError(f"a boolean is not a number: {value!r}")
    if kind is float:
        number: float = _finite(value)
    elif kind is str:
        if decimal_separator == ".":
            plain = plain_number(value)
            if plain is not None:
                return plain
        try:
            exact = Decimal(_number_text(value, decimal_separator))
        except InvalidOperation:  # an exponent past what Decimal holds
            raise RecordError(f"{show(value)} is too large to be sent as a number") from None
        number = exact_float(exact, value)
    elif isinstance(value, int):  # an int-based enum, say
        return _exact_int(int(value), value)
    elif isinstance(value, Decimal):
        number = exact_float(value, value)
    elif isinstance(value, float):
        number = _finite(float(value))
    else:
        raise RecordError(f"not a number: {show(value)}")
    if number.is_integer() and abs(number) <= EXACT_INTEGER:
        return int(number)
    return number


def _to_integer(value: Any, decimal_separator: str) -> int:
    kind = type(value)
    if kind is int and -EXACT_INTEGER <= value <= EXACT_INTEGER:
        return value  # type: ignore[no-any-return]
    if kind is str and _INTEGER_TEXT.fullmatch(value) and len(value) < 16:
        return int(value)  # at most 15 digits: well within EXACT_INTEGER
    if isinstance(value, bool):
        raise RecordError(f"a boolean is not an integer: {value!r}")
    if isinstance(value, int):
        return _exact_integer(int(value), value)
    try:
        if isinstance(value, str):
            exact = Decimal(_number_text(value, decimal_separator))
        elif isinstance(value, (float, Decimal)):
            exact = Decimal(value)
            if not exact.is_finite():
                raise RecordError(f"not a finite number: {show(value)}")
        else:
            raise RecordError(f"not an integer: {show(value)}")
    except InvalidOperation:
        raise RecordError(f"not an integer: {show(value)}") from None
    if exact.adjusted() >= MAX_INTEGER_DIGITS:
        raise RecordError(f"too large for an integer: {show(value)}")
    if exact != exact.to_integral_value():
        raise RecordError(f"not an integer: {show(value)}")
    return _exact_integer(int(exact), value)


def _exact_integer(number: int, value: object) -> int:
    """``number`` when every JSON reader (doubles included) reads it back unchanged."""
    if abs(number) > EXACT_INTEGER:
        raise RecordError(
            f"{show(value)} can't be sent exactly: past 2**53 a JSON number reader holding "
            'doubles rounds it; send it as a string (type = "string") or fix the source'
        )
    return number


def _to_boolean(value: Any, decimal_separator: str) -> bool:
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise RecordError(f"not a boolean: {show(value)}")


def _to_string(value: Any, decimal_separator: str) -> str:
    return stringify(value)


def _to_json(value: Any, decimal_separator: str) -> Any:
    return jsonable(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_JSON_TEXT = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_json(value: Any, decimal_separator: str, floats: list[float] | None = None) -> Any:
    """``type = "json"``: a text is parsed as JSON (a database's JSON aggregate returned as
    a string); any other value is taken as it is. Either must be JSON-compatible
    (``floats``: see ``jsonable``)."""
    if not isinstance(value, str):
        return jsonable(value, 0, floats)
    try:
        parsed = _JSON_TEXT.decode(value)
    except json.JSONDecodeError as exc:
        raise RecordError(
            f"not valid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): "
            f"{exc.msg}: {show(value)}"
        ) from None
    except ValueError as exc:
        raise RecordError(f"not valid JSON: {exc}: {show(value)}") from None
    except RecursionError:
        raise RecordError("not valid JSON: nested too deeply to parse") from None
    return jsonable(parsed, 0, floats)


def as_it_is(value: Any, decimal_separator: str) -> Any:
    return value


def _to_list(
    value: Any, decimal_separator: str, floats: list[float] | None = None
) -> list[Any] | _Missing:
    """``type = "list"``: a text cut at ``,`` and ``|``, anything else a list of JSON data
    (``floats``: see ``jsonable``)."""
    if isinstance(value, str):
        items = [item.strip() for item in _LIST_SEPARATORS.split(value)]
        return [item for item in items if item] or MISSING
    if isinstance(value, (list, tuple)):
        return jsonable(list(value), 0, floats)  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        raise RecordError(f"not a list: {show(value)}")
    return [jsonable(value, 0, floats)]


COERCIONS: dict[ValueType | None, Callable[[Any, str], Any]] = {
    None: _to_json,
    "json": _parse_json,
    "number": _to_number,
    "integer": _to_integer,
    "boolean": _to_boolean,
    "string": _to_string,
    "list": _to_list,
}


def coerce(value: Any, type: ValueType | None, *, decimal_separator: str = ".") -> Any:
    """``value`` as the given field type (``None``: JSON-compatible as it is).

    For callables that need the mapping's rules (``coerce("$ 12.99", "number")``).
    Raise ``RecordError`` when the value can't be coerced; a ``list`` of a string
    without items is ``MISSING``.
    """
    return COERCIONS[type](value, decimal_separator)


# --------------------------------------------------------------------------------------
# Lists of objects: one key's values, repeated items dropped
# --------------------------------------------------------------------------------------


def pick_values(items: Any, get: Callable[[Any], Any]) -> Any:
    """What ``get`` reads from each object of ``items`` (``pick``): objects where it
    finds nothing (None, ``""``) are skipped, a list found gives each of its items.

    A single object gives its value; ``RecordError`` for an item that is not an object.
    """
    if isinstance(items, Mapping):
        found = get(items)
        return MISSING if found is None or found == "" else found
    if not isinstance(items, (list, tuple)):
        raise RecordError(f"pick needs objects, not {show(items)}")
    out: list[Any] = []
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise RecordError(f"pick needs objects, item {position} is {show(item)}")
        found = get(item)
        if isinstance(found, (list, tuple)):
            out.extend(one for one in found if one is not None and one != "")
        elif found is not None and found != "":
            out.append(found)
    return out or MISSING


def distinct_values(items: Any) -> Any:
    """``items`` without repeats, the first of each kept in order (``distinct``); equal
    objects and lists count as repeats too. A value that is not a list is returned as is."""
    if not isinstance(items, (list, tuple)):
        return items
    seen: set[Any] = set()
    out = []
    for item in items:
        if isinstance(item, (dict, list, tuple)):
            mark: Any = json.dumps(jsonable(item), sort_keys=True, ensure_ascii=False)
        else:
            mark = (isinstance(item, str), isinstance(item, bool), item)
        if mark not in seen:
            seen.add(mark)
            out.append(item)
    return out
