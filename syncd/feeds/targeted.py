"""Targeted syncs: the keys a change feed named, read from the source alone, then mapped,
diffed, guarded, pushed and acknowledged by the same run as a scheduled one (mode
``feed``).

``read_targeted`` asks the source for just those keys (SQL: the configured query
restricted to them in one snapshot; HTTP: ``item_url`` per key) and sorts them into
found, gone (the read confirms the source no longer has them) and unreachable (never
deleted). ``sync_keys`` hands the rows to a ``Reconciler`` through ``KeyedSource``, so the
run never reads the whole catalog, sends only the diff, deletes what is confirmed gone
within the feed delete window, and is recorded as a ``feed`` run (never the night's
complete read: no source-count baseline, no absences, no rolling refresh).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import structlog

from syncd.config import SyncdConfig
from syncd.errors import RecordError, SourceError
from syncd.executor import Events, NoEvents
from syncd.logs import scrub
from syncd.model import SourceItem
from syncd.progress import RunProgress
from syncd.reconcile import Reconciler
from syncd.runs import FeedRun, RunOptions, RunReport
from syncd.sources import Source, open_source, read_catalog
from syncd.sources.base import KeyedRead
from syncd.state.base import StateStore
from syncd.values import key_text

log = structlog.get_logger("syncd.feeds")


@dataclass(frozen=True)
class TargetedRead:
    """What reading the named keys from the source found."""

    rows: tuple[SourceItem, ...] = ()
    """The source's rows of the keys found (grouping, variants and ``where`` still to apply)."""
    found: frozenset[str] = frozenset()
    gone: frozenset[str] = frozenset()
    """Named keys the source confirmed it no longer has (or that ``source.where`` leaves out)."""
    unreachable: frozenset[str] = frozenset()
    """Named keys the read could not reach: never deleted, their batch not acknowledged."""
    error: str | None = None
    """Why the whole read failed (every key is then unreachable)."""


class KeyedSource:
    """A ``Source`` over the rows a targeted read found: what a feed's run reads instead of
    the whole catalog. Its second look is the targeted read's own answer."""

    answers_by_key = True
    """The read looked each key up: ``DeleteProof`` uses its answer whatever
    ``source.confirm_deletes`` says."""

    def __init__(self, read: TargetedRead, inner: str) -> None:
        self._read = read
        self._inner = inner

    def read(self) -> Iterator[SourceItem]:
        yield from self._read.rows

    def describe(self) -> str:
        found = len(self._read.found)
        return f"targeted read of {found} of the named products from {self._inner}"

    @property
    def can_prove_complete(self) -> bool:
        return True  # complete for the named keys: each was looked up

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        gone = self._read.gone
        return {key for key in keys if key in gone}


class _Rows:
    """Rows as a source, to apply the read's grouping, variants and ``where`` to them."""

    def __init__(self, rows: Sequence[SourceItem]) -> None:
        self._rows = rows

    def read(self) -> Iterator[SourceItem]:
        yield from self._rows

    def describe(self) -> str:
        return "targeted rows"

    @property
    def can_prove_complete(self) -> bool:
        return True

    def confirm_absent(self, keys: Sequence[str]) -> set[str] | None:
        return None


def read_targeted(
    config: SyncdConfig, keys: Sequence[str], source: Source | None = None
) -> TargetedRead:
    """Read ``keys`` from the configured source (``source``: an adapter already open)."""
    wanted = list(dict.fromkeys(_key(key) for key in keys))
    source = source or open_source(config.source, config.http)
    read_keys = getattr(source, "read_keys", None)
    if read_keys is None:
        return TargetedRead(
            unreachable=frozenset(wanted),
            error=f"{source.describe()}: this source has no targeted read by key",
        )
    try:
        keyed: KeyedRead = read_keys(wanted)
    except SourceError as exc:
        return TargetedRead(unreachable=frozenset(wanted), error=scrub(str(exc)))
    key_field = config.source.key
    found: set[str] = set()
    for item in read_catalog(_Rows(keyed.rows), config.source):
        if isinstance(item, dict):
            value = item.get(key_field)
            if value is not None:
                found.add(_key(value))
    found &= set(wanted)
    unreachable = keyed.unreachable & set(wanted)
    gone = frozenset(set(wanted) - found - unreachable)
    return TargetedRead(keyed.rows, frozenset(found), gone, frozenset(unreachable))


def _key(value: object) -> str:
    """A key as the full read names it (``values.key_text``: numbers in their shortest
    form, text NFC with whitespace and a BOM stripped), so a key the feed names and the
    row the targeted read finds meet as in the nightly run; a key that rule refuses (an
    invisible character) as its text, stripped."""
    try:
        return key_text(value)
    except RecordError:
        return str(value).strip()


@dataclass
class DeleteWindow:
    """The deletes feed runs sent per target within a sliding window (``delete_window_s``),
    seeded from the feed runs in state so a restart keeps counting them."""

    window_s: float
    _sent: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, store: StateStore, targets: Sequence[str], now: float) -> None:
        for target in targets:
            for run in store.recent_runs(target, limit=200, feed=True):
                if (
                    run.mode == "feed"
                    and run.deleted
                    and (run.finished_at or 0) >= now - self.window_s
                ):
                    self.add(target, run.deleted, run.finished_at or now)

    def add(self, target: str, deleted: int, at: float) -> None:
        if deleted:
            with self._lock:
                self._sent.setdefault(target, deque()).append((at, deleted))

    def recent(self, now: float) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for target, sent in self._sent.items():
                while sent and sent[0][0] < now - self.window_s:
                    sent.popleft()
                counts[target] = sum(count for _, count in sent)
            return counts


class _AckTimes:
    """The executor's events, forwarded, remembering when each target last answered 2xx:
    the time its acknowledgement of the batch arrived."""

    def __init__(self, events: Events) -> None:
        self._events = events
        self.acked_at: dict[str, float] = {}

    def request(self, target: str, endpoint: str, status: str, seconds: float) -> None:
        if status == "2xx":
            self.acked_at[target] = time.time()
        self._events.request(target, endpoint, status, seconds)

    def retry(self, target: str, status: str) -> None:
        self._events.retry(target, status)


@dataclass(frozen=True)
class TargetedSync:
    """How one targeted sync of a batch of keys went."""

    read: TargetedRead
    report: RunReport | None = None
    """None when the read failed: nothing was run."""
    acked_at: Mapping[str, float] = field(default_factory=dict)
    """Per target that ended ``ok``: when its last acknowledgement came (or the run ended)."""
    locked: bool = False
    """Some target was leased by another process: try these keys again shortly."""

    @property
    def pushed(self) -> bool:
        """Every target ended ``ok`` (pushed and acknowledged, or nothing needed)."""
        return self.report is not None and self.report.ok

    @property
    def settled(self) -> frozenset[str]:
        """The named keys every target has now: pushed (or needing nothing), or gone and
        deleted; empty unless every target ended ``ok``."""
        if not self.pushed:
            return frozenset()
        return self.read.found | self.read.gone

    def failed(self, keys: Sequence[str]) -> frozenset[str]:
        """Of ``keys``, those not settled (their batch is not acknowledged)."""
        return frozenset(keys) - self.settled


def sync_keys(
    config: SyncdConfig,
    store: StateStore,
    keys: Sequence[str],
    *,
    window: DeleteWindow,
    environ: Mapping[str, str] | None = None,
    transports: Mapping[str, httpx.BaseTransport] | None = None,
    events: Events | None = None,
    stop: threading.Event | None = None,
    source: Source | None = None,
    targets: Sequence[str] = (),
) -> TargetedSync:
    """Read ``keys`` alone and push what changed to every target (or ``targets``)."""
    source = source or open_source(config.source, config.http)
    read = read_targeted(config, keys, source)
    if read.error is not None:
        log.warning("syncd.feeds.read_failed", keys=len(read.unreachable), error=read.error)
        return TargetedSync(read)
    if read.unreachable:
        log.warning(
            "syncd.feeds.keys_unreachable",
            keys=len(read.unreachable),
            first=min(read.unreachable),
        )
    wanted = sorted(read.found | read.gone)
    if not wanted:
        return TargetedSync(read)
    now = time.time()
    ack_times = _AckTimes(events or NoEvents())
    options = RunOptions(
        keys=tuple(wanted),
        targets=tuple(targets),
        feed=FeedRun(recent_deletes=window.recent(now), window_s=window.window_s),
    )
    inner = source.describe()
    report = Reconciler(
        config,
        store,
        environ=environ,
        transports=transports,
        events=ack_times,
        stop=stop,
        source=KeyedSource(read, inner),
        progress=RunProgress(),  # the scheduled run's progress gauges stay its own
    ).sync(options)
    ended = time.time()
    for target in report.targets:
        window.add(target.target, target.deleted, ended)
    acked = {t.target: ack_times.acked_at.get(t.target, ended) for t in report.targets if t.ok}
    locked = any(t.outcome == "locked" for t in report.targets)
    return TargetedSync(read, report, acked, locked)
