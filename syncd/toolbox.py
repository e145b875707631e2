"""The toolbox for mapping hooks (``mapping.callable``): the rules the declarative mapping
uses, as plain functions. Import from here only; what it offers is kept stable::

    from syncd.toolbox import html_to_text, parse_number, truncate, split_pairs

Each function raises ``RecordError`` (or ``ValueError``) for a value it can't use; raised
from a hook, either rejects that record with its message and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from syncd.config import FieldSpec
from syncd.errors import RecordError
from syncd.mapping import compile_field
from syncd.model import Record
from syncd.text import html_to_text, parse_pairs, split_pairs, split_text, truncate_words
from syncd.values import MISSING, coerce, distinct_values, key_text, stringify

__all__ = [
    "RecordError",
    "distinct",
    "field",
    "html_to_text",
    "key_text",
    "parse_boolean",
    "parse_integer",
    "parse_number",
    "parse_pairs",
    "parse_price",
    "pick",
    "split",
    "split_pairs",
    "stringify",
    "truncate",
]


def parse_number(value: Any, *, decimal_separator: str = ".") -> int | float:
    """``value`` as ``type = "number"`` reads it: ``"$ 1,234.50"`` gives 1234.5, ``"45.000"``
    gives 45; with ``decimal_separator=","``, ``"1.234,50 €"`` gives 1234.5.

    Only a number the target reads back unchanged: ASCII digits, no NaN or infinity,
    nothing a double can't hold exactly. ``RecordError`` otherwise (``not a number: 'abc'``).
    """
    return coerce(value, "number", decimal_separator=_separator(decimal_separator))  # type: ignore[no-any-return]


def parse_price(value: Any, *, decimal_separator: str = ".") -> int | float:
    """A price: ``parse_number`` (currency signs and codes around it, thousands separators)."""
    return parse_number(value, decimal_separator=decimal_separator)


def parse_integer(value: Any, *, decimal_separator: str = ".") -> int:
    """``value`` as ``type = "integer"`` reads it (``"1,000"`` gives 1000, ``"1.5"`` is refused)."""
    return coerce(value, "integer", decimal_separator=_separator(decimal_separator))  # type: ignore[no-any-return]


def parse_boolean(value: Any) -> bool:
    """``value`` as ``type = "boolean"`` reads it (true/yes/y/on/1, false/no/n/off/0)."""
    return coerce(value, "boolean")  # type: ignore[no-any-return]


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters on a word boundary (``max_length``)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return truncate_words(text, limit)


def split(
    text: str, separators: str | Sequence[str] = ",", *, trim: bool | str = True
) -> list[str]:
    """``text`` cut at any of ``separators``, items trimmed, blank ones dropped (``split``):
    ``split("a\\nb\\n", "\\n") == ["a", "b"]``."""
    return split_text(text, separators, trim=trim)


def pick(items: Any, path: str) -> list[Any]:
    """Each object's value at the dotted ``path`` (``pick``), objects without it skipped:
    ``pick(split_pairs("size=S|size=M"), "size") == ["S", "M"]``."""
    found = field({"path": "items", "pick": path})({"items": items})
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def distinct(items: Sequence[Any]) -> list[Any]:
    """``items`` without repeats, the first of each kept in order (``distinct = true``)."""
    return list(distinct_values(list(items)))


def field(spec: str | Mapping[str, Any]) -> Callable[[Record], Any]:
    """A field spec of the TOML mapping, compiled once into a function of a record that
    returns its value, or None when the record has none. Compile it once, outside the hook::

        SIZES = field({"path": "Attributes", "pairs": {}, "pick": "size", "distinct": True})

        def adjust(record, document):
            document["properties"]["sizes"] = SIZES(record)
            return document

    ``ValueError`` (naming the option) for a spec the config would refuse.
    """
    try:
        compiled = FieldSpec.model_validate({"path": spec} if isinstance(spec, str) else spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"bad field spec: {problems}") from None
    value = compile_field(compiled)

    def read(record: Record) -> Any:
        found = value(record)
        return None if found is MISSING else found

    return read


def _separator(decimal_separator: str) -> str:
    if decimal_separator not in (".", ","):
        raise ValueError(f'decimal_separator must be "." or ",", not {decimal_separator!r}')
    return decimal_separator
