"""One run: read the source once, plan every target, guard, send, acknowledge, report.

``reconcile_once`` (``Reconciler.sync``) is a plain function; the daemon only schedules
it and the CLI only calls it. ``Reconciler.plan`` is the same run up to the plan, sending
and writing nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, fields, replace
from typing import Any

import httpx
import numpy as np
import structlog

from syncd import __version__
from syncd.config import SourceConfig, SyncdConfig, TargetConfig, resolve_secret
from syncd.diff import Change, ChangeKind, GuardVerdict, Operation, Plan, deletes_of, diff_chunk
from syncd.errors import ConfigError, RecordError, SourceError, TargetError
from syncd.executor import Clock, Events, Execution, Executor, SystemClock
from syncd.guards import GuardInput, check_guards
from syncd.leases import LeaseKeeper, holder_id
from syncd.logs import scrub
from syncd.mapping import Mapper, build_mapper
from syncd.model import (
    SEEN_ONLY,
    UNACKNOWLEDGED,
    Document,
    Record,
    Rejection,
    RunRecord,
    SourceItem,
    Spool,
    UnreadableRow,
)
from syncd.progress import RunProgress
from syncd.proof import DeleteProof
from syncd.runs import RESEND_MODE, RunOptions, RunReport, TargetReport
from syncd.sources import Source, open_source, read_catalog
from syncd.sources.base import RawBlock, RawRows, filter_records, raw_rows, record_matches
from syncd.state.base import Staging, StateStore
from syncd.targets import Target, open_target

log = structlog.get_logger("syncd.run")

CHUNK = 2000
"""Documents staged and compared with state at a time: held in memory per target until
compared, so this bounds a run's memory (5000 of ~1 KB products cost ~30 MB more)."""
MAX_DOCUMENT_BYTES = 1_000_000
"""A mapped payload larger than this is rejected (no API documents a larger one)."""
_UNSEEN_HASH = b""
"""Staged for a product present in the source but rejected: it must not look deleted."""
NOT_IN_SOURCE = "named products not in the source"
"""How a resend's note about keys the read did not find begins."""
LEFT_OUT_BY = "left out by"
"""How notes name products a target's ``where`` leaves out (``left out by targets[1].where``)."""
_ROW_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""A record's raw bytes, for sources that have no raw rows (SQL, HTTP, JSON, CSV)."""

_RowBlock = tuple[Sequence[bytes], Callable[[int], SourceItem | None]]
"""Raw rows to fingerprint, and the item of row ``i`` (None: no record), made on demand."""


@dataclass
class _TargetRun:
    """Mutable bookkeeping of one target during a run."""

    config: TargetConfig
    index: int
    target: Target
    mapper: Mapper
    mode: str
    mode_reason: str
    state_count: int
    held_rejections: dict[str, bytes | None]
    spool: Spool
    """Where the payloads of the changes found wait until they are sent."""
    staging: Staging | None = None
    run_id: int | None = None
    drift: int | None = None
    target_count: int | None = None
    """Products the target says it holds (Vambe's block count), when it can tell."""
    notes: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    held_rejected: int = 0
    unsendable: set[str] = field(default_factory=set)
    """Keys in the source that can't be sent this run (rejected, held): a whole-block
    upsert would delete their last good copy, so it is not used."""
    keyless: list[str] = field(default_factory=list)
    """Reasons of records rejected without a usable key: their products look deleted."""
    unchanged: int = 0
    chunk: list[Document] = field(default_factory=list)
    fingerprint: bytes | None = None
    """What a raw row's fingerprint is keyed with for this target (its config, syncd's
    version, the source's key/group/where); None: rows are not fingerprinted."""
    remember: bool = False
    """Record the fingerprint of products found unchanged (a sync; a plan writes nothing)."""
    error: str | None = None
    outcome: str | None = None
    holder: str = ""
    doubts: tuple[int, int] = (0, 0)
    """Products whose last write is in doubt: (re-sent this run, still within the window)."""
    withdrawn: int = 0
    """Products in state that can't be pushed any more, withdrawn (``rejected = "withdraw"``)."""
    stale: int = 0
    """Products in state that can't be pushed any more, kept as they were (``"keep"``)."""
    awaiting_delete: int = 0
    """Products missing from the read not deleted yet (more reads needed, or found again)."""
    doubted: int = 0
    """Products whose write this run left in doubt."""
    ambiguous: frozenset[str] = frozenset()
    """Keys the source holds more than once: the product is in the source, syncd can't tell
    which copy is right, so its target copy is kept, never withdrawn."""
    only: frozenset[str] = frozenset()
    """``RunOptions.keys`` (a resend): only these products are mapped, staged and sent;
    empty: the whole catalog."""
    found: set[str] = field(default_factory=set)
    """With ``only``: the keys the read found."""
    left_out: set[str] = field(default_factory=set)
    """Keys of records the read returned and the target's ``where`` left out."""

    @property
    def full(self) -> bool:
        """Every product sent whole: a full refresh, or a resend of named products."""
        return self.mode in ("full", RESEND_MODE)

    @property
    def skipping(self) -> bool:
        """Whether rows with a known fingerprint are skipped (never in a full refresh)."""
        return self.fingerprint is not None and not self.full and self.staging is not None


def mapping_fingerprint(source: SourceConfig, target: TargetConfig) -> bytes | None:
    """What a raw row's fingerprint is keyed with for a target, or None: no skipping.

    Covers the target's config but for its ``transport_fields()`` (mapping, type, ...),
    syncd's version and the source's key, grouping and filter. None when
    ``source.skip_unchanged_rows`` is off, with ``group_by`` (a product spans rows), or
    for a mapping with a callable (it may read anything).
    """
    mapping = getattr(target, "mapping", None)
    if (
        not source.skip_unchanged_rows
        or source.group_by
        or source.variant is not None
        or mapping is None
        or getattr(mapping, "callable", None)
    ):
        return None
    shared = json.dumps(
        {
            "version": __version__,
            "key": source.key,
            "group_by": source.group_by,
            "group_into": source.group_into,
            "where": source.where,
        },
        sort_keys=True,
        default=str,
    ).encode()
    digest = hashlib.blake2b(
        target.model_dump_json(exclude=set(target.transport_fields())).encode(), digest_size=16
    )
    digest.update(shared)
    return digest.digest()


def _kept_by_target(run: _TargetRun, record: Record) -> bool:
    """Whether the target's ``where`` keeps ``record``. One left out is absent there (a
    delete), not rejected: its key is remembered, so no second look at the source is
    needed to delete it. ``RecordError`` with the product key when the filter can't test
    it (a comparison on a value that isn't a number): rejected for this target."""
    try:
        if record_matches(record, run.config.where):
            return True
    except RecordError as exc:
        key: str | None = None
        try:
            key = run.mapper.map(record).key
        except RecordError as failed:
            key = failed.key
        raise RecordError(f"targets[{run.index}].where: {exc}", key=key) from None
    with contextlib.suppress(RecordError):
        run.left_out.add(run.mapper.map(record).key)
    return False


def record_row(record: Record) -> bytes:
    """The raw row of a record from a source without raw rows (SQL, HTTP, JSON, CSV): the
    record as JSON, in the order the source gave its fields (a SQL row's columns). One JSON
    can't encode gets random bytes, so its row is never found unchanged."""
    try:
        return _ROW_JSON.encode(record).encode()
    except (TypeError, ValueError):
        return os.urandom(16)


def _record_block(records: list[Record]) -> _RowBlock:
    """Records as a block of raw rows (``record_row``)."""
    return [record_row(record) for record in records], records.__getitem__


def row_digest(stripped: bytes) -> bytes:
    """BLAKE2b-128 of a raw row's bytes (surrounding whitespace stripped), once per row."""
    return hashlib.blake2b(stripped, digest_size=16).digest()


def row_fingerprint(digest: bytes, fingerprint: bytes) -> bytes:
    """A row's ``row_digest`` XOR a target's ``mapping_fingerprint``: equal to a product's
    ``source_hash``, the row is unchanged for that target.

    XOR with a per-target constant is a bijection, so two rows collide for one target
    only when their BLAKE2b digests do (2**-128); it costs a tenth of a second hash.
    (``_read_rows`` computes the same a block at a time, on NumPy arrays.)
    """
    value = int.from_bytes(digest, "big") ^ int.from_bytes(fingerprint, "big")
    return value.to_bytes(16, "big")


def _writes_in(operations: Sequence[Operation]) -> Iterator[tuple[str, bytes]]:
    """(key, canonical payload) of every create, update and delete a plan sends.

    A full refresh's unchanged products are left out: re-sending the same payload
    can't leave the target different from what state says.
    """
    for operation in operations:
        for change in operation.changes:
            if change.kind is ChangeKind.REFRESH:
                continue
            document = change.document
            yield change.key, document.canonical if document else b"{}"


def _details(plan: Plan) -> dict[str, Any]:
    """The part of a plan kept with the run: requests per endpoint and mode, and why."""
    summary = plan.summary(sample=0)
    return {
        "requests": {
            name: {"requests": entry["requests"], "products": entry["products"]}
            for name, entry in summary["requests"].items()
        },
        "notes": summary["notes"],
        "guard": summary["guard"],
    }


def _select_targets(config: SyncdConfig, names: Sequence[str]) -> list[tuple[int, TargetConfig]]:
    if names:
        wanted = [config.target(name) for name in names]
        return [(config.targets.index(t), t) for t in wanted]
    return [(i, t) for i, t in enumerate(config.targets) if t.enabled]


class Reconciler:
    """Everything a run needs, wired once; ``plan`` and ``sync`` are the two entry points."""

    def __init__(
        self,
        config: SyncdConfig,
        store: StateStore,
        *,
        environ: Mapping[str, str] | None = None,
        transports: Mapping[str, httpx.BaseTransport] | None = None,
        clock: Clock | None = None,
        events: Events | None = None,
        stop: threading.Event | None = None,
        source: Source | None = None,
        progress: RunProgress | None = None,
    ) -> None:
        self.config = config
        self.progress = progress or RunProgress()
        """Each target's sending so far (done / total, rate, ETA), for the TTY and /metrics."""
        self.store = store
        self._environ = os.environ if environ is None else environ
        self._transports = transports or {}
        self._clock = clock
        self._events = events
        self.stop = stop or threading.Event()
        self._source = source
        self._deadline: float | None = None
        """When this run's time budget runs out (``time.monotonic``); None: no budget."""
        self._budget_s: float | None = None

    # -- the two entry points -------------------------------------------------------
    def plan(self, options: RunOptions | None = None) -> list[Plan]:
        """What a run would send to each target, sending nothing and writing nothing."""
        options = options or RunOptions()
        with ExitStack() as stack:
            # the spool outlives this call: the plans' documents read their payloads from it
            runs = self._open_runs(options, stack, Spool(), leases=None)
            plans, _, _ = self._plan_runs(runs, options)
            return plans

    def sync(self, options: RunOptions | None = None) -> RunReport:
        """One run: plan every target, then send and record."""
        options = options or RunOptions()
        started = time.monotonic()
        holder = holder_id()
        self._budget_s = options.max_run_s or self.config.schedule.max_run_s
        self._deadline = None if self._budget_s is None else started + self._budget_s
        with ExitStack() as stack:
            # a lost lease stops this run's sending at once (another process may take over)
            leases = stack.enter_context(
                LeaseKeeper(self.store, holder, self.config.schedule.lease_ttl_s, self.stop)
            )
            spool = stack.enter_context(Spool())
            runs = self._open_runs(options, stack, spool, leases=leases, holder=holder)
            plans, source_count, source_error = self._plan_runs(runs, options)
            reports = self._execute_all(runs, plans, started)
            return RunReport(tuple(reports), source_count, source_error is None, source_error)

    def _execute_all(
        self, runs: Sequence[_TargetRun], plans: Sequence[Plan], started: float
    ) -> list[TargetReport]:
        """Send every target's plan at once, each in its own thread with its own executor,
        rate limit and outcome: a slow, throttled or failing target delays no other, and the
        run takes about as long as its slowest target."""
        if len(runs) < 2:
            return [
                self._execute(run, plan, started) for run, plan in zip(runs, plans, strict=True)
            ]
        with ThreadPoolExecutor(len(runs), thread_name_prefix="syncd-target") as pool:
            # each thread starts from the caller's logging context (structlog contextvars)
            futures = [
                pool.submit(contextvars.copy_context().run, self._execute, run, plan, started)
                for run, plan in zip(runs, plans, strict=True)
            ]
            return [future.result() for future in futures]

    # -- opening ----------------------------------------------------------------------
    def _open_runs(
        self,
        options: RunOptions,
        stack: ExitStack,
        spool: Spool,
        *,
        leases: LeaseKeeper | None,
        holder: str = "",
    ) -> list[_TargetRun]:
        runs: list[_TargetRun] = []
        for index, config in _select_targets(self.config, options.targets):
            api_key = resolve_secret(config.api_key_env, self._environ)
            if api_key is None:
                raise ConfigError(
                    f"targets[{index}].api_key_env: environment variable "
                    f"{config.api_key_env} is not set"
                )
            target = open_target(
                config,
                self.config.http,
                api_key=api_key,
                transport=self._transports.get(config.name),
            )
            stack.callback(target.close)
            mapper = build_mapper(config, self.config.source.key)
            state_count = self.store.count(config.name)
            if options.keys:  # a resend: the named products, sent whole (see _map_one)
                mode = RESEND_MODE  # never the night's run nor a full refresh (syncd.runs)
                reason = f"resend of {len(options.keys)} named products: sent whole"
            elif options.full:
                mode, reason = "full", options.full_reason
            elif state_count == 0:
                mode, reason = "full", "state holds nothing for this target: full refresh"
            else:
                mode, reason = "incremental", "only what changed since the last acknowledged push"
            since = time.time() - config.rejection_backoff_s
            run = _TargetRun(
                config=config,
                index=index,
                target=target,
                mapper=mapper,
                mode=mode,
                mode_reason=reason,
                state_count=state_count,
                held_rejections=self.store.held_rejections(config.name, since),
                spool=spool,
                remember=leases is not None,
                only=frozenset(options.keys),
            )
            runs.append(run)
            if leases is None:
                run.doubts = self.store.count_doubts(config.name, time.time())
            if leases is not None:
                if not leases.acquire(config.name):
                    other = self.store.lease_holder(config.name)  # on the database clock
                    run.outcome = "locked"
                    run.error = f"another syncd ({other}) is running this target; not started"
                    continue
                self.store.mark_interrupted(config.name)
                due = self.store.reassert_doubts(config.name, time.time())
                if due:
                    run.state_count = self.store.count(config.name)
                run.doubts = (due, self.store.count_doubts(config.name, time.time())[1])
                run.holder = holder
                run.run_id = self.store.start_run(
                    config.name, mode=mode, mode_reason=reason, holder=holder
                )
            if self.config.schedule.refresh_period and mode == "incremental":
                # the rolling refresh: the products acknowledged longest ago, re-sent whole
                refresh = (
                    self.store.mark_refresh_due if leases is not None else self.store.refresh_due
                )(config.name, time.time(), self.config.schedule.refresh_period)
                if refresh.size:
                    run.notes.append(
                        refresh.note(
                            batch_size=getattr(config, "batch_size", 1),
                            rate_per_s=config.rate_limit_per_s,
                            planned=leases is None,
                        )
                    )
            try:
                info = target.inspect(probe=leases is None)  # a plan probes, writing nothing
            except TargetError as exc:  # fatal, or still failing (retriable) at the start
                run.outcome, run.error = "failed", str(exc)
                continue
            run.target_count = info.count
            if info.count is not None and info.count != state_count:
                run.drift = info.count - state_count
                run.notes.append(
                    f"drift: the target holds {info.count} products, state says {state_count}; "
                    "a full refresh repairs it"
                )
                log.warning(
                    "syncd.target.drift_detected",
                    target=config.name,
                    target_count=info.count,
                    state_count=state_count,
                )
            run.staging = self.store.begin_staging(config.name)
            stack.callback(run.staging.close)
        return runs

    # -- reading and planning ---------------------------------------------------------
    def _plan_runs(
        self, runs: list[_TargetRun], options: RunOptions
    ) -> tuple[list[Plan], int, str | None]:
        active = [run for run in runs if run.outcome is None]
        count = 0
        unreadable: list[UnreadableRow] = []
        source_error: str | None = None
        source = self._source or open_source(self.config.source, self.config.http)
        proof = DeleteProof(source, self.config.source)
        if active:
            fingerprinting = self._fingerprint_runs(active)
            try:
                if fingerprinting:
                    rows = raw_rows(source)
                    blocks = (
                        self._line_blocks(rows)
                        if rows is not None
                        else self._record_blocks(source, unreadable)
                    )
                    count = self._read_rows(blocks, active, unreadable)
                else:
                    for item in read_catalog(source, self.config.source):
                        self._check_stop()
                        if isinstance(item, UnreadableRow):
                            unreadable.append(item)
                            continue
                        count += 1
                        for run in active:
                            self._map_one(run, item, count)
                for run in active:
                    self._flush_chunk(run)
            except SourceError as exc:
                source_error = str(exc)
                for run in active:
                    self._flush_chunk(run)
            if source_error is None and count < self.config.source.min_records:
                source_error = (
                    f"the source returned {count} records, fewer than "
                    f"source.min_records={self.config.source.min_records}"
                )
            if source_error is None and unreadable:
                first = unreadable[0]
                source_error = (
                    f"{len(unreadable)} source rows could not be parsed (first: {first.place}: "
                    f"{first.reason}); their products can't be told from deleted ones"
                )
            log.info(
                "syncd.source.read",
                source=source.describe(),
                records=count,
                complete=source_error is None,
                error=source_error,
            )
        plans = [
            self._plan_one(run, count, source_error, unreadable, options, proof) for run in runs
        ]
        return plans, count, source_error

    def _check_stop(self) -> None:
        """Raise ``SourceError`` when the read must end early: a stop request, or the run's
        time budget ran out (the read is then incomplete: no deletes are decided)."""
        if self.stop.is_set():
            raise SourceError("stopped (SIGTERM) before the read completed")
        if self._out_of_time():
            raise SourceError(
                f"the run's time budget (max_run_s={self._budget_s:g}) ran out before the "
                "read completed"
            )

    def _out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _fingerprint_runs(self, active: Sequence[_TargetRun]) -> bool:
        """Give each target that can skip unchanged rows its fingerprint key; whether any can
        (see ``mapping_fingerprint``)."""
        for run in active:
            run.fingerprint = mapping_fingerprint(self.config.source, run.config)
        return any(run.fingerprint is not None for run in active)

    def _line_blocks(self, source: RawRows) -> Iterator[_RowBlock]:
        """A JSON Lines file as blocks of raw rows: each non-blank line's stripped bytes,
        parsed (and filtered by ``source.where``) only when asked for."""
        where = self.config.source.where
        for block in source.read_blocks():
            stripped = [line.strip() for line in block.lines]
            lines: Sequence[int] = range(len(stripped))
            if not all(stripped):  # blank lines are no records
                lines = [i for i in lines if stripped[i]]
                stripped = [stripped[i] for i in lines]

            def parse(
                i: int, block: RawBlock = block, lines: Sequence[int] = lines
            ) -> SourceItem | None:
                item = source.parse_line(block.row(lines[i]))
                if isinstance(item, dict) and where:  # a record where can't test: unreadable
                    item = next(filter_records([item], where, self.config.source.key), None)
                return item  # None: left out by source.where

            yield stripped, parse

    def _record_blocks(
        self, source: Source, unreadable: list[UnreadableRow]
    ) -> Iterator[_RowBlock]:
        """A source's records (grouped and filtered as configured) in blocks of ``CHUNK``,
        each with its raw bytes (``_record_block``). The records read before a source
        error are still yielded (and planned: the failed read sends no deletes)."""
        records: list[Record] = []
        try:
            for item in read_catalog(source, self.config.source):
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

    def _read_rows(
        self,
        blocks: Iterable[_RowBlock],
        active: Sequence[_TargetRun],
        unreadable: list[UnreadableRow],
    ) -> int:
        """Read the source skipping, per target, the rows whose fingerprint state knows.

        Each block of raw rows is fingerprinted once (``row_digest``), then for every
        fingerprinting target (``row_fingerprint``) and looked up (``Staging.known``); a
        row is parsed only when some target doesn't know it, and mapped only for those
        targets. A skipped row's product is unchanged. Known fingerprints also count as
        seen (no delete), and duplicates are still found: a fingerprint known twice, or
        a parsed row's key that a skipped row's product has, is a duplicate key
        (``Staging.duplicates``). Returns the records read.
        """
        count = 0
        blake2b = hashlib.blake2b
        for raws, parse in blocks:
            self._check_stop()
            # row_digest, inlined (a million calls), as pairs of 64-bit words
            joined = b"".join([blake2b(raw, digest_size=16).digest() for raw in raws])
            digests = np.frombuffer(joined, dtype=np.uint64).reshape(-1, 2)
            # per target: each row's fingerprint (16 bytes each, concatenated) and whether
            # state knows it (None: not fingerprinted, every row is mapped)
            rows: list[tuple[_TargetRun, bytes | None, list[bool] | None]] = []
            for run in active:
                if run.fingerprint is None:
                    rows.append((run, None, None))
                    continue
                # row_fingerprint of every row: XOR is bytewise, any word order will do
                key = np.frombuffer(run.fingerprint, dtype=np.uint64)
                hashes = (digests ^ key).tobytes()
                staging = run.staging if run.skipping else None
                known = staging.known(hashes) if staging else [False] * len(raws)
                run.unchanged += sum(known)
                rows.append((run, hashes, known))
            flags = [known for _, _, known in rows]
            needed: Sequence[int] = range(len(raws))
            if all(known is not None for known in flags):
                needed = [i for i, each in enumerate(zip(*flags, strict=True)) if not all(each)]
            base, dropped = count, 0  # dropped: needed rows that are no record
            for i in needed:
                wanted = [
                    (run, None if hashes is None else hashes[16 * i : 16 * i + 16])
                    for run, hashes, known in rows
                    if known is None or not known[i]
                ]
                item: SourceItem | None = parse(i)
                if item is None:
                    dropped += 1  # blank once decoded, or left out by source.where
                    continue
                if isinstance(item, UnreadableRow):
                    unreadable.append(item)
                    dropped += 1
                    continue
                for run, row_hash in wanted:
                    self._map_one(run, item, base + i + 1 - dropped, row_hash)
            count = base + len(raws) - dropped  # rows known to every target are records
        return count

    def _map_one(
        self,
        run: _TargetRun,
        record: dict[str, Any],
        ordinal: int,
        source_hash: bytes | None = None,
    ) -> None:
        try:
            if run.config.where and not _kept_by_target(run, record):
                return
            document = run.mapper.map(record)
            if run.only and document.key not in run.only:
                return  # a resend: another product, neither sent nor seen
            run.target.validate(document.key, document.payload)
            if document.size > MAX_DOCUMENT_BYTES:
                raise RecordError(
                    f"payload is {document.size} bytes, over {MAX_DOCUMENT_BYTES}",
                    key=document.key,
                )
        except RecordError as exc:
            key = exc.key
            if run.only:
                if key not in run.only:
                    return  # a resend: not one of the named products
                run.found.add(key)
            # named by its product key, stable between runs; a keyless record by position
            reason = f"{key}: {exc}" if key else f"record {ordinal}: {exc}"
            run.rejections.append(Rejection(key if key else f"#record-{ordinal}", reason))
            if key and exc.also_keys:
                # a key refused for an invisible character: its visible twin and the forms it
                # may have been pushed under are only seen (not deleted, not withdrawn, not a
                # duplicate of a real row with that key)
                for seen in (key, *exc.also_keys):
                    run.chunk.append(Document(seen, b"", SEEN_ONLY))
            elif key:
                run.chunk.append(Document(key, b"", _UNSEEN_HASH))
                run.unsendable.add(key)
            else:
                run.keyless.append(reason)
        else:
            run.chunk.append(document.slim(source_hash))  # the plan holds bytes, not dicts
            if run.only:
                run.found.add(document.key)
        if len(run.chunk) >= CHUNK:
            self._flush_chunk(run)

    def _flush_chunk(self, run: _TargetRun) -> None:
        if not run.chunk or run.staging is None:
            run.chunk = []
            return
        entries = [(document.key, document.hash) for document in run.chunk]
        sources = [document.source_hash for document in run.chunk]
        differing = run.staging.compare(entries, sources)
        documents = {d.key: d for d in run.chunk if d.hash not in (_UNSEEN_HASH, SEEN_ONLY)}
        changes = diff_chunk(documents, differing, full=run.full)
        run.unchanged += sum(1 for key in documents if key not in differing)
        if run.remember:
            # unchanged by payload, mapped from a row not yet known: skip that row next run
            run.staging.remember(
                [
                    (d.key, d.hash, d.source_hash)
                    for d in documents.values()
                    if d.source_hash is not None and d.key not in differing
                ]
            )
        for change in changes:
            document = change.document
            if document is not None:
                if run.held_rejections.get(change.key, _UNSEEN_HASH) == document.hash:
                    run.held_rejected += 1  # refused before, unchanged since: wait out the back-off
                    run.unsendable.add(change.key)
                    continue
                change = replace(change, document=document.spooled(run.spool))
            run.changes.append(change)
        run.chunk = []

    def _plan_one(
        self,
        run: _TargetRun,
        source_count: int,
        source_error: str | None,
        unreadable: Sequence[UnreadableRow],
        options: RunOptions,
        proof: DeleteProof,
    ) -> Plan:
        kind = run.target.kind
        if run.outcome is not None or run.staging is None:
            return Plan(run.config.name, kind, run.mode, run.mode_reason, (), 0, error=run.error)
        staging = run.staging
        duplicates = set(staging.duplicates())
        if duplicates:
            run.unsendable |= duplicates
            run.ambiguous = frozenset(duplicates)
            run.changes = [c for c in run.changes if c.key not in duplicates]
            run.rejections.extend(
                Rejection(key, f"duplicate key {key!r} in the source: neither copy is pushed")
                for key in sorted(duplicates)
            )
        deletes: list[Change] = []
        unproven: frozenset[str] = frozenset()
        if source_error is None and not run.only:  # a resend saw only its keys: no deletes
            deletes, unproven = self._proven_deletes(run, deletes_of(staging.unseen()), proof)
        if run.only:
            run.notes.append(
                "resend: only the named products, sent whole; nothing deleted, "
                "never a whole-block upsert"
            )
            missing = sorted(run.only - run.found - run.left_out)
            if missing:
                run.notes.append(
                    f"{NOT_IN_SOURCE}, not sent ({len(missing)}): "
                    + ", ".join(repr(k) for k in missing[:10])
                )
            if left := sorted(run.only & run.left_out):
                run.notes.append(
                    f"named products {LEFT_OUT_BY} targets[{run.index}].where: absent from "
                    f"this target, not sent ({len(left)}): " + ", ".join(repr(k) for k in left[:10])
                )
        if left := [change.key for change in deletes if change.key in run.left_out]:
            run.notes.append(
                f"{len(left)} deletes are products {LEFT_OUT_BY} targets[{run.index}].where "
                f"(absent from this target), not gone from the source; first: {left[0]!r}"
            )
        changes, keep = self._unpushable(run)
        keep |= unproven  # a whole-block upsert would delete them without proof
        withdrawn = [change for change in changes if change.kind is ChangeKind.DELETE]
        changes = [change for change in changes if change.kind is not ChangeKind.DELETE]
        deletes += withdrawn
        rejected = len(run.rejections) + run.held_rejected
        deleting, population = len(deletes), run.state_count
        mirroring = run.full and getattr(run.config, "mirror_block", False) and not run.only
        if mirroring and run.target_count and not keep:
            # a whole-block upsert (never sent while keys must be kept) also removes what
            # state never knew (drift, lost state)
            deleting = max(deleting, run.target_count - len(changes))
            population = max(population, run.target_count)
        verdict = check_guards(
            GuardInput(
                source_complete=source_error is None,
                source_error=source_error,
                source_count=source_count,
                last_source_count=self.store.last_complete_source_count(run.config.name),
                state_count=population,
                deletes=deleting,
                keyless=len(run.keyless),
                keyless_example=run.keyless[0] if run.keyless else None,
                rejected=rejected,
                rejected_example=run.rejections[0].reason if run.rejections else None,
            ),
            run.config.guards,
            target_path=f"targets[{run.index}]",
            allow_deletes=options.allow_deletes,
        )
        planned = run.target.plan(
            changes,
            deletes,
            full=run.full,
            # a resend never sends a whole-block upsert (it would drop every other product)
            deletes_allowed=verdict.allowed and not run.only,
            full_reason=run.mode_reason,
            keep=keep,
        )
        if source_error is not None and run.full:
            run.notes.append("source read incomplete: full refresh limited to what was read")
        return Plan(
            target=run.config.name,
            kind=kind,
            mode=run.mode,
            mode_reason=run.mode_reason,
            operations=planned.operations,
            unchanged=run.unchanged,
            rejected=tuple(run.rejections),
            held=planned.held,
            guard=verdict
            if (planned.held or not verdict.allowed or verdict.overridden)
            else GuardVerdict(True),
            source_count=source_count,
            source_complete=source_error is None,
            state_count=run.state_count,
            notes=tuple(run.notes) + planned.notes,
            source_error=source_error,
            held_rejected=run.held_rejected,
            drift=run.drift,
            in_doubt=run.doubts[1] if run.remember else sum(run.doubts),
            awaiting_delete=run.awaiting_delete,
            rate_limit_per_s=run.config.rate_limit_per_s,
        )

    def _proven_deletes(
        self, run: _TargetRun, candidates: list[Change], proof: DeleteProof
    ) -> tuple[list[Change], frozenset[str]]:
        """The products gone from a complete read that may be deleted: those a second look
        confirms (where the source takes one), missing from enough consecutive reads; and
        the keys of the others (missing, not proven gone: no request may remove them)."""
        everything = frozenset(change.key for change in candidates)
        name = run.config.name
        keys = [change.key for change in candidates]
        # a second look asks the source by its key: only for targets keyed by it
        keyed_by_source = getattr(getattr(run.config, "mapping", None), "key", None) is None
        looked = [key for key in keys if key not in run.left_out]  # left out: seen, not gone
        confirmed = proof.confirm(looked) if keys and keyed_by_source else None
        if confirmed is not None:
            confirmed |= run.left_out.intersection(keys)
            found = len(keys) - len(confirmed)
            if found:
                why = f"it failed: {proof.failure}" if proof.failure else "found again"
                run.notes.append(
                    f"{found} products missing from the read were not confirmed gone by a "
                    f"second look at the source ({why}): not deleted"
                )
            run.awaiting_delete += found
            candidates = [change for change in candidates if change.key in confirmed]
        needed, why = proof.runs_needed(confirmed is not None)
        previous = self.store.absences(name) if needed > 1 else {}
        missed = {change.key: previous.get(change.key, 0) + 1 for change in candidates}
        if run.remember:
            self.store.record_absences(name, missed, time.time())
        waiting = [key for key, count in missed.items() if count < needed]
        run.awaiting_delete += len(waiting)
        if waiting:
            run.notes.append(
                f"{len(waiting)} products missing from this read are deleted only once "
                f"missing from {needed} consecutive complete reads ({why}); "
                f"first: {waiting[0]!r}, missed {missed[waiting[0]]} so far"
            )
        ready = [change for change in candidates if missed[change.key] >= needed]
        return ready, everything - {change.key for change in ready}

    def _unpushable(self, run: _TargetRun) -> tuple[list[Change], frozenset[str]]:
        """The run's changes plus what becomes of the products in state that can't be pushed
        any more (``rejected``): a delete each (withdraw), or nothing but a note, and for a
        mirrored block's upsert their last acknowledged version (keep). A duplicated key is
        always kept: the source does hold that product. Also the keys no request may remove
        from the target."""
        changes = list(run.changes)
        acked = (
            self.store.acked_of(run.config.name, sorted(run.unsendable)) if run.unsendable else []
        )
        if not acked:
            return changes, frozenset()
        withdrawing = run.config.rejected == "withdraw"
        withdrawn = [a for a in acked if withdrawing and a.key not in run.ambiguous]
        kept = [a for a in acked if not withdrawing or a.key in run.ambiguous]
        if withdrawn:
            run.withdrawn = len(withdrawn)
            run.notes.append(
                f"{len(withdrawn)} products on the target can't be pushed any more (rejected): "
                f'withdrawn from the target (rejected = "withdraw"); first: {withdrawn[0].key!r}'
            )
            changes += [Change(ChangeKind.DELETE, a.key, None, a) for a in withdrawn]
        if not kept:
            return changes, frozenset()
        run.stale = len(kept)
        why = "their key is duplicated in the source" if withdrawing else 'rejected = "keep"'
        run.notes.append(
            f"{len(kept)} products on the target can't be pushed any more (rejected): they "
            f"keep their last acknowledged version and are stale ({why}); "
            f"first: {kept[0].key!r}"
        )
        known = [a for a in kept if a.hash != UNACKNOWLEDGED]
        if run.full and getattr(run.config, "mirror_block", False):
            # a whole-block upsert must carry their last good version, or it would drop them
            changes += [
                Change(ChangeKind.REFRESH, a.key, Document(a.key, a.canonical, a.hash), a)
                for a in known
            ]
        return changes, frozenset({a.key for a in kept} - {a.key for a in known})

    # -- sending ---------------------------------------------------------------------
    def _execute(self, run: _TargetRun, plan: Plan, started: float) -> TargetReport:
        config = run.config
        name = config.name
        structlog.contextvars.bind_contextvars(target=name, run_id=run.run_id)
        try:
            if run.outcome is not None:
                return self._finish(run, plan, Execution(), started, run.outcome, run.error)
            upserts: list[tuple[str, bytes, bytes, bytes | None]] = []
            deletes: list[str] = []

            self.progress.begin(name, sum(len(op.changes) for op in plan.operations))

            def on_ack(operation: Operation) -> None:
                self.progress.advance(name, len(operation.changes))
                for change in operation.changes:
                    if change.kind is ChangeKind.DELETE:
                        deletes.append(change.key)
                    elif change.document is not None:
                        document = change.document
                        upserts.append(
                            (document.key, document.hash, document.canonical, document.source_hash)
                        )

            def flush() -> None:
                if upserts or deletes:
                    self.store.apply_acks(name, upserts, deletes)
                    upserts.clear()
                    deletes.clear()

            clock = self._clock or SystemClock()
            deadline = (
                None
                if self._deadline is None
                # the rest of the budget, on the executor's clock
                else clock.monotonic() + max(0.0, self._deadline - time.monotonic())
            )
            self.store.mark_unacknowledged(name, _writes_in(plan.operations))
            executor = Executor(
                run.target,
                concurrency=config.concurrency,
                rate_limit_per_s=config.rate_limit_per_s,
                retry=config.retry,
                clock=clock,
                events=self._events,
                stop=self.stop,
                grace_s=self.config.schedule.shutdown_grace_s,
                deadline=deadline,
            )
            execution = executor.run(plan.operations, on_ack, flush)
            self._restore_refused(run, plan, execution)
            too_many = _too_many_rejected(run, plan, execution)
            late: tuple[Operation, ...] = ()
            held: str | None = None
            read_out_of_time = not plan.source_complete and self._out_of_time()
            out_of_time = execution.out_of_time or read_out_of_time
            if too_many is None and not out_of_time:
                late, held = self._late_withdrawals(run, plan, execution)
            if late:
                execution = _combined(execution, executor.run(late, on_ack, flush))
            self._record_doubts(run, (*plan.operations, *late), execution)
            if execution.fatal:
                outcome, error = "failed", execution.fatal
            elif self.stop.is_set() and (execution.interrupted or not plan.source_complete):
                outcome, error = "interrupted", "stopped (signal or lost lease) before the end"
            elif out_of_time:
                left = execution.not_sent + execution.failed
                outcome, error = (
                    "incomplete",
                    (
                        f"the run's time budget (max_run_s={self._budget_s:g}) ran out: {left} "
                        "products not sent yet"
                        + (
                            ""
                            if plan.source_complete
                            else ", and the read did not complete (no deletes)"
                        )
                        + "; the next run carries on"
                    ),
                )
            elif not plan.source_complete:
                outcome, error = "failed", "; ".join(plan.guard.reasons)
            elif not plan.guard.allowed:
                outcome, error = "blocked", "; ".join(plan.guard.reasons)
            elif too_many is not None:
                outcome, error = "blocked", too_many
            elif held is not None:
                outcome, error = "blocked", held
            elif execution.failed:
                outcome, error = (
                    # nothing acknowledged: the target took none of it, the run failed
                    "failed" if sum(execution.acked.values()) == 0 else "partial",
                    (
                        f"{execution.failed} products still failing after retries "
                        f"(last: {execution.last_error}); they are re-sent next run"
                    ),
                )
            else:
                outcome, error = "ok", None
            return self._finish(run, plan, execution, started, outcome, error)
        finally:
            structlog.contextvars.unbind_contextvars("target", "run_id")

    def _restore_refused(self, run: _TargetRun, plan: Plan, execution: Execution) -> None:
        """A write the target refused was not applied: state goes back to what the target
        holds, its last acknowledged version (a refused create: nothing), instead of
        staying marked in flight."""
        refused = {r.key for r in execution.rejections if r.by_target}
        if not refused:
            return
        restore: list[tuple[str, bytes, bytes, bytes | None]] = []
        forget: list[str] = []
        for operation in plan.operations:
            for change in operation.changes:
                if change.key not in refused or change.kind in (
                    ChangeKind.DELETE,
                    ChangeKind.REFRESH,  # never marked in flight: state is as it was
                ):
                    continue
                previous = change.previous
                if previous is None:
                    forget.append(change.key)
                elif previous.hash != UNACKNOWLEDGED:
                    restore.append((change.key, previous.hash, previous.canonical, None))
        self.store.apply_acks(run.config.name, restore, forget)

    def _late_withdrawals(
        self, run: _TargetRun, plan: Plan, execution: Execution
    ) -> tuple[tuple[Operation, ...], str | None]:
        """Deletes of the products the target refused this run whose older version it still
        holds, when they are to be withdrawn and nothing held deletes back; or why the
        delete guards hold them (with the run's own deletes, over a limit)."""
        if (
            run.config.rejected != "withdraw"
            or not plan.source_complete
            or not plan.guard.allowed
            or execution.fatal
            or self.stop.is_set()
        ):
            return (), None
        refused = {r.key for r in execution.rejections if r.by_target}
        # only where the target held a version before (a refused create left nothing there)
        had = [
            change.key
            for operation in plan.operations
            for change in operation.changes
            if change.key in refused and change.previous is not None
        ]
        acked = self.store.acked_of(run.config.name, had) if had else []
        if not acked:
            return (), None
        guards = run.config.guards
        deleting = plan.counts()["delete"] + len(acked)
        if deleting > guards.max_delete_fraction * max(run.state_count, 1) or (
            guards.max_delete_count is not None and deleting > guards.max_delete_count
        ):
            return (), (
                f"{len(acked)} products the target refused this run are not withdrawn: with "
                f"this run's deletes that makes {deleting} of the target's {run.state_count} "
                f"products, over targets[{run.index}].guards (max_delete_fraction="
                f"{guards.max_delete_fraction:.0%}, max_delete_count={guards.max_delete_count}); "
                "they keep their older version until a run withdraws them"
            )
        run.withdrawn += len(acked)
        log.info(
            "syncd.run.withdrawing",
            target=run.config.name,
            products=len(acked),
            reason="refused by the target this run; the older version must not stay there",
        )
        deletes = [Change(ChangeKind.DELETE, a.key, None, a) for a in acked]
        return run.target.plan([], deletes, full=False, deletes_allowed=True).operations, None

    def _record_doubts(
        self, run: _TargetRun, operations: Sequence[Operation], execution: Execution
    ) -> None:
        """Remember the products whose write the target may have applied after syncd gave
        up on it, to re-send them whole once ``in_doubt_window_s`` has passed."""
        doubted: set[str] = getattr(execution, "in_doubt", set())
        if not doubted:
            return
        payloads: dict[str, bytes | None] = {}
        for operation in operations:
            for change in operation.changes:
                if change.key in doubted:
                    source = change.document or change.previous
                    payloads[change.key] = source.canonical if source is not None else None
        until = time.time() + run.config.in_doubt_window_s
        self.store.record_doubts(run.config.name, list(payloads.items()), until)
        run.doubted = len(payloads)
        log.warning(
            "syncd.run.writes_in_doubt",
            target=run.config.name,
            products=len(payloads),
            reassert_after_s=run.config.in_doubt_window_s,
        )

    def _finish(
        self,
        run: _TargetRun,
        plan: Plan,
        execution: Execution,
        started: float,
        outcome: str,
        error: str | None,
    ) -> TargetReport:
        name = run.config.name
        now = time.time()
        error = scrub(error) if error else error
        rejections = [
            replace(r, reason=scrub(r.reason)) for r in (*plan.rejected, *execution.rejections)
        ]
        _log_rejections(name, rejections)
        if run.run_id is not None:
            if rejections:
                self.store.record_rejections(name, rejections, now)
            # only a run that read and planned this target knows which rejections still
            # hold (not one refused the lease, failed at the start, or resending a few keys)
            planned = run.staging is not None and plan.error is None
            if planned and plan.source_complete and outcome != "locked" and not run.only:
                keep = {r.key for r in rejections} | set(run.held_rejections)
                self.store.prune_rejections(name, keep)
        acked = execution.acked
        stopped = outcome in ("interrupted", "incomplete")  # what was not sent was not tried
        report = TargetReport(
            target=name,
            kind=run.target.kind,
            run_id=run.run_id,
            mode=run.mode,
            mode_reason=run.mode_reason,
            outcome=outcome,
            created=acked["create"],
            updated=acked["update"],
            refreshed=acked["refresh"],
            deleted=acked["delete"],
            unchanged=plan.unchanged,
            rejected=len(rejections) + run.held_rejected,
            # an interrupted run says what it never sent rather than calling it failed; a
            # run that gave up (retry budget, fatal answer) counts it as still failing
            failed=execution.failed + (0 if stopped else execution.not_sent),
            not_attempted=execution.not_sent if stopped else 0,
            held=len(plan.held),
            requests=execution.requests,
            retries=execution.retries,
            duration_ms=int((time.monotonic() - started) * 1000),
            drift=run.drift,
            in_doubt=run.doubted + run.doubts[1],
            error=error,
            plan=plan.summary(),
        )
        if run.run_id is not None:
            self.store.finish_run(
                RunRecord(
                    id=run.run_id,
                    target=name,
                    started_at=now - report.duration_ms / 1000,
                    finished_at=now,
                    mode=run.mode,
                    mode_reason=run.mode_reason,
                    outcome=outcome,
                    created=report.created,
                    updated=report.updated + report.refreshed,
                    deleted=report.deleted,
                    unchanged=report.unchanged,
                    rejected=report.rejected,
                    failed=report.failed,
                    held=report.held,
                    requests=report.requests,
                    retries=report.retries,
                    source_count=plan.source_count,
                    source_complete=plan.source_complete,
                    drift=run.drift,
                    error=error,
                    holder=run.holder,
                    details=_details(plan),
                )
            )
        level = (
            "info"
            if outcome in ("ok", "locked", "incomplete")
            else "warning"
            if outcome in ("partial", "blocked", "interrupted")
            else "error"
        )
        getattr(log, level)("syncd.run.finished", **report.figures())
        return report


LOGGED_REJECTIONS = 20
"""Rejections logged one by one per run and target; the rest are counted."""


def _log_rejections(target: str, rejections: Sequence[Rejection]) -> None:
    """One ``syncd.product.rejected`` line per refused product (its key, and every failing
    field in the reason), the first ``LOGGED_REJECTIONS`` of them; then how many more."""
    for rejection in rejections[:LOGGED_REJECTIONS]:
        log.warning(
            "syncd.product.rejected",
            target=target,
            key=rejection.key,
            reason=rejection.reason,
            by_target=rejection.by_target,
        )
    if len(rejections) > LOGGED_REJECTIONS:
        log.warning(
            "syncd.product.rejected_more",
            target=target,
            more=len(rejections) - LOGGED_REJECTIONS,
            command=f"syncd rejections --target {target}",
        )


def _combined(first: Execution, second: Execution) -> Execution:
    """Two executions of one run as one: counts added, errors kept, the later last."""
    merged = Execution()
    for name in (f.name for f in fields(Execution)):
        a, b = getattr(first, name), getattr(second, name)
        if isinstance(a, bool):
            value: Any = a or b
        elif isinstance(a, Counter | list | int):
            value = a + b
        elif isinstance(a, set):
            value = a | b
        else:  # the first fatal error, the last error seen
            value = (a or b) if name == "fatal" else (b or a)
        setattr(merged, name, value)
    return merged


def _too_many_rejected(run: _TargetRun, plan: Plan, execution: Execution) -> str | None:
    """Why the run is not ok when the target refused (with what was rejected before
    sending) more than ``max_reject_fraction`` of the records read."""
    refused = len(execution.rejections)
    if not refused:
        return None  # the plan's own rejections were weighed by the guards
    rejected = len(plan.rejected) + run.held_rejected + refused
    read = max(plan.source_count, 1)
    limit = run.config.guards.max_reject_fraction
    if rejected <= limit * read:
        return None
    return (
        f"{rejected} of the {plan.source_count} records read ({rejected / read:.0%}) were "
        f"rejected ({refused} by the target: {execution.rejections[0].reason}), over "
        f"max_reject_fraction={limit:.0%}; fix them or change "
        f"targets[{run.index}].guards.max_reject_fraction"
    )


def reconcile_once(
    config: SyncdConfig, store: StateStore, options: RunOptions | None = None, **kwargs: Any
) -> RunReport:
    """One run over every selected target (see ``Reconciler``)."""
    return Reconciler(config, store, **kwargs).sync(options)


__all__ = [
    "NOT_IN_SOURCE",
    "Reconciler",
    "RunOptions",
    "RunReport",
    "TargetReport",
    "reconcile_once",
]
