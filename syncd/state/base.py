"""The ``StateStore`` protocol every state backend implements.

Times are POSIX seconds (UTC). Hashes are the 16-byte digests of ``syncd.model``.
A row of acknowledged state is written only after the target answered 2xx for it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from syncd.model import Acked, RefreshSlice, Rejection, RejectionRecord, RunRecord


class Staging(Protocol):
    """The keys and hashes of one target's documents in the current run.

    Lives in a temporary table on a dedicated connection, so the diff runs in
    bounded memory: Python only ever holds one chunk plus what changed.
    """

    def compare(
        self,
        entries: Sequence[tuple[str, bytes]],
        sources: Sequence[bytes | None] | None = None,
    ) -> dict[str, Acked | None]:
        """Stage a chunk of (key, hash) and return only the keys that differ from state.

        ``sources`` are the fingerprints of the raw rows the entries were mapped from
        (None: unknown), in the same order.

        ``None`` means the key is unknown to state (a create); an ``Acked`` is what
        the target holds now (an update). Unchanged keys are not returned.
        """
        ...

    def known(self, fingerprints: bytes) -> list[bool]:
        """Whether state knows each of a chunk of raw source rows' fingerprints (16 bytes
        each, concatenated).

        A known fingerprint equals the ``source_hash`` of one of the target's products:
        that row maps to that product unchanged, so it needn't be parsed or mapped. The
        product counts as seen for ``duplicates`` and ``unseen``.
        """
        ...

    def remember(self, entries: Sequence[tuple[str, bytes, bytes]]) -> None:
        """Record (key, hash, source_hash) of products found unchanged by payload.

        Only a product whose hash is still ``hash`` takes the fingerprint, so the next
        run skips its row.
        """
        ...

    def staged_count(self) -> int:
        """How many entries were staged (duplicates included)."""
        ...

    def duplicates(self) -> list[str]:
        """Keys staged more than once in this run, a key found through ``known`` counting
        as staged (a skipped row and a parsed one, or a row twice, give the same key)."""
        ...

    def unseen(self) -> Iterator[Acked]:
        """Acknowledged entries of the target whose key was neither staged nor found
        through ``known``: the deletes."""
        ...

    def close(self) -> None:
        """Drop the staged entries and release the connection."""
        ...


class StateStore(Protocol):
    """Durable state of syncd (SQLite by default, any SQLAlchemy URL)."""

    def upgrade(self) -> None:
        """Bring the schema to the current version; refuse a database from a newer syncd."""
        ...

    def close(self) -> None: ...

    # -- acknowledged products ------------------------------------------------
    def begin_staging(self, target: str) -> Staging: ...

    def apply_acks(
        self,
        target: str,
        upserts: Sequence[tuple[str, bytes, bytes, bytes | None]],
        deletes: Sequence[str] = (),
    ) -> None:
        """Record in one transaction: (key, hash, canonical payload, source_hash)
        acknowledged, keys deleted.

        ``source_hash`` is the fingerprint of the raw source row the payload was mapped
        from, or None when unknown (that product's row is always parsed and mapped).
        Also closes any rejection of those keys.
        """
        ...

    def mark_unacknowledged(self, target: str, entries: Iterable[tuple[str, bytes]]) -> None:
        """Before sending writes: set the hash of these keys to ``UNACKNOWLEDGED`` (and
        their ``source_hash`` to None).

        ``entries`` are (key, canonical payload); the payload is stored only for a key not
        yet in state (so a create whose answer is lost can still be deleted later); an
        existing row keeps the payload last acknowledged.
        """
        ...

    def count(self, target: str) -> int: ...

    def iter_acked(self, target: str) -> Iterator[Acked]: ...

    def get(self, target: str, key: str) -> Acked | None: ...

    def forget_target(self, target: str) -> int:
        """Drop every acknowledged entry of a target (after the target was wiped)."""
        ...

    def acked_of(self, target: str, keys: Sequence[str]) -> list[Acked]:
        """The acknowledged entries state holds for these keys (unknown keys left out)."""
        ...

    # -- writes in doubt, products absent ----------------------------------------
    def record_doubts(
        self, target: str, entries: Sequence[tuple[str, bytes | None]], until: float
    ) -> None:
        """(key, payload) whose write the server may have applied after syncd gave up on
        it; re-asserted by the first run after ``until``. ``payload`` is what state holds
        for the key after this run (for a delete: what it held before), to restore it."""
        ...

    def reassert_doubts(self, target: str, now: float) -> int:
        """Mark the products whose doubt is due as unacknowledged (re-sent whole by this
        run; a deleted one is restored from the doubt, so it is deleted again if still
        gone), drop those doubts, and return how many."""
        ...

    def count_doubts(self, target: str, now: float) -> tuple[int, int]:
        """(due now, still within their window)."""
        ...

    # -- the rolling refresh ------------------------------------------------------
    def mark_refresh_due(self, target: str, now: float, period_s: float) -> RefreshSlice:
        """At the start of a sync: mark the ``ceil(count x elapsed / period_s)`` products
        acknowledged longest ago (elapsed: since the target's last completed run started,
        capped at the period; no such run: none) so this run re-sends them whole (their
        hash becomes a ``refresh_marker``, their ``source_hash`` None), and return the slice."""
        ...

    def refresh_due(self, target: str, now: float, period_s: float) -> RefreshSlice:
        """The slice ``mark_refresh_due`` would mark now, writing nothing (for a plan)."""
        ...

    def absences(self, target: str) -> dict[str, int]:
        """Key -> consecutive complete reads the product was missing from (not yet deleted)."""
        ...

    def record_absences(self, target: str, missing: Mapping[str, int], now: float) -> None:
        """Replace the target's absences with ``missing``."""
        ...

    # -- runs ------------------------------------------------------------------
    def start_run(self, target: str, *, mode: str, mode_reason: str, holder: str) -> int: ...

    def finish_run(self, record: RunRecord) -> None:
        """Write the final figures and outcome of a run (matched by ``record.id``)."""
        ...

    def mark_interrupted(self, target: str) -> int:
        """Mark the target's runs still 'running' as 'interrupted'; call while holding the lease."""
        ...

    def recent_runs(
        self, target: str | None = None, limit: int = 20, *, feed: bool | None = None
    ) -> list[RunRecord]:
        """The newest runs first (of ``target``, or of all). ``feed``: None every run; False
        leaves a change feed's targeted syncs (mode ``feed``) out, for readers that want
        the scheduled and CLI runs behind a busy feed; True only those."""
        ...

    def prune_runs(self, target: str, *, before: float, keep: int) -> int:
        """Delete the target's finished runs that started before ``before`` (POSIX seconds;
        0: no age limit) or are older than its ``keep`` newest (0: no count limit), counting
        a change feed's targeted syncs and the other runs apart (a busy feed's runs never
        push the scheduled ones out). The latest of each and runs still going are never
        deleted; returns how many went."""
        ...

    def prune_stale_rejections(self, target: str, *, before: float) -> int:
        """Delete the target's rejections made by syncd's own checks (not by the target)
        last seen before ``before`` and not seen by a run since: a product refused
        locally is refused again by every run that reads it, so these are resolved."""
        ...

    def last_complete_source_count(self, target: str) -> int | None:
        """The source size of the target's last run whose source read completed."""
        ...

    # -- rejections ------------------------------------------------------------
    def record_rejections(self, target: str, rejections: Sequence[Rejection], now: float) -> None:
        """Upsert rejections: first_seen kept, last_seen=now, count+1, reason and hash replaced."""
        ...

    def held_rejections(self, target: str, since: float) -> dict[str, bytes | None]:
        """Target-side rejections seen at or after ``since``: key -> rejected hash."""
        ...

    def prune_rejections(self, target: str, keep: Collection[str]) -> int:
        """Delete the target's rejections whose key is not in ``keep``."""
        ...

    def open_rejections(self, target: str | None = None) -> list[RejectionRecord]: ...

    # -- leases (one writer per target), on the database server's clock ----------
    def acquire_lease(self, target: str, holder: str, ttl: float) -> bool:
        """Take the target's lease if it is free, expired, or already ours, for ``ttl``
        seconds. Expiry is computed and compared on the database server's clock, never
        the caller's, so processes with skewed clocks agree."""
        ...

    def renew_lease(self, target: str, holder: str, ttl: float) -> bool:
        """Extend our lease by ``ttl`` seconds; False when it is no longer ours or expired
        (the holder must stop: another process may take it over)."""
        ...

    def release_lease(self, target: str, holder: str) -> None: ...

    def lease_holder(self, target: str, now: float | None = None) -> str | None:
        """Who holds the target's lease now (None: nobody). ``now`` (POSIX seconds) asks
        about another instant; by default the database server's clock decides."""
        ...

    # -- replicas (the daemons sharing this state database) ----------------------
    def beat_replica(self, replica: str, ttl: float) -> list[str]:
        """Record that ``replica`` lives for ``ttl`` more seconds (database clock), drop the
        rows of replicas whose heartbeat expired, and return the live replicas, sorted."""
        ...

    def live_replicas(self) -> list[str]:
        """The replicas whose heartbeat has not expired, sorted."""
        ...

    def leave_replica(self, replica: str) -> None:
        """Remove the replica's heartbeat at once (a clean stop): the others take its
        targets without waiting for the heartbeat to expire."""
        ...

    def ping(self) -> None:
        """Raise ``StateError`` when the database cannot be reached."""
        ...
