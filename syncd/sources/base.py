"""The ``Source`` protocol, and the grouping of rows that belong to one product.

A source reads the whole catalog once per run. Iterating ``read()`` to the end
without an exception means the read completed; any failure (connection lost,
malformed page, truncated file) raises ``SourceError`` and the run sends no deletes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from syncd.model import Record, SourceItem, UnreadableRow


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


def _group_value(record: Record, field: str) -> object:
    value: object = record
    for part in field.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def filter_records(items: Iterable[SourceItem], where: Mapping[str, Any]) -> Iterator[SourceItem]:
    """Only the records matching every ``path = value`` (or ``path = [values]``) of ``where``."""
    tests = [
        (path, tuple(value) if isinstance(value, list) else (value,))
        for path, value in where.items()
    ]
    for item in items:
        if isinstance(item, UnreadableRow) or all(
            _group_value(item, path) in allowed for path, allowed in tests
        ):
            yield item


def read_catalog(source: Source, config: _SourceOptions) -> Iterator[SourceItem]:
    """A source's items with the config's grouping and filter applied."""
    items: Iterable[SourceItem] = source.read()
    if config.group_by:
        items = group_records(items, config.group_by, config.group_into)
    variant = getattr(config, "variant", None)
    if variant is not None:
        from syncd.sources.join import join_variants

        items = join_variants(items, variant, getattr(config, "key", "id"))
    if config.where:
        items = filter_records(items, config.where)
    return iter(items)


class _SourceOptions(Protocol):
    @property
    def group_by(self) -> str | None: ...
    @property
    def group_into(self) -> str: ...
    @property
    def where(self) -> dict[str, Any]: ...


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
