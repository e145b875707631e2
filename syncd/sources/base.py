"""The ``Source`` protocol, and the grouping of rows that belong to one product.

A source reads the whole catalog once per run. Iterating ``read()`` to the end
without an exception means the read completed; any failure (connection lost,
malformed page, truncated file) raises ``SourceError`` and the run sends no deletes.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import orjson

from syncd.config import CONDITION_OPTIONS, Condition, Where, parse_condition
from syncd.errors import RecordError
from syncd.model import Record, SourceItem, UnreadableRow
from syncd.values import coerce, show


class Source(Protocol):
    """Reads the catalog."""

    def read(self) -> Iterator[SourceItem]:
        """Yield every record (or unparseable row) once; raise ``SourceError`` on failure."""
        ...

    def describe(self) -> str:
        """Where the source reads from, for logs (no secrets)."""
        ...

    @property
    def can_prove_complete(self) -> bool:
        """Whether a read that ended without an error is known to hold the whole catalog.

        True for files (a cut file fails the read) and SQL (one query in one
        transaction). False for an HTTP source whose pagination can end on an early empty
        or short page indistinguishable from the end (``page``/``offset`` without
        ``total_path``): its absences are then only as good as ``confirm_absent``.
        """
        ...

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        """A second look at products the read did not find (``keys``, as text).

        Returns the subset the source confirms gone now; keys found present, or that
        could not be checked, are left out. None when this source can't take a second
        look. Grouping and ``where`` are the read's: a key whose rows no longer pass
        ``where`` is gone for the catalog. Never raises for one key; ``SourceError`` only
        when the source can't be reached at all.
        """
        ...


@dataclass(frozen=True)
class KeyedRead:
    """What a targeted read of named keys found (``read_keys``, for the change feeds)."""

    rows: tuple[SourceItem, ...]
    """The source's rows of those keys, as a whole read would return them (grouping,
    variants and ``where`` not applied yet)."""
    gone: frozenset[str] = frozenset()
    """Keys the source answered for and does not have (an HTTP item 404/410)."""
    unreachable: frozenset[str] = frozenset()
    """Keys the read could not reach: unknown, never to be deleted."""


class RawBlock(Protocol):
    """Consecutive raw rows of a source, undecoded (a JSON Lines file's ``LineBlock``)."""

    lines: list[bytes]
    """Each row's bytes, as read."""


@runtime_checkable
class RawRows(Protocol):
    """A source that can hand over its rows undecoded, a block at a time, and parse those
    asked for: a run then fingerprints rows before parsing them, and parses only those
    some target does not know (see ``raw_rows``)."""

    def can_read_lines(self) -> bool:
        """Whether ``read_blocks`` works for this source's current settings."""
        ...

    def read_blocks(self) -> Iterator[RawBlock]:
        """Every row, in blocks, blank rows included."""
        ...

    def parse_rows(self, block: Any, indexes: Iterable[int]) -> Iterator[SourceItem | None]:
        """The records of rows ``indexes`` (ascending) of a block ``read_blocks`` yielded,
        in that order (None: a blank row, not a record)."""
        ...


def raw_rows(source: Source) -> RawRows | None:
    """``source`` as ``RawRows`` when it says it can hand over raw rows now; else None."""
    if isinstance(source, RawRows) and source.can_read_lines():
        return source
    return None


class FingerprintBlock(Protocol):
    """Consecutive rows of a source known only by their fingerprints, whole rows fetched
    on demand (``FingerprintedRows.read_fingerprints``)."""

    fingerprints: list[bytes]
    """Each row's fingerprint bytes (equal bytes: an equal row, as the mapping sees it)."""

    def records(self, indexes: Sequence[int]) -> Iterator[SourceItem]:
        """The records of rows ``indexes`` (ascending), in that order, fetched whole."""
        ...


@runtime_checkable
class FingerprintedRows(Protocol):
    """A source that can fingerprint its rows where they live (a database computing a
    hash of each row) and fetch whole only the rows some target does not know (see
    ``fingerprinted_rows``)."""

    def can_fingerprint(self) -> bool:
        """Whether ``read_fingerprints`` works for this source's current settings."""
        ...

    def read_fingerprints(self, whole: bool = False) -> Iterator[FingerprintBlock]:
        """Every row's fingerprint, in blocks; the blocks' ``records`` read the same state
        of the source (one snapshot) until the iteration ends. ``whole``: every row will be
        asked for (no target skips rows: a first sync, a full refresh), so the source may
        read rows whole in the same pass. Fails like ``read``."""
        ...


def fingerprinted_rows(source: Source) -> FingerprintedRows | None:
    """``source`` as ``FingerprintedRows`` when it says it can fingerprint rows now; else
    None."""
    if isinstance(source, FingerprintedRows) and source.can_fingerprint():
        return source
    return None


def _group_value(record: Record, field: str) -> object:
    value: object = record
    for part in field.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _as_number(value: object) -> float | None:
    """A number, or a text that is one (``"12.50"``, ``" -3 "``); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        number = float(value)
    elif isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def _equal(value: object, wanted: object) -> bool:
    """``value == wanted``, or a text spelling the number or boolean wanted (CSV cells)."""
    if value == wanted:
        return True
    if isinstance(wanted, bool):
        if isinstance(value, str):
            try:
                return bool(coerce(value, "boolean") is wanted)
            except RecordError:
                return False
        return False
    if isinstance(value, str) != isinstance(wanted, str):  # "5" and 5, not "001" and "1"
        number, other = _as_number(value), _as_number(wanted)
        return number is not None and number == other
    return False


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (list, dict)) and not value


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)
    return None


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}

Test = Callable[[object], bool]


def _compared(
    compare: Callable[[float, float], bool], bound: float, decimal_separator: str
) -> Test:
    """A numeric comparison: a missing value does not match; a present one is read as
    ``type = "number"`` reads it (``"$ 1,299.00"``), and one that still isn't a number
    raises ``RecordError``: the filter can't tell, and guessing would drop a product."""

    def test(value: object) -> bool:
        if _is_missing(value):
            return False
        if isinstance(value, (list, dict)):
            raise RecordError(f"a comparison needs a number, not {show(value)}")
        number = coerce(value, "number", decimal_separator=decimal_separator)
        return compare(float(number), bound)

    return test


def _test(op: str, operand: Any, decimal_separator: str = ".") -> Test:
    """The test of one operator of a ``Condition`` on a field's value."""
    if op == "eq":
        return lambda value: _equal(value, operand)
    if op == "ne":
        return lambda value: not _equal(value, operand)
    if op == "in":
        return lambda value: any(_equal(value, each) for each in operand)
    if op == "not_in":
        return lambda value: not any(_equal(value, each) for each in operand)
    if op in ("missing", "present"):
        wanted = operand if op == "missing" else not operand
        return lambda value: _is_missing(value) is wanted
    if op in _COMPARE:
        return _compared(_COMPARE[op], float(operand), decimal_separator)
    if op == "regex":
        search = re.compile(operand).search
        return lambda value: (text := _text(value)) is not None and search(text) is not None
    raise ValueError(f"unknown filter operator {op!r}")


@functools.lru_cache(maxsize=64)
def _compiled(where: tuple[tuple[str, Condition], ...]) -> Callable[[Record], bool]:
    tests = [
        (path, _test(op, operand, _decimal_separator(condition)))
        for path, condition in where
        for op, operand in condition.tests
        if op not in CONDITION_OPTIONS
    ]

    def matches(record: Record) -> bool:
        for path, test in tests:
            try:
                if not test(_group_value(record, path)):
                    return False
            except RecordError as exc:
                raise RecordError(exc.reason, field=path) from None
        return True

    return matches


def _decimal_separator(condition: Condition) -> str:
    return str(dict(condition.tests).get("decimal_separator", "."))


def compile_where(where: Mapping[str, Condition | Any]) -> Callable[[Record], bool]:
    """A predicate: whether a record passes every condition of ``where`` (a config's
    ``where`` table; a plain value or list is read as ``parse_condition`` reads it).

    A missing field is None: it fails ``eq``, ``in`` and comparisons and passes ``ne``,
    ``not_in`` and ``missing``. Comparisons read a present value as ``type = "number"``
    does (``"12.50"``, ``"$ 1,299"``; ``decimal_separator = ","`` in the condition for
    ``"12,50"``); one that still isn't a number makes the predicate raise ``RecordError``
    naming the field: the filter can't tell whether the record belongs. ``regex``
    searches a text (or a number's digits) anywhere: anchor it with ``^``/``$``.
    """
    key = tuple((path, parse_condition(condition)) for path, condition in where.items())
    return _compiled(key)


def record_matches(record: Record, where: Mapping[str, Condition | Any]) -> bool:
    """Whether ``record`` passes every condition of ``where`` (``compile_where``)."""
    return compile_where(where)(record)


def filter_records(
    items: Iterable[SourceItem], where: Mapping[str, Condition | Any], key: str | None = None
) -> Iterator[SourceItem]:
    """Only the records passing every condition of ``where`` (``compile_where``);
    unreadable rows pass through. A record the filter can't test (a comparison on a value
    that isn't a number) becomes an unreadable row naming it by ``key`` (the source's key
    path), so the read is incomplete rather than missing a product."""
    matches = compile_where(where)
    for item in items:
        if isinstance(item, UnreadableRow):
            yield item
            continue
        try:
            kept = matches(item)
        except RecordError as exc:
            named = _group_value(item, key) if key else None
            place = f"product {show(named)}" if named not in (None, "") else "a record"
            yield UnreadableRow(place, f"source.where: {exc}; it can't be told whether it is kept")
            continue
        if kept:
            yield item


def read_catalog(source: Source, config: _SourceOptions) -> Iterator[SourceItem]:
    """A source's items with the config's grouping and filter applied."""
    items: Iterable[SourceItem] = source.read()
    if config.group_by:
        items = group_records(items, config.group_by, config.group_into)
    variant = getattr(config, "variant", None)
    if variant is not None:
        from syncd.sources.join import join_variants

        # rows are placed by the source (``file.csv:12``) unless grouping hides which row
        place = None if config.group_by else getattr(source, "place", None)
        items = join_variants(items, variant, getattr(config, "key", "id"), place)
    if config.where:
        items = filter_records(items, config.where, getattr(config, "key", None))
    return iter(items)


class _SourceOptions(Protocol):
    @property
    def group_by(self) -> str | None: ...
    @property
    def group_into(self) -> str: ...
    @property
    def where(self) -> Where: ...


def group_records(items: Iterable[SourceItem], by: str, into: str) -> Iterator[SourceItem]:
    """Merge consecutive records that share ``by`` into one: the first row's fields plus
    ``into``, the list of every row of the group. Rows with an empty ``by`` stand alone.

    Exports that spread a product over several rows (Shopify variants) write them
    consecutively, so only one group is held in memory at a time.
    """
    group: list[Record] = []
    current: object = None

    def merged() -> Record:
        head = dict(group[0])
        head[into] = group
        return head

    for item in items:
        if isinstance(item, UnreadableRow):
            yield item
            continue
        value = _group_value(item, by)
        if group and value not in (None, "") and value == current:
            group.append(item)
            continue
        if group:
            yield merged()
        group, current = [item], value
    if group:
        yield merged()


# --------------------------------------------------------------------------------------
# Strict JSON, shared by the file and HTTP sources
# --------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` refusing an object that repeats a key (JSON allows it,
    and the last copy would silently win)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in one object")
            seen.add(key)
    return record


STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=unique_object)
"""Decodes JSON text refusing NaN/Infinity and repeated keys at any depth. Built once:
``json.loads`` with options builds a decoder per call, which costs more than the hook."""


def loads_strict(text: str) -> Any:
    """``STRICT_JSON.decode``; ``ValueError`` for bad JSON, repeated keys, NaN, deep nesting."""
    try:
        return STRICT_JSON.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def quick_object(data: bytes) -> dict[str, Any] | None:
    """The JSON object UTF-8 ``data`` holds, parsed by orjson (about three times faster
    than ``loads_strict``), when that is provably what ``loads_strict(data.decode())``
    returns; None when it can't tell (ask ``loads_strict``, which also words the errors).

    Where orjson parses the text, it parses it to the same values as the standard library
    (it refuses NaN, lone surrogates, invalid UTF-8, a byte order mark, numbers rounding
    to infinity: all left to ``loads_strict``), except in two ways, both detected here in
    ``dumped``, the value written back compactly by orjson:

    - an integer past 64 bits becomes a float (the standard library keeps an ``int``): a
      float of at least 2**63 in size, which ``orjson.dumps`` writes with an exponent
      (``e+18`` and up); so no ``e+`` in ``dumped``, no such float (a string holding
      ``e+`` only sends the line the slow way; a bare ``+``, as in "C++", does not).
    - a repeated key keeps its last copy silently. Each member of an object in valid JSON
      holds exactly one ``:`` outside its strings, and a ``:`` inside a string is one in
      the string parsed unless it is escaped (``\\u003a``, not checked: left to
      ``loads_strict``). So ``data`` holds as many ``:`` as the objects it writes have
      members plus the strings it writes have colons; ``dumped`` the same of the value
      parsed, whose objects lost a member (and its colons) per copy dropped: the counts are
      equal iff no key is repeated.

    Nesting deeper than ``orjson.dumps`` writes (254 levels) is left to ``loads_strict``
    too (which parses that deep well within Python's recursion limit).
    """
    parsed = _quick_parse(data)
    if parsed is None or data.count(b":") != parsed[1].count(b":"):
        return None
    return parsed[0]


def quick_objects(lines: Sequence[bytes]) -> list[dict[str, Any] | None]:
    """``quick_object`` of each line, its checks made on all the lines at once where that
    is exact, by C loops over their bytes joined instead of calls a line (the benchmark's
    lines of ~880 bytes: 38.8k -> 32.2k instructions a line): no ``+`` in any dump, so no
    ``e+``; no backslash in any line, so no ``\\u003``; and the colons, counted by numpy
    (many bytes an instruction) unless the lines are their dumps: a line that orjson parses
    holds at least as many as its dump (a dropped copy only takes some away), so the totals
    are equal iff every line's are. A check the lines fail together is made again line by
    line."""
    values: list[dict[str, Any] | None] = []
    kept: list[bytes] = []
    dumped: list[bytes] = []  # of the lines kept, each one's dump
    for line in lines:  # ``_quick_parse`` but its checks, in one frame
        try:
            value = orjson.loads(line)
            if value.__class__ is dict:
                dumped.append(orjson.dumps(value))
                kept.append(line)
                values.append(value)
                continue
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
        values.append(None)
    data, written = b"".join(kept), b"".join(dumped)
    plus, backslash = written.find(b"+") >= 0, data.find(b"\\") >= 0
    # an escaped colon (``\\u003a``) in one line's strings is one more in its dump: it could
    # make up for another line's dropped copy, so with a backslash each line is counted.
    # Lines written as orjson writes them (compact, as most JSON Lines writers do) are their
    # dumps: the colons are then equal uncounted (a memcmp: 4 µs for 128 of the benchmark's
    # lines, numpy's count 44 µs; and no numpy to load for a plan of such lines)
    colons = backslash or (data != written and _colons(data) != _colons(written))
    if not (plus or colons):
        return values
    checked = iter(zip(kept, dumped, strict=True))
    out: list[dict[str, Any] | None] = []
    for value in values:
        if value is not None:
            line, dump = next(checked)
            if (
                (plus and dump.find(b"e+") >= 0)
                or (backslash and line.find(b"\\u003") >= 0)
                or (colons and line.count(b":") != dump.count(b":"))
            ):
                value = None
        out.append(value)
    return out


def _quick_parse(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """orjson's object of ``data`` and its compact dump, when ``quick_object``'s checks
    but the count of colons pass."""
    try:
        value = orjson.loads(data)
        dumped = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if (  # find, not ``in`` (which first tries the needle as an int, an exception each)
        not isinstance(value, dict)
        or dumped.find(b"e+") >= 0
        or (data.find(b"\\") >= 0 and data.find(b"\\u003") >= 0)  # a backslash first: faster
    ):
        return None
    return value, dumped


def _colons(data: bytes) -> int:
    # NumPy (~270 M instructions, ~60 ms to import) only once lines not written compact
    # are counted (``quick_objects``): a plan of none never loads it
    import numpy as np

    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == ord(":")))
