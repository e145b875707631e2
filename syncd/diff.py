"""The pure core: changes between documents and state, and the immutable plan of requests.

No I/O and no logging here. ``diff_chunk`` turns one chunk of mapped documents and
the state's answer for them into ``Change`` objects; targets turn changes into
``Operation`` objects (one request each); a ``Plan`` holds them with its ``summary()``.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, groupby, repeat
from operator import attrgetter
from typing import Any

from syncd.model import Acked, Document, Rejection, quick_init, quick_new


class ChangeKind(enum.StrEnum):
    CREATE = "create"
    """The key is unknown to state: a new product, or state was lost."""
    UPDATE = "update"
    """The payload's hash differs from the one last acknowledged."""
    REFRESH = "refresh"
    """Unchanged, but re-sent because this is a full refresh."""
    DELETE = "delete"
    """In state, absent from a source read that completed."""


@quick_init
@dataclass(frozen=True, slots=True)
class Change:
    """One product that must be written to (or removed from) a target."""

    kind: ChangeKind
    key: str
    document: Document | None = None
    """The new document; ``None`` for deletes."""
    previous: Acked | None = None
    """What the target last acknowledged; ``None`` for creates."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # the fields as a tuple (a planned run's changes are pickled to disk, see
        # syncd.stages.spill): the dataclass's own pickling of slots is slower
        return Change, (self.kind, self.key, self.document, self.previous)


_NEW_CHANGE = quick_new(Change)
"""``Change(...)`` for ``diff_chunk``: a change a product and target, on a first sync or
a full refresh."""
_UNCHANGED: Any = object()
"""``diff_chunk``'s answer for a key not in ``differing`` (one lookup a document)."""


def diff_chunk(
    documents: Mapping[str, Document],
    differing: Mapping[str, Acked | None],
    *,
    full: bool = False,
    previous: Mapping[str, Acked] | None = None,
) -> list[Change]:
    """The changes in one chunk.

    ``differing`` is the state's answer for the chunk: only keys whose hash differs
    (``Acked``) or that are unknown (``None``). On a full refresh every document is a
    change; the unchanged ones are ``REFRESH`` (``previous`` may give their entries).
    """
    create, update = ChangeKind.CREATE, ChangeKind.UPDATE  # looked up once, not per document
    new = _NEW_CHANGE
    if not any(differing.values()) and documents.keys() <= differing.keys():
        # every document is new (a first sync's every chunk): no loop in Python
        return list(map(new, repeat(Change), repeat(create), documents.keys(), documents.values()))
    changes: list[Change] = []
    for key, document in documents.items():
        acked = differing.get(key, _UNCHANGED)
        if acked is not _UNCHANGED:
            changes.append(new(Change, create if acked is None else update, key, document, acked))
        elif full:
            known = previous.get(key) if previous is not None else None
            changes.append(new(Change, ChangeKind.REFRESH, key, document, known))
    return changes


def deletes_of(unseen: Iterable[Acked]) -> list[Change]:
    """Delete changes for acknowledged entries absent from a complete read."""
    return [Change(ChangeKind.DELETE, acked.key, None, acked) for acked in unseen]


@dataclass(frozen=True, slots=True)
class SentCopy:
    """A change as a run remembers it once its request has gone out (the new payload is
    not kept): enough to restore the key to what the target held before the run."""

    key: str
    kind: ChangeKind
    previous: Acked | None
    """What the target had acknowledged before (None: the change created the product, or
    for an update, the version was not ``kept``)."""
    kept: bool = True
    """Whether ``previous`` was kept: a run keeps the versions its sent updates replaced
    up to ``schedule.spool_max_mb`` of them (an update-heavy run's journal is bounded)."""


@quick_init
@dataclass(frozen=True, slots=True)
class Operation:
    """One request to a target and the changes it acknowledges when answered 2xx.

    ``endpoint`` names the call (``product.upsert``, ``product.delete``, ``block.create``,
    ``block.delete``, ``block.upsert``); ``mode`` is what was chosen for it
    (``FULL_UPDATE``, ``INCREMENTAL_UPDATE``, ...) and ``reason`` says why.
    """

    endpoint: str
    mode: str
    reason: str
    changes: tuple[Change, ...]
    body: Any = None
    """A JSON body computed at plan time, if any: ``None`` for a bodiless request and for
    one whose body the target builds when it sends (from ``changes``' documents, so the
    plan doesn't hold every payload twice)."""
    path: str = ""
    """The request path, relative to the target's base URL."""
    removes_unlisted: bool = False
    """The target drops every product not in ``changes`` (a whole-block upsert)."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(change.key for change in self.changes)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Operation, (
            self.endpoint,
            self.mode,
            self.reason,
            self.changes,
            self.body,
            self.path,
            self.removes_unlisted,
        )


SAMPLES_KEPT = 20
"""Examples per kind of request a plan remembers for its summary (more: another pass)."""


class Tally:
    """Operations counted as they go by: products per change kind, and per endpoint and mode
    the requests, products and the first ``samples`` examples (key and reason)."""

    def __init__(self, samples: int = SAMPLES_KEPT) -> None:
        self.samples = samples
        self.counts: Counter[str] = Counter()
        self.by_request: dict[str, dict[str, Any]] = {}

    def add(self, operations: Iterable[Operation]) -> Tally:
        # a run of requests of one endpoint and mode at a time (a group is mostly one), the
        # changes counted by their ``ChangeKind`` (hashed as the str it is) and named by its
        # ``value`` once per kind: ``.value`` is a Python property, ~0.9 µs a change
        for (endpoint, mode), run in groupby(operations, attrgetter("endpoint", "mode")):
            batch = list(run)
            changes = [operation.changes for operation in batch]
            kinds = Counter(map(attrgetter("kind"), chain.from_iterable(changes)))
            for kind, count in kinds.items():
                self.counts[kind.value] += count
            name = f"{endpoint} {mode}"
            entry = self.by_request.setdefault(name, {"requests": 0, "products": 0, "samples": []})
            entry["requests"] += len(batch)
            entry["products"] += sum(map(len, changes))
            for operation in batch[: self.samples - len(entry["samples"])]:
                keys = operation.keys
                shown = keys[0] if len(keys) == 1 else f"{keys[0]} (+{len(keys) - 1} more)"
                entry["samples"].append({"key": shown, "reason": operation.reason})
        return self

    def merge(self, other: Tally) -> Tally:
        """Count ``other``'s figures on top of this one's (added after them)."""
        self.counts.update(other.counts)
        for name, theirs in other.by_request.items():
            entry = self.by_request.setdefault(name, {"requests": 0, "products": 0, "samples": []})
            entry["requests"] += theirs["requests"]
            entry["products"] += theirs["products"]
            room = max(self.samples - len(entry["samples"]), 0)
            entry["samples"].extend(theirs["samples"][:room])
        return self

    def copy(self) -> Tally:
        """A tally counting on from this one's figures (this one unchanged)."""
        copied = Tally(self.samples)
        copied.counts = Counter(self.counts)
        copied.by_request = {
            name: {**entry, "samples": list(entry["samples"])}
            for name, entry in self.by_request.items()
        }
        return copied


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """Whether deletes (and full upserts) may be sent this run, and if not, why."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    overridden: bool = False
    """An operator let a tripped guard through (``--allow-deletes``)."""


@dataclass(frozen=True)
class Plan:
    """Everything one run intends to do to one target. Immutable; printed or executed."""

    target: str
    kind: str
    mode: str
    """``incremental`` or ``full``."""
    mode_reason: str
    operations: Sequence[Operation]
    """The requests in the order they are sent: a tuple, or for a plan of more than a few
    thousand products a sequence read back from disk (``syncd.stages.spill``)."""
    unchanged: int
    rejected: tuple[Rejection, ...] = ()
    held: tuple[Change, ...] = ()
    """Deletes (or the whole-block upsert's implied deletes) held back by a guard."""
    guard: GuardVerdict = field(default_factory=lambda: GuardVerdict(True))
    source_count: int = 0
    source_complete: bool = True
    state_count: int = 0
    notes: tuple[str, ...] = ()
    """Why requests were chosen as they were (e.g. why ``upsert`` was or wasn't used)."""
    error: str | None = None
    """Why nothing could be planned for the target (unreachable, key refused, block
    missing): the plan is then unknown, not empty."""
    source_error: str | None = None
    """Why the source read failed or came back short; None when it completed."""
    held_rejected: int = 0
    """Products the target refused before, unchanged since: not sent until the back-off ends."""
    drift: int | None = None
    """Products the target holds minus those state says it holds, when the target tells."""
    in_doubt: int = 0
    """Products whose last write the target may have applied late (a timeout, a dropped
    connection): what it holds is unknown until they are re-sent."""
    awaiting_delete: int = 0
    """Products missing from a complete read that wait for more reads before their delete
    (``delete_after_missing_runs``) or that a second look found again."""
    rate_limit_per_s: float = 0.0
    """The target's configured rate limit (0: none), for ``min_duration_s``."""
    tally: Tally | None = field(default=None, compare=False, repr=False)
    """``operations`` counted as they were planned (None: counted when first asked)."""
    undo: tuple[SentCopy, ...] = ()
    """Copies of products whose key the read found twice after a copy had gone to the
    target (planned and sent while the read went on): once ``operations`` are sent, each
    key is restored to what the target last acknowledged before this run (removed when it
    had none), see ``syncd.stages.deciding.undo_requests``."""

    @property
    def min_duration_s(self) -> float | None:
        """The least time sending this plan takes at the rate limit (requests / rate), or
        None without a rate limit; the target's latency over the concurrency adds to it."""
        if self.rate_limit_per_s <= 0:
            return None
        return self.request_count / self.rate_limit_per_s

    @property
    def request_count(self) -> int:
        """The requests planned: counted as planned (``tally``), which includes those put
        after the sender halted (counted, never stored in ``operations``)."""
        if self.tally is None:
            return len(self.operations)
        return sum(entry["requests"] for entry in self.tally.by_request.values())

    @property
    def pending(self) -> bool:
        return self.request_count > 0

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the target is not known to be in line once the plan is sent (empty: none).

        A target that couldn't be inspected, a failed source read, a tripped guard (deletes
        held), rejected products and drift each give one line.
        """
        found: list[str] = []
        if self.error is not None:
            found.append(f"target failed: {self.error}")
        if not self.source_complete:
            found.append(f"source read failed: {self.source_error or 'the read did not complete'}")
        if self.held:
            found.append(f"{len(self.held)} deletes held back by a guard")
        if not self.guard.allowed and self.source_complete:
            found.extend(f"guard: {reason}" for reason in self.guard.reasons)
        if self.rejected:
            found.append(f"{len(self.rejected)} products rejected (never sent)")
        if self.held_rejected:
            found.append(
                f"{self.held_rejected} products refused by the target before, unchanged "
                "since: held back until they change or the back-off ends"
            )
        if self.drift:
            found.append(f"drift: the target holds {self.drift:+d} products compared with state")
        if self.in_doubt:
            found.append(
                f"{self.in_doubt} products whose last write is in doubt (a timeout or a dropped "
                "connection): re-sent whole once the in-doubt window has passed"
            )
        if self.awaiting_delete:
            found.append(
                f"{self.awaiting_delete} products missing from the source are not deleted yet: "
                "waiting for more complete reads, or found again by a second look"
            )
        return tuple(found)

    @property
    def status(self) -> str:
        """One word: ``failed`` (target), ``incomplete`` (source), ``blocked`` (guard),
        ``rejected``, ``drift``, ``pending`` or ``in line``."""
        if self.error is not None:
            return "failed"
        if not self.source_complete:
            return "incomplete"
        if self.held or not self.guard.allowed:
            return "blocked"
        if self.rejected or self.held_rejected:
            return "rejected"
        if self.drift:
            return "drift"
        if self.in_doubt:
            return "in doubt"
        if self.pending or self.awaiting_delete:
            return "pending"
        return "in line"

    def counts(self) -> Counter[str]:
        """Products per change kind (create, update, refresh, delete)."""
        return Counter(self._tally(SAMPLES_KEPT)[0])

    def _tally(self, sample: int) -> tuple[Counter[str], dict[str, dict[str, Any]]]:
        """Products per change kind, and requests, products and the first ``sample``
        examples per endpoint and mode: the ``tally`` kept while planning, or one pass over
        the operations (which may be on disk), remembered (the plan is immutable)."""
        tally = self.tally
        if tally is None or tally.samples < sample:
            tallies: dict[int, Tally] = self.__dict__.setdefault("_tallies", {})
            kept = max(sample, SAMPLES_KEPT)
            if kept not in tallies:
                tallies[kept] = Tally(kept).add(self.operations)
            tally = tallies[kept]
        return Counter(tally.counts), {
            name: {**entry, "samples": entry["samples"][:sample]}
            for name, entry in tally.by_request.items()
        }

    def summary(self, sample: int = 5) -> dict[str, Any]:
        """A JSON-ready description: counts by operation and mode, sample keys with reasons."""
        counts, by_request = self._tally(sample)
        return {
            "target": self.target,
            "kind": self.kind,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "source_count": self.source_count,
            "source_complete": self.source_complete,
            "state_count": self.state_count,
            "unchanged": self.unchanged,
            "changes": dict(sorted(counts.items())),
            "requests": by_request,
            "request_count": self.request_count,
            "min_duration_s": self.min_duration_s,
            "rejected": len(self.rejected),
            "rejected_samples": [
                {"key": r.key, "reason": r.reason} for r in self.rejected[:sample]
            ],
            "held": len(self.held),
            "guard": {
                "allowed": self.guard.allowed,
                "overridden": self.guard.overridden,
                "reasons": list(self.guard.reasons),
            },
            "notes": list(self.notes),
            "status": self.status,
            "in_line": self.status == "in line",
            "error": self.error,
            "source_error": self.source_error,
            "held_rejected": self.held_rejected,
            "drift": self.drift,
            "in_doubt": self.in_doubt,
            "awaiting_delete": self.awaiting_delete,
            "problems": list(self.problems),
        }


def chunked(items: Sequence[Change], size: int) -> Iterable[tuple[Change, ...]]:
    """Consecutive slices of at most ``size`` changes."""
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])
