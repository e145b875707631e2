"""Reading the source once for every target, as blocks of raw rows when it can.

``read_source`` hands each record to every target's ``TargetPlanner`` and returns what the
read came to (``SourceRead``). With fingerprints, each block of raw rows is hashed once
and a row is parsed only when some target doesn't know it (``read_rows``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import compress
from operator import and_, not_
from types import ModuleType

import structlog
from xxhash import xxh3_128_digest

from syncd.config import SourceConfig
from syncd.errors import SourceError
from syncd.model import Record, SourceItem, UnreadableRow
from syncd.sources import Source, read_catalog
from syncd.sources.base import (
    FingerprintBlock,
    FingerprintedRows,
    RawBlock,
    RawRows,
    filter_records,
    fingerprinted_rows,
    raw_rows,
)
from syncd.stages.budget import Budget
from syncd.stages.fingerprinting import record_row
from syncd.stages.planning import CHUNK, TargetPlanner

log = structlog.get_logger("syncd.run")

TURN = 32
"""Records mapped for one target before the next target maps them (``read_rows``): half
the conversions the mapping remembers (``syncd.mapping._html_text``,
``syncd.values._plain_number``: 64 each), so the next target still finds every one of
them (a description is converted to text once for both targets, not once each)."""

RowBlock = tuple[Sequence[bytes], Callable[[Sequence[int]], Iterator[SourceItem | None]]]
"""Raw rows to fingerprint, and the items of the rows at some indexes (ascending), in their
order (None: no record), made on demand."""


@dataclass(frozen=True)
class SourceRead:
    """What one read of the source came to."""

    count: int = 0
    """Records read."""
    error: str | None = None
    """Why the read failed or came back short; None: it completed."""
    unreadable: tuple[UnreadableRow, ...] = ()


@dataclass
class ReadCount:
    """The records a read has returned so far, kept up to date as it goes: a read that
    fails midway still says how many it read (and so the reject guard weighs its
    rejections against them, not against none)."""

    records: int = 0


def read_source(
    source: Source,
    config: SourceConfig,
    planners: Sequence[TargetPlanner],
    budget: Budget,
) -> SourceRead:
    """Read ``source`` once, handing every record to each planner (flushed at the end, even
    after a failed read: what was read is still planned, and sends no deletes)."""
    unreadable: list[UnreadableRow] = []
    read = ReadCount()
    error: str | None = None
    try:
        if any(planner.fingerprint is not None for planner in planners):
            rows, fingerprinted = raw_rows(source), fingerprinted_rows(source)
            blocks = (
                line_blocks(rows, config)
                if rows is not None
                else fingerprint_blocks(
                    fingerprinted, config, whole=not any(p.skipping for p in planners)
                )
                if fingerprinted is not None
                else record_blocks(source, config, unreadable)
            )
            read_rows(blocks, planners, unreadable, budget, read)
        else:
            for item in read_catalog(source, config):
                budget.check_read()
                if isinstance(item, UnreadableRow):
                    unreadable.append(item)
                    continue
                read.records += 1
                for planner in planners:
                    planner.map_one(item, read.records)
    except SourceError as exc:
        error = str(exc)
    count = read.records
    for planner in planners:
        planner.flush(last=True)
    if error is None and count < config.min_records:
        error = (
            f"the source returned {count} records, fewer than "
            f"source.min_records={config.min_records}"
        )
    if error is None and unreadable:
        first = unreadable[0]
        error = (
            f"{len(unreadable)} source rows could not be parsed (first: {first.place}: "
            f"{first.reason}); their products can't be told from deleted ones"
        )
    log.info(
        "syncd.source.read",
        source=source.describe(),
        records=count,
        complete=error is None,
        error=error,
    )
    return SourceRead(count, error, tuple(unreadable))


def line_blocks(source: RawRows, config: SourceConfig) -> Iterator[RowBlock]:
    """A JSON Lines file as blocks of raw rows: each non-blank line's stripped bytes,
    parsed (and filtered by ``source.where``) only when asked for."""
    for block in source.read_blocks():
        stripped = list(map(bytes.strip, block.lines))
        lines: Sequence[int] = range(len(stripped))
        if not all(stripped):  # blank lines are no records
            lines = [i for i in lines if stripped[i]]
            stripped = [stripped[i] for i in lines]

        def parse(
            needed: Sequence[int], block: RawBlock = block, lines: Sequence[int] = lines
        ) -> Iterator[SourceItem | None]:
            return _filtered(source.parse_rows(block, map(lines.__getitem__, needed)), config)

        yield stripped, parse


def _filtered(
    items: Iterator[SourceItem | None], config: SourceConfig
) -> Iterator[SourceItem | None]:
    """``items``, each record ``source.where`` leaves out made None (a record where can't
    test becomes an unreadable row)."""
    if not config.where:
        return items
    return (
        next(filter_records([item], config.where, config.key), None)
        if isinstance(item, dict)
        else item
        for item in items
    )


def fingerprint_blocks(
    source: FingerprintedRows, config: SourceConfig, *, whole: bool = False
) -> Iterator[RowBlock]:
    """A source fingerprinting its rows itself (a SQL database) as blocks of raw rows: each
    row's fingerprint, the rows fetched whole (and filtered by ``source.where``) only when
    asked for. ``whole``: no target skips rows, every row will be asked for."""
    for block in source.read_fingerprints(whole):

        def parse(
            needed: Sequence[int], block: FingerprintBlock = block
        ) -> Iterator[SourceItem | None]:
            return _filtered(block.records(needed), config)

        yield block.fingerprints, parse


def _record_block(records: list[Record]) -> RowBlock:
    """Records as a block of raw rows (``record_row``)."""
    return [record_row(record) for record in records], lambda needed: map(
        records.__getitem__, needed
    )


def record_blocks(
    source: Source, config: SourceConfig, unreadable: list[UnreadableRow]
) -> Iterator[RowBlock]:
    """A source's records (grouped and filtered as configured) in blocks of ``CHUNK``,
    each with its raw bytes (``record_row``). The records read before a source error are
    still yielded (and planned: the failed read sends no deletes); unreadable rows are
    appended to ``unreadable``."""
    records: list[Record] = []
    try:
        for item in read_catalog(source, config):
            if isinstance(item, UnreadableRow):
                unreadable.append(item)
                continue
            records.append(item)
            if len(records) == CHUNK:
                yield _record_block(records)
                records = []
    except SourceError:
        yield _record_block(records)
        raise
    if records:
        yield _record_block(records)


def _keyed(digests: bytes, key: bytes, numpy: ModuleType | None) -> bytes:
    """Each 16-byte digest of ``digests`` XOR ``key`` (XOR is bytewise: any word order will do).

    By ``numpy`` (85 instructions a row) when the read skips rows (``_xor_by``), otherwise
    (None) by Python ints, 430 a row (~70 M instructions more for the benchmark's 100k
    products and two targets), where loading NumPy would cost ~270 M (~60 ms): a first
    sync or a full refresh of compact JSON Lines never needs NumPy.
    """
    if numpy is not None:
        words = numpy.frombuffer(digests, dtype=numpy.uint64).reshape(-1, 2)
        keyed: bytes = (words ^ numpy.frombuffer(key, dtype=numpy.uint64)).tobytes()
        return keyed
    size = len(digests)
    # the key repeated over a power of two of rows, cut to the block's (little-endian: its
    # low bytes): one conversion serves the blocks of a read, whose sizes vary by a few rows
    keys = _repeated(key, 1 << (size // 16 - 1).bit_length()) & ((1 << 8 * size) - 1)
    return (int.from_bytes(digests, "little") ^ keys).to_bytes(size, "little")


def _xor_by(planners: Sequence[TargetPlanner]) -> ModuleType | None:
    """What ``_keyed`` XORs with in a read for ``planners``: NumPy when some target skips
    rows (it looks them up in a fingerprint index, which loads NumPy anyway, and a
    no-change read is mostly this XOR), else None. Imported, never taken from
    ``sys.modules``: another thread (a change feed's) may be importing it halfway."""
    if not any(planner.skipping for planner in planners):
        return None
    import numpy

    return numpy


@functools.lru_cache(maxsize=16)
def _repeated(key: bytes, rows: int) -> int:
    """``key`` ``rows`` times over, as one int (a conversion costs a third of ``_keyed``)."""
    return int.from_bytes(key * rows, "little")


def _needed(flags: Sequence[list[bool] | None], size: int) -> Sequence[int]:
    """The rows some target doesn't know (every row when a target isn't fingerprinted),
    found in C loops over the targets' flags, not a Python loop over the rows."""
    if any(known is None for known in flags):
        return range(size)
    lists = [known for known in flags if known is not None]
    if all(map(all, lists)):
        return ()  # a no-change block: every row known to every target
    every = reduce(lambda a, b: list(map(and_, a, b)), lists)
    return list(compress(range(size), map(not_, every)))


def _map_block(
    planner: TargetPlanner,
    records: list[Record],
    places: list[int],
    ordinals: list[int],
    row_hashes: bytes | None,
    known: list[bool] | None,
) -> None:
    """Hand a block's records (at ``places`` in it) to ``planner``: those whose row the
    target's state doesn't know (``known``), with their rows' fingerprints (``row_hashes``,
    16 bytes each; None: not fingerprinted)."""
    if not records:
        return
    if known is not None and any(map(known.__getitem__, places)):
        kept = [n for n, i in enumerate(places) if not known[i]]
        records = [records[n] for n in kept]
        ordinals = [ordinals[n] for n in kept]
        places = [places[n] for n in kept]
    sources: Sequence[bytes | None] = (
        [None] * len(places)
        if row_hashes is None
        else [row_hashes[16 * i : 16 * i + 16] for i in places]
    )
    planner.map_records(records, ordinals, sources)


def read_rows(
    blocks: Iterable[RowBlock],
    planners: Sequence[TargetPlanner],
    unreadable: list[UnreadableRow],
    budget: Budget,
    read: ReadCount,
) -> None:
    """Read the source skipping, per target, the rows whose fingerprint state knows.

    Each block of raw rows is fingerprinted once (``row_digest``), then for every
    fingerprinting target (``row_fingerprint``) and looked up (``TargetPlanner.known``);
    a row is parsed only when some target doesn't know it, and mapped only for those
    targets. A skipped row's product is unchanged. Known fingerprints also count as
    seen (no delete), and duplicates are still found: a fingerprint known twice, or
    a parsed row's key that a skipped row's product has, is a duplicate key
    (``Staging.duplicates``). Unreadable rows are appended to ``unreadable``; the records
    read are counted in ``read``, block by block, and up to the row where a read fails.
    """
    count = 0
    xor_by = _xor_by(planners)
    for raws, parse in blocks:
        budget.check_read()
        # row_digest of each row, by one C loop, concatenated
        digests = b"".join(map(xxh3_128_digest, raws))
        # per target: each row's fingerprint (16 bytes each, concatenated) and whether
        # state knows it (None: not fingerprinted, every row is mapped)
        rows: list[tuple[TargetPlanner, bytes | None, list[bool] | None]] = []
        for planner in planners:
            if planner.fingerprint is None:
                rows.append((planner, None, None))
                continue
            # row_fingerprint of every row
            hashes = _keyed(digests, planner.fingerprint, xor_by)
            rows.append((planner, hashes, planner.known(hashes, len(raws))))
        needed = _needed([known for _, _, known in rows], len(raws))
        base, dropped = count, 0  # dropped: needed rows that are no record
        # the block's records are mapped ``TURN`` at a time for one target after the
        # other, each target's in one call (``map_records``); a read failing midway maps
        # what it returned first
        records: list[Record] = []
        places: list[int] = []  # each record's row in the block
        ordinals: list[int] = []
        taken = 0  # records of the block handed to the planners, in whole turns
        try:
            for i, item in zip(needed, parse(needed), strict=True):
                if item is None:
                    dropped += 1  # blank once decoded, or left out by source.where
                    continue
                if isinstance(item, UnreadableRow):
                    unreadable.append(item)
                    dropped += 1
                    continue
                records.append(item)
                places.append(i)
                ordinals.append(base + i + 1 - dropped)
                if len(records) == TURN:
                    # taken before they are mapped: a mapping that fails leaves none to map again
                    turn, records, places, ordinals = (records, places, ordinals), [], [], []
                    taken += TURN
                    for planner, row_hashes, known in rows:
                        _map_block(planner, *turn, row_hashes, known)
        except SourceError:
            # the rows every target knows were read (by their fingerprints), and the
            # records returned before the failure: the count a failed read reports
            read.records = base + len(raws) - len(needed) + taken + len(records)
            raise
        finally:
            for planner, row_hashes, known in rows:
                _map_block(planner, records, places, ordinals, row_hashes, known)
        count = base + len(raws) - dropped  # rows known to every target are records
        read.records = count
