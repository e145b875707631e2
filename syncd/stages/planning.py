"""Planning one target a chunk at a time: records mapped, validated, diffed against state.

``TargetPlanner`` has one job: take the records the read hands it, stage their keys and
hashes ``CHUNK`` at a time (``Staging.compare``), turn the changes into requests a group
(``GROUP``) at a time and put them in the target's ``Outbox`` (on disk, taken by its
sender while the read goes on), and keep the rejections and keys the deciding stage
needs. ``planned()`` hands them over as one immutable ``Planned``.

A mirrored full refresh is the exception: whether one whole-block upsert can carry the
block is known only once the read is over, so its changes wait on disk (a
``SpilledList``) for the deciding stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from syncd.diff import Change, diff_chunk
from syncd.errors import RecordError
from syncd.model import SEEN_ONLY, Document, Record, Rejection, Spool, payload_hash, quick_new
from syncd.sources.base import record_matches
from syncd.stages.opening import OpenTarget
from syncd.stages.outbox import Outbox
from syncd.stages.packing import ChangePacking
from syncd.stages.spill import SpilledList

CHUNK = 2000
"""Documents staged and compared with state at a time: held in memory per target until
compared, so this bounds a run's memory (5000 of ~1 KB products cost ~30 MB more)."""
MAX_DOCUMENT_BYTES = 1_000_000
"""A mapped payload larger than this is rejected (no API documents a larger one)."""
UNSEEN_HASH = b""
"""Staged for a product present in the source but rejected: it must not look deleted."""
_NEW_DOCUMENT = quick_new(Document)
"""``Document(...)`` for ``map_records``: a document a product and target."""
GROUP = 2000
"""Changes planned into requests at a time (rounded up to whole batches): what planning
holds in memory besides one chunk."""


def group_size(opened: OpenTarget) -> int:
    """``GROUP`` rounded up to whole batches: no half-empty batch between groups."""
    batch = max(int(getattr(opened.config, "batch_size", 1) or 1), 1)
    return -(-GROUP // batch) * batch


def streams(opened: OpenTarget) -> bool:
    """Whether the target's requests are planned (and sent) while the read goes on: all
    but a mirrored full refresh, whose whole-block upsert needs the whole read."""
    return not (opened.full and getattr(opened.config, "mirror_block", False) and not opened.only)


@dataclass(frozen=True)
class Planned:
    """What reading and diffing one target's records found."""

    changes: Sequence[Change] = ()
    """In the order found, not planned into requests yet: less than two groups when the
    target ``streams`` (the rest is in the outbox), else all of them, on disk (a
    ``SpilledList``)."""
    rejections: tuple[Rejection, ...] = ()
    held_rejected: int = 0
    """Products refused before, unchanged since: not sent until the back-off ends."""
    unsendable: frozenset[str] = frozenset()
    """Keys in the source that can't be sent this run (rejected, held): a whole-block
    upsert would delete their last good copy, so it is not used."""
    keyless: tuple[str, ...] = ()
    """Reasons of records rejected without a usable key: their products look deleted."""
    unchanged: int = 0
    found: frozenset[str] = frozenset()
    """With ``OpenTarget.only``: the keys the read found."""
    left_out: frozenset[str] = frozenset()
    """Keys of records the read returned and the target's ``where`` left out."""
    notes: tuple[str, ...] = ()
    """What planning the requests already in the outbox said."""


@dataclass
class TargetPlanner:
    """Maps and diffs one target's records as the read hands them over."""

    opened: OpenTarget
    spool: Spool
    """Where the payloads of the changes found wait until they are sent."""
    fingerprint: bytes | None = None
    """What a raw row's fingerprint is keyed with for this target (``mapping_fingerprint``);
    None: rows are not fingerprinted."""
    outbox: Outbox | None = None
    """Where the requests go as they are planned (None: a new one, in ``spool``)."""
    _chunk: list[Document] = field(default_factory=list)
    _changes: SpilledList[Change] = field(init=False)
    _part: list[Change] = field(default_factory=list)
    """Changes found, not put yet (a streaming target): less than two groups."""
    _streams: bool = field(init=False)
    _rejections: list[Rejection] = field(default_factory=list)
    _held_rejected: int = 0
    _unsendable: set[str] = field(default_factory=set)
    _keyless: list[str] = field(default_factory=list)
    _unchanged: int = 0
    _found: set[str] = field(default_factory=set)
    _left_out: set[str] = field(default_factory=set)
    _notes: dict[str, None] = field(default_factory=dict)
    """What planning the groups put so far said (once each)."""

    def __post_init__(self) -> None:
        if self.outbox is None:
            self.outbox = Outbox(self.spool)
        # a plan only counted and shown spills no payload either (a mirrored full refresh's
        # changes, planned into the outbox's hollow requests once the read is over)
        self._changes = SpilledList(self.spool, packing=ChangePacking(hollow=self.outbox.hollow))
        self._streams = streams(self.opened)

    @property
    def skipping(self) -> bool:
        """Whether rows with a known fingerprint are skipped (never in a full refresh)."""
        return (
            self.fingerprint is not None
            and not self.opened.full
            and self.opened.staging is not None
        )

    def known(self, hashes: bytes, rows: int) -> list[bool]:
        """Of ``rows`` row fingerprints (16 bytes each, concatenated), which state knows:
        their products are unchanged and counted so (none when not ``skipping``)."""
        staging = self.opened.staging if self.skipping else None
        known = staging.known(hashes) if staging else [False] * rows
        self._unchanged += sum(known)
        return known

    def map_one(self, record: Record, ordinal: int, source_hash: bytes | None = None) -> None:
        """Map ``record`` (the ``ordinal``-th read) for this target: a document, or a
        rejection naming its key (or position); diffed once a chunk is full."""
        opened = self.opened
        only = opened.only
        try:
            if opened.config.where and not self._kept_by_target(record):
                return
            # the payload is validated before its one document is made (no dict kept)
            product, payload, canonical = opened.mapper.encode(record)
            if only and product not in only:
                return  # a resend: another product, neither sent nor seen
            opened.target.validate(product, payload, opened.mapper.well_formed)
            if len(canonical) > MAX_DOCUMENT_BYTES:
                raise RecordError(
                    f"payload is {len(canonical)} bytes, over {MAX_DOCUMENT_BYTES}", key=product
                )
        except RecordError as exc:
            self._reject(exc, ordinal)
        else:
            # the plan holds bytes, not dicts
            self._chunk.append(Document.encoded(product, canonical, source_hash or None))
            if only:
                self._found.add(product)
        if len(self._chunk) >= CHUNK:
            self.flush()

    def map_records(
        self,
        records: Sequence[Record],
        ordinals: Sequence[int],
        source_hashes: Sequence[bytes | None],
    ) -> None:
        """``map_one`` of each record (with its ordinal and source hash), in order: without
        a ``where`` or a resend's keys, in one loop with the steps looked up once, not a
        call and half a dozen attribute lookups a record (cg.py 5000: 177.9k -> 175.6k
        instructions per product and target, with ``read_rows`` handing ``TURN`` at a time)."""
        opened = self.opened
        if opened.config.where or opened.only:
            for record, ordinal, source_hash in zip(records, ordinals, source_hashes, strict=True):
                self.map_one(record, ordinal, source_hash)
            return
        encode, well_formed = opened.mapper.encode, opened.mapper.well_formed
        validate = opened.target.validate
        chunk = self._chunk
        new_document = _NEW_DOCUMENT
        for record, ordinal, source_hash in zip(records, ordinals, source_hashes, strict=True):
            try:
                product, payload, canonical = encode(record)
                validate(product, payload, well_formed)
                if len(canonical) > MAX_DOCUMENT_BYTES:
                    raise RecordError(
                        f"payload is {len(canonical)} bytes, over {MAX_DOCUMENT_BYTES}",
                        key=product,
                    )
            except RecordError as exc:
                self._reject(exc, ordinal)
            else:
                chunk.append(
                    new_document(
                        Document, product, canonical, payload_hash(canonical), source_hash or None
                    )
                )
            if len(chunk) >= CHUNK:
                self.flush()
                chunk = self._chunk

    def _reject(self, exc: RecordError, ordinal: int) -> None:
        """Keep the rejection of the ``ordinal``-th record read (its key staged as only
        seen, or unseen; a keyless one counted by its reason)."""
        key = exc.key
        only = self.opened.only
        if only:
            if key not in only:
                return  # a resend: not one of the named products
            self._found.add(key)
        # named by its product key, stable between runs; a keyless record by position
        reason = f"{key}: {exc}" if key else f"record {ordinal}: {exc}"
        self._rejections.append(Rejection(key if key else f"#record-{ordinal}", reason))
        if key and exc.also_keys:
            # a key refused for an invisible character: its visible twin and the forms it
            # may have been pushed under are only seen (not deleted, not withdrawn, not a
            # duplicate of a real row with that key)
            for seen in (key, *exc.also_keys):
                self._chunk.append(Document(seen, b"", SEEN_ONLY))
        elif key:
            self._chunk.append(Document(key, b"", UNSEEN_HASH))
            self._unsendable.add(key)
        else:
            self._keyless.append(reason)

    def _kept_by_target(self, record: Record) -> bool:
        """Whether the target's ``where`` keeps ``record``. One left out is absent there (a
        delete), not rejected: its key is remembered, so no second look at the source is
        needed to delete it. ``RecordError`` with the product key when the filter can't test
        it (a comparison on a value that isn't a number): rejected for this target."""
        opened = self.opened
        try:
            if record_matches(record, opened.config.where):
                return True
        except RecordError as exc:
            key: str | None = None
            try:
                key = opened.mapper.map(record).key
            except RecordError as failed:
                key = failed.key
            raise RecordError(f"targets[{opened.index}].where: {exc}", key=key) from None
        with contextlib.suppress(RecordError):
            self._left_out.add(opened.mapper.map(record).key)
        return False

    def flush(self, *, last: bool = False) -> None:
        """Stage and diff the chunk held so far, keep its changes, and forget it; the
        ``last`` chunk of the read puts nothing more (what is left is decided first)."""
        chunk, self._chunk = self._chunk, []
        staging = self.opened.staging
        if not chunk or staging is None:
            return
        keys, hashes = [d.key for d in chunk], [d.hash for d in chunk]
        sources = [d.source_hash for d in chunk]
        differing = staging.compare(list(zip(keys, hashes, strict=True)), sources)
        documents = (
            {d.key: d for d in chunk if d.hash not in (UNSEEN_HASH, SEEN_ONLY)}
            if UNSEEN_HASH in hashes or SEEN_ONLY in hashes
            else dict(zip(keys, chunk, strict=True))
        )
        changes = diff_chunk(documents, differing, full=self.opened.full)
        # not a full refresh, a change is a document that differs: the others are unchanged
        unchanged = (
            len(documents.keys() - differing.keys())
            if self.opened.full
            else len(documents) - len(changes)
        )
        self._unchanged += unchanged
        if self.opened.remember and unchanged:
            # unchanged by payload, mapped from a row not yet known: skip that row next run
            staging.remember(
                [
                    (d.key, d.hash, d.source_hash)
                    for d in documents.values()
                    if d.source_hash is not None and d.key not in differing
                ]
            )
        found = self._not_held(changes) if self.opened.held_rejections else changes
        if not self._streams:
            self._changes.extend(found)  # to disk: memory holds one chunk's changes at most
            return
        self._part += found
        group = group_size(self.opened)
        # the newest group waits for the next, and the last ones for the read's end: a key
        # repeated in the read's last group or so is taken out (a duplicate) before either
        # copy goes out; copies further apart are restored afterwards (``Plan.undo``)
        while not last and len(self._part) >= 2 * group:
            part, self._part = self._part[:group], self._part[group:]
            self._put(part)

    def _not_held(self, changes: list[Change]) -> list[Change]:
        """``changes`` but those of products refused before and unchanged since: they wait
        out the back-off (counted, and unsendable this run)."""
        held = self.opened.held_rejections
        found: list[Change] = []
        for change in changes:
            document = change.document
            if document is not None and held.get(change.key, UNSEEN_HASH) == document.hash:
                self._held_rejected += 1
                self._unsendable.add(change.key)
                continue
            found.append(change)
        return found

    def _put(self, part: Sequence[Change]) -> None:
        """Plan ``part`` (a whole group of creates and updates) into requests and put them
        in the outbox: the sender may take them at once. Never a delete and never a
        whole-block upsert (``deletes_allowed=False``): those wait for the read's end."""
        opened = self.opened
        planned = opened.target.plan(
            part, (), full=opened.full, deletes_allowed=False, full_reason=opened.mode_reason
        )
        assert self.outbox is not None
        self.outbox.put(planned.operations)
        self._notes.update(dict.fromkeys(planned.notes))

    def planned(self) -> Planned:
        """What the records handed over so far came to (call ``flush`` first)."""
        return Planned(
            changes=self._part if self._streams else self._changes,
            notes=tuple(self._notes),
            rejections=tuple(self._rejections),
            held_rejected=self._held_rejected,
            unsendable=frozenset(self._unsendable),
            keyless=tuple(self._keyless),
            unchanged=self._unchanged,
            found=frozenset(self._found),
            left_out=frozenset(self._left_out),
        )
