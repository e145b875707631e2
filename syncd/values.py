"""Values: what a record's field may become, and the coercions that get it there.

JSON-compatible forms (Decimal, datetime, depth limit, NaN refused), strings as targets
want them, and ``coerce`` for each ``type`` a field spec names: prices such as
``"1.234,50"`` or ``"$ 12.99"``, booleans, lists, exact integers. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
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
    text = value if isinstance(value, str) else repr(value)
    if len(text) > 40:
        text = text[:39] + "…"
    return repr(text) if isinstance(value, str) else text


def _finite(value: float) -> float:
    if value - value == 0.0:  # false for NaN and both infinities
        return value
    raise RecordError(f"not a finite number: {show(value)}")


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-compatible data, the same object when it already is."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return _finite(value)
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise RecordError(f"nested deeper than {MAX_DEPTH} levels")
        copy: dict[str, Any] | None = None
        for name, item in value.items():
            if type(name) is not str:
                raise RecordError(f"not JSON-compatible: a {type(name).__name__} key {show(name)}")
            new = jsonable(item, depth + 1)
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
            new = jsonable(item, depth + 1)
            if new is not item:
                if items is None:
                    items = list(value)
                items[position] = new
        return value if items is None else items
    return _jsonable_other(value, depth)


def _jsonable_other(value: Any, depth: int) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RecordError(f"not a finite number: {show(value)}")
        return float(value)
    if isinstance(value, int):  # an int-based enum, say
        return int(value)
    if isinstance(value, float):
        return _finite(float(value))
    if isinstance(value, str):
        return value[:]  # a plain str, even from a str-based enum
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return jsonable(dict(value), depth)
    if isinstance(value, (list, tuple)):
        return jsonable(list(value), depth)
    raise RecordError(f"not JSON-compatible: {type(value).__name__} {show(value)}")


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


_CURRENCY = r"(?:[A-Z]{3}|[A-Za-z]{0,2}\$|[€£¥₹₩₽₺₪₫₱₦₴₡₲₵₸฿¢]|zł|kr|Kč|Fr\.?|S/)"


def _number_pattern(decimal: str, groups: str) -> re.Pattern[str]:
    return re.compile(
        rf"\s*(?:{_CURRENCY}\s*)?(?P<sign>[-+]?)\s*(?:{_CURRENCY}\s*)?"
        rf"(?P<int>\d{{1,3}}(?P<sep>[{groups}])\d{{3}}(?:(?P=sep)\d{{3}})*|\d*)"
        rf"(?:{decimal}(?P<frac>\d*))?(?:[eE](?P<exp>[-+]?\d+))?\s*(?:{_CURRENCY})?\s*"
    )


_NUMBER_TEXT = {
    ".": _number_pattern(r"\.", ",' \u00a0\u202f"),
    ",": _number_pattern(",", r".' \u00a0\u202f"),
}
_INTEGER_TEXT = re.compile(r"\s*[-+]?\d{1,18}\s*")
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


def _to_number(value: Any, decimal_separator: str) -> int | float:
    """A number for JSON; an integral one becomes an int, so 45, 45.0 and "45.000" agree."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        raise RecordError(f"a boolean is not a number: {value!r}")
    if kind is float:
        number: float = _finite(value)
    elif kind is str:
        number = _finite(float(_number_text(value, decimal_separator)))
    elif isinstance(value, int):  # an int-based enum, say
        return int(value)
    elif isinstance(value, (Decimal, float)):
        if not math.isfinite(value):
            raise RecordError(f"not a finite number: {show(value)}")
        number = float(value)
    else:
        raise RecordError(f"not a number: {show(value)}")
    if number.is_integer() and abs(number) <= 2**53:
        return int(number)
    return number


def _to_integer(value: Any, decimal_separator: str) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    if isinstance(value, bool):
        raise RecordError(f"a boolean is not an integer: {value!r}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        exact = Decimal(_number_text(value, decimal_separator))
    elif isinstance(value, (float, Decimal)):
        if not math.isfinite(value):
            raise RecordError(f"not a finite number: {show(value)}")
        exact = Decimal(value)
    else:
        raise RecordError(f"not an integer: {show(value)}")
    if exact != exact.to_integral_value():
        raise RecordError(f"not an integer: {show(value)}")
    return int(exact)


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


def as_it_is(value: Any, decimal_separator: str) -> Any:
    return value


def _to_list(value: Any, decimal_separator: str) -> list[Any] | _Missing:
    if isinstance(value, str):
        items = [item.strip() for item in _LIST_SEPARATORS.split(value)]
        return [item for item in items if item] or MISSING
    if isinstance(value, (list, tuple)):
        return jsonable(list(value))  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        raise RecordError(f"not a list: {show(value)}")
    return [jsonable(value)]


COERCIONS: dict[ValueType | None, Callable[[Any, str], Any]] = {
    None: _to_json,
    "json": _to_json,
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
