"""The ``Source`` protocol, and the grouping of rows that belong to one product.

A source reads the whole catalog once per run. Iterating ``read()`` to the end
without an exception means the read completed; any failure (connection lost,
malformed page, truncated file) raises ``SourceError`` and the run sends no deletes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
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
