"""Seeding state without pushing, for the 1M runs, and the sizes of what a push sends.

A first sync of a million products against the Python fakes takes the fakes most of
an hour, so at that size the bench writes what a completed first sync leaves in
state (each target's key, hash, canonical payload and the fingerprint of the raw row it
came from, a JSON Lines row or the hash a SQL database computes of its row, through
``apply_acks``, as the executor would on each acknowledgement) and measures only the
runs that follow. The same pass adds up the request bodies a naive full re-push would send.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from syncd.config import SyncdConfig, UserfluxTargetConfig
from syncd.mapping import build_mapper
from syncd.model import SourceItem, UnreadableRow
from syncd.reconcile import mapping_fingerprint, record_row, row_digest, row_fingerprint
from syncd.sources import open_source, read_catalog
from syncd.sources.base import fingerprinted_rows
from syncd.sources.file import FileSource
from syncd.state import open_store

CHUNK = 5000
_FULL_UPDATE = len(',"propertiesUpdateType":"FULL_UPDATE"')


@dataclass
class NaiveSizes:
    """Requests and body bytes of a naive full re-push, per target name."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)


def naive_sizes(config: SyncdConfig, *, seed: bool, batch: int = 2000) -> NaiveSizes:
    """Map the whole catalog once: the naive re-push's sizes, and (``seed``) state rows."""
    mappers = [(target, build_mapper(target, config.source.key)) for target in config.targets]
    store = open_store(config.state.resolved_url()) if seed else None
    sizes = NaiveSizes()
    pending: dict[str, list[tuple[str, bytes, bytes, bytes | None]]] = {
        t.name: [] for t, _ in mappers
    }
    keys = {t.name: mapping_fingerprint(config.source, t) for t, _ in mappers}
    count = 0
    for record, raw in _records(config):
        if isinstance(record, UnreadableRow):
            continue
        count += 1
        for target, mapper in mappers:
            document = mapper.map(record)
            key = keys[target.name]
            source_hash = (
                None if raw is None or key is None else row_fingerprint(row_digest(raw), key)
            )
            size = len(document.canonical)
            if isinstance(target, UserfluxTargetConfig):
                sizes.bytes[target.name] = sizes.bytes.get(target.name, 0) + size + _FULL_UPDATE
            else:
                sizes.bytes[target.name] = sizes.bytes.get(target.name, 0) + size + 1
            if store is not None:
                rows = pending[target.name]
                rows.append((document.key, document.hash, document.canonical, source_hash))
                if len(rows) >= CHUNK:
                    store.apply_acks(target.name, rows)
                    rows.clear()
    for target, _ in mappers:
        if isinstance(target, UserfluxTargetConfig):
            sizes.requests[target.name] = count
        else:
            sizes.requests[target.name] = -(-count // batch)
            sizes.bytes[target.name] += sizes.requests[
                target.name
            ]  # "[" per batch, "]" for the last ","
        if store is not None and pending[target.name]:
            store.apply_acks(target.name, pending[target.name])
    if store is not None:
        store.close()
    return sizes


def _records(config: SyncdConfig) -> Iterator[tuple[SourceItem, bytes | None]]:
    """Each record with the raw row a run fingerprints: a JSON Lines row (stripped), or
    the database's fingerprint of a SQL row, or for other sources the record as JSON
    (``record_row``)."""
    source = open_source(config.source, config.http)
    if isinstance(source, FileSource) and source.can_read_lines():
        for line in source.read_lines():
            item = source.parse_line(line)
            if item is not None:
                yield item, line.data.strip()
        return
    fingerprinted = fingerprinted_rows(source)
    if fingerprinted is not None:  # SQL: the fingerprint the database computes
        for block in fingerprinted.read_fingerprints():
            items = block.records(range(len(block.fingerprints)))
            yield from zip(items, block.fingerprints, strict=True)
        return
    for item in read_catalog(source, config.source):
        yield item, None if isinstance(item, UnreadableRow) else record_row(item)
