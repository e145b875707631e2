"""The SQL state store (SQLAlchemy Core): SQLite by default, PostgreSQL, MySQL/MariaDB.

``SqlStateStore`` implements ``StateStore`` on any SQLAlchemy URL: acknowledged
products, runs, rejections and leases. The engine plumbing is in ``db.py``, the
staging of a run's keys in ``staging.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from syncd.errors import StateSchemaError
from syncd.logs import scrub, scrub_document
from syncd.model import (
    FEED_MODE,
    UNACKNOWLEDGED,
    Acked,
    RefreshSlice,
    Rejection,
    RejectionRecord,
    RunRecord,
)
from syncd.state import pending, refresh
from syncd.state.base import Staging, StateStore
from syncd.state.db import (
    ACK_COLUMNS,
    READ_BATCH,
    acked_from_row,
    chunks,
    create_state_engine,
    current_revision,
    delete_keys,
    executemany,
    normalize_url,
    safe_url,
    translated,
    upgrade_database,
    upsert,
)
from syncd.state.schema import (
    Seconds,
    leases,
    products,
    replicas,
    runs,
)
from syncd.state.schema import rejections as rejections_table
from syncd.state.staging import SqlStaging

# -- the store -----------------------------------------------------------------


class SqlStateStore:
    """``StateStore`` on any SQLAlchemy URL; SQLite (``sqlite:///path``) by default."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        with self.translated("open"):
            self.engine = create_state_engine(self.url, echo=echo)

    def __repr__(self) -> str:
        return f"SqlStateStore({safe_url(self.url)!r})"

    def translated(self, what: str) -> contextlib.AbstractContextManager[None]:
        return translated(what, self.url)

    def upgrade(self) -> None:
        from syncd.state import migrate  # Alembic (~0.1 s to load): plan never migrates

        with self.translated("upgrade"):
            migrate.upgrade_engine(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        from syncd.state import migrate  # Alembic (~0.1 s to load): only the daemon pings

        with self.translated("ping"), self.engine.connect() as conn:
            conn.execute(sa.select(1))
            problem = migrate.schema_problem(conn)
        if problem:
            raise StateSchemaError(
                f"state database {safe_url(self.url)}: {problem}; the next run migrates it"
            )

    # -- acknowledged products ----------------------------------------------

    def begin_staging(self, target: str) -> SqlStaging:
        return SqlStaging(self, target)

    def apply_acks(
        self,
        target: str,
        upserts: Sequence[tuple[str, bytes, bytes, bytes | None]],
        deletes: Sequence[str] = (),
    ) -> None:
        if not upserts and not deletes:
            return
        now = time.time()
        latest = {key: (hash_, canonical, source) for key, hash_, canonical, source in upserts}
        rows = [(target, key, h, c.decode(), now, s) for key, (h, c, s) in latest.items()]
        gone = [key for key in dict.fromkeys(deletes) if key not in latest]
        with self.translated("record acknowledgements"), self.engine.begin() as conn:
            if rows:
                stmt = upsert(
                    conn,
                    products,
                    ["target", "key"],
                    lambda new: {
                        "hash": new.hash,
                        "payload": new.payload,
                        "acked_at": new.acked_at,
                        "source_hash": new.source_hash,
                    },
                )
                executemany(conn, stmt, ACK_COLUMNS, rows)
            delete_keys(conn, products, target, gone)
            delete_keys(conn, rejections_table, target, [*latest, *gone])

    def mark_unacknowledged(self, target: str, entries: Iterable[tuple[str, bytes]]) -> None:
        entries = iter(entries)
        batch = dict(itertools.islice(entries, READ_BATCH))  # a key once per statement
        if not batch:
            return
        now = time.time()
        with self.translated("mark writes in flight"), self.engine.begin() as conn:
            stmt = upsert(
                conn,
                products,
                ["target", "key"],
                lambda new: {"hash": new.hash, "source_hash": new.source_hash},
            )
            # in slices: on a first sync this is every product, decoded to text
            while batch:
                rows = [
                    (target, key, UNACKNOWLEDGED, c.decode(), now, None) for key, c in batch.items()
                ]
                executemany(conn, stmt, ACK_COLUMNS, rows)
                batch = dict(itertools.islice(entries, READ_BATCH))

    def count(self, target: str) -> int:
        query = sa.select(sa.func.count()).select_from(products).where(products.c.target == target)
        with self.translated("count products"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def iter_acked(self, target: str) -> Iterator[Acked]:
        p = products.c
        query = sa.select(p.key, p.hash, p.payload).where(p.target == target).order_by(p.key)
        last: str | None = None
        while True:
            page = query if last is None else query.where(p.key > last)
            with self.translated("read products"), self.engine.connect() as conn:
                batch = conn.execute(page.limit(READ_BATCH)).all()
            for row in batch:
                yield acked_from_row(row)
            if len(batch) < READ_BATCH:
                return
            last = batch[-1][0]

    def get(self, target: str, key: str) -> Acked | None:
        p = products.c
        query = sa.select(p.key, p.hash, p.payload).where(p.target == target, p.key == key)
        with self.translated("read a product"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else acked_from_row(row)

    def forget_target(self, target: str) -> int:
        with self.translated("forget a target"), self.engine.begin() as conn:
            return conn.execute(products.delete().where(products.c.target == target)).rowcount

    def acked_of(self, target: str, keys: Sequence[str]) -> list[Acked]:
        with self.translated("read products"), self.engine.connect() as conn:
            return pending.acked_of(conn, target, keys)

    # -- writes in doubt, products absent ------------------------------------

    def record_doubts(
        self, target: str, entries: Sequence[tuple[str, bytes | None]], until: float
    ) -> None:
        if entries:
            with self.translated("record writes in doubt"), self.engine.begin() as conn:
                pending.record_doubts(conn, target, entries, until)

    def reassert_doubts(self, target: str, now: float) -> int:
        with self.translated("re-assert writes in doubt"), self.engine.begin() as conn:
            return pending.reassert_doubts(conn, target, now)

    def count_doubts(self, target: str, now: float) -> tuple[int, int]:
        with self.translated("count writes in doubt"), self.engine.connect() as conn:
            return pending.count_doubts(conn, target, now)

    def mark_refresh_due(self, target: str, now: float, period_s: float) -> RefreshSlice:
        with self.translated("mark the rolling refresh"), self.engine.begin() as conn:
            return refresh.mark_refresh_due(conn, target, now, period_s)

    def refresh_due(self, target: str, now: float, period_s: float) -> RefreshSlice:
        with self.translated("count the rolling refresh"), self.engine.connect() as conn:
            return refresh.refresh_due(conn, target, now, period_s)

    def absences(self, target: str) -> dict[str, int]:
        with self.translated("read absences"), self.engine.connect() as conn:
            return pending.read_absences(conn, target)

    def record_absences(self, target: str, missing: Mapping[str, int], now: float) -> None:
        with self.translated("record absences"), self.engine.begin() as conn:
            pending.replace_absences(conn, target, missing, now)

    # -- runs ----------------------------------------------------------------

    def start_run(self, target: str, *, mode: str, mode_reason: str, holder: str) -> int:
        counters = dict.fromkeys(
            ("created", "updated", "deleted", "unchanged", "rejected", "failed", "held"), 0
        )
        values = {
            "target": target,
            "started_at": time.time(),
            "mode": mode,
            "mode_reason": mode_reason,
            "outcome": "running",
            "holder": holder,
            "requests": 0,
            "retries": 0,
            "source_complete": False,
            **counters,
        }
        with self.translated("start a run"), self.engine.begin() as conn:
            key = conn.execute(runs.insert().values(values)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish_run(self, record: RunRecord) -> None:
        values = scrub_document(asdict(record))  # no secret is ever stored
        del values["id"]
        if record.details is not None:
            values["details"] = json.dumps(values["details"], sort_keys=True)
        with self.translated("finish a run"), self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == record.id).values(values))

    def mark_interrupted(self, target: str) -> int:
        stmt = (
            runs.update()
            .where(runs.c.target == target, runs.c.outcome == "running")
            .values(outcome="interrupted", finished_at=time.time())
        )
        with self.translated("mark runs interrupted"), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def recent_runs(
        self, target: str | None = None, limit: int = 20, *, feed: bool | None = None
    ) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(runs.c.target == target)
        if feed is not None:
            query = query.where(_feed_runs(feed))
        with self.translated("read runs"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            RunRecord(
                **{
                    **row,
                    "source_complete": bool(row["source_complete"]),
                    "details": json.loads(row["details"]) if row["details"] else None,
                }
            )
            for row in rows
        ]

    def prune_runs(self, target: str, *, before: float, keep: int) -> int:
        r = runs.c
        pruned = 0
        with self.translated("prune runs"), self.engine.begin() as conn:
            for feed in (True, False):  # a feed's targeted syncs and the other runs apart
                kind = _feed_runs(feed)
                newest = sa.select(r.id).where(r.target == target, kind).order_by(r.id.desc())
                latest = conn.execute(newest.limit(1)).scalar_one_or_none()
                if latest is None:
                    continue
                old = [r.started_at < before] if before > 0 else []
                if keep > 0:  # the id of the newest run beyond the ``keep`` newest
                    cutoff = conn.execute(newest.offset(keep).limit(1)).scalar_one_or_none()
                    if cutoff is not None:
                        old.append(r.id <= cutoff)
                if not old:
                    continue
                stmt = runs.delete().where(
                    r.target == target, kind, r.id < latest, r.outcome != "running", sa.or_(*old)
                )
                pruned += int(conn.execute(stmt).rowcount)
        return pruned

    def prune_stale_rejections(self, target: str, *, before: float) -> int:
        r = rejections_table.c
        last_run = sa.select(sa.func.max(runs.c.started_at)).where(
            runs.c.target == target, runs.c.finished_at.is_not(None)
        )
        with self.translated("prune rejections"), self.engine.begin() as conn:
            since = conn.execute(last_run).scalar_one_or_none()
            if since is None:
                return 0
            stmt = rejections_table.delete().where(
                r.target == target,
                r.by_target.is_(False),
                r.last_seen < min(before, float(since)),
            )
            return int(conn.execute(stmt).rowcount)

    def last_complete_source_count(self, target: str) -> int | None:
        r = runs.c
        query = (
            sa.select(r.source_count)
            .where(
                r.target == target,
                r.source_complete.is_(True),
                r.mode != "feed",  # a feed's targeted read counts only its keys
                # a blocked run's count is no baseline
                r.outcome.in_(("ok", "partial", "incomplete")),
            )
            .order_by(r.id.desc())
            .limit(1)
        )
        with self.translated("read runs"), self.engine.connect() as conn:
            count = conn.execute(query).scalar_one_or_none()
        return None if count is None else int(count)

    # -- rejections ----------------------------------------------------------

    def record_rejections(self, target: str, rejections: Sequence[Rejection], now: float) -> None:
        if not rejections:
            return
        latest = {r.key: r for r in rejections}
        rows = [
            {
                "target": target,
                "key": r.key,
                "reason": scrub(r.reason),
                "first_seen": now,
                "last_seen": now,
                "count": 1,
                "hash": r.hash,
                "by_target": r.by_target,
            }
            for r in latest.values()
        ]
        with self.translated("record rejections"), self.engine.begin() as conn:
            stmt = upsert(
                conn,
                rejections_table,
                ["target", "key"],
                lambda new: {
                    "reason": new.reason,
                    "last_seen": new.last_seen,
                    "count": rejections_table.c.count + sa.literal_column("1", sa.Integer),
                    "hash": new.hash,
                    "by_target": new.by_target,
                },
            )
            conn.execute(stmt, rows)

    def held_rejections(self, target: str, since: float) -> dict[str, bytes | None]:
        r = rejections_table.c
        query = sa.select(r.key, r.hash).where(
            r.target == target, r.by_target.is_(True), r.last_seen >= since
        )
        with self.translated("read rejections"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {row[0]: None if row[1] is None else bytes(row[1]) for row in rows}

    def prune_rejections(self, target: str, keep: Collection[str]) -> int:
        r = rejections_table.c
        with self.translated("prune rejections"), self.engine.begin() as conn:
            keys: Sequence[str] = (
                conn.execute(sa.select(r.key).where(r.target == target)).scalars().all()
            )
            stale = [key for key in keys if key not in keep]
            for chunk in chunks(stale):
                conn.execute(rejections_table.delete().where(r.target == target, r.key.in_(chunk)))
        return len(stale)

    def open_rejections(self, target: str | None = None) -> list[RejectionRecord]:
        query = sa.select(rejections_table).order_by(
            rejections_table.c.target, rejections_table.c.key
        )
        if target is not None:
            query = query.where(rejections_table.c.target == target)
        with self.translated("read rejections"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            RejectionRecord(
                **{
                    **row,
                    "hash": None if row["hash"] is None else bytes(row["hash"]),
                    "by_target": bool(row["by_target"]),
                }
            )
            for row in rows
        ]

    # -- leases (on the database server's clock) ------------------------------

    def _now(self) -> sa.ColumnElement[float]:
        return database_now(self.engine.dialect.name)

    def acquire_lease(self, target: str, holder: str, ttl: float) -> bool:
        lease, now = leases.c, self._now()
        take = (
            leases.update()
            .where(lease.target == target, sa.or_(lease.expires_at < now, lease.holder == holder))
            .values(holder=holder, expires_at=now + ttl)
        )
        with self.translated("acquire a lease"):
            with self.engine.begin() as conn:
                if conn.execute(take).rowcount == 1:
                    return True
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        leases.insert().values(target=target, holder=holder, expires_at=now + ttl)
                    )
                return True
            except IntegrityError:
                pass  # someone else inserted it first: their lease may still have expired
            with self.engine.begin() as conn:
                return conn.execute(take).rowcount == 1

    def renew_lease(self, target: str, holder: str, ttl: float) -> bool:
        lease, now = leases.c, self._now()
        stmt = (
            leases.update()
            .where(lease.target == target, lease.holder == holder, lease.expires_at >= now)
            .values(expires_at=now + ttl)
        )
        with self.translated("renew a lease"), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def release_lease(self, target: str, holder: str) -> None:
        stmt = leases.delete().where(leases.c.target == target, leases.c.holder == holder)
        with self.translated("release a lease"), self.engine.begin() as conn:
            conn.execute(stmt)

    def lease_holder(self, target: str, now: float | None = None) -> str | None:
        when = self._now() if now is None else sa.literal(now, Seconds)
        query = sa.select(leases.c.holder).where(
            leases.c.target == target, leases.c.expires_at >= when
        )
        with self.translated("read a lease"), self.engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()

    # -- replicas (the daemons sharing this database) ---------------------------

    def beat_replica(self, replica: str, ttl: float) -> list[str]:
        row, now = replicas.c, self._now()
        renew = replicas.update().where(row.replica == replica).values(expires_at=now + ttl)
        live = sa.select(row.replica).where(row.expires_at >= now).order_by(row.replica)
        with self.translated("record the replica's heartbeat"):
            with self.engine.begin() as conn:
                conn.execute(replicas.delete().where(row.expires_at < now, row.replica != replica))
                renewed = conn.execute(renew).rowcount == 1
            if not renewed:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(
                            replicas.insert().values(
                                replica=replica, started_at=now, expires_at=now + ttl
                            )
                        )
                except IntegrityError:  # our row came back between the two statements
                    with self.engine.begin() as conn:
                        conn.execute(renew)
            with self.engine.connect() as conn:
                return list(conn.execute(live).scalars())

    def live_replicas(self) -> list[str]:
        row = replicas.c
        query = sa.select(row.replica).where(row.expires_at >= self._now()).order_by(row.replica)
        with self.translated("read the replicas"), self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def leave_replica(self, replica: str) -> None:
        stmt = replicas.delete().where(replicas.c.replica == replica)
        with self.translated("remove the replica"), self.engine.begin() as conn:
            conn.execute(stmt)


def database_now(dialect: str) -> sa.ColumnElement[float]:
    """The database server's current time as POSIX seconds (UTC), as SQL.

    Leases and heartbeats are judged on this one clock, so processes whose own clocks
    disagree still agree on who holds what. PostgreSQL: ``clock_timestamp()`` (it moves
    within a transaction); MySQL/MariaDB: ``UTC_TIMESTAMP(6)``, whatever the session's
    time zone; SQLite: ``julianday('now')`` (milliseconds).
    """
    epoch: sa.ColumnElement[Any]
    if dialect == "postgresql":
        epoch = sa.extract("epoch", sa.func.clock_timestamp())
    elif dialect in ("mysql", "mariadb"):
        epoch = sa.literal_column(
            "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) / 1000000.0"
        )
    else:
        epoch = sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    return sa.cast(epoch, Seconds)


if TYPE_CHECKING:

    def _implements(store: SqlStateStore, staging: SqlStaging) -> tuple[StateStore, Staging]:
        """Let mypy check that the classes satisfy the protocols."""
        return store, staging


__all__ = ["SqlStateStore", "current_revision", "database_now", "upgrade_database"]


def _feed_runs(feed: bool) -> sa.ColumnElement[bool]:
    """The runs of a change feed's targeted syncs (``feed``), or every other run."""
    return runs.c.mode == FEED_MODE if feed else runs.c.mode != FEED_MODE
