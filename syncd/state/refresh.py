"""The rolling refresh in state: which products a run re-asserts, and marking them.

Each run re-sends whole the ``count x elapsed / period`` products whose last
acknowledgement is oldest (elapsed: since the target's last completed run started,
capped at the period), and at least those that would pass the period by more than half
a run's spacing before the next run: every product is re-sent within the period, at a
cost per run proportional to the time between runs. A chosen row's hash becomes a
``refresh_marker`` (its fingerprint cleared, so its source row is parsed again).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.model import RefreshSlice, refresh_marker, refresh_slice_size
from syncd.state.db import READ_BATCH, executemany
from syncd.state.schema import products, runs

COMPLETED = ("ok", "partial", "incomplete", "blocked")
"""Outcomes of a run that sent what it planned (or what its budget let it): the next
slice is measured from its start. A failed run sent nothing, so the next one catches up."""
_DIGEST_BYTES = 16
"""The length of a real payload hash: a row already unacknowledged or marked is left as is
(it is re-sent anyway) but counts toward the slice."""


def last_completed_start(conn: Connection, target: str) -> float | None:
    """When the target's last completed run (not a resend) started, POSIX seconds."""
    r = runs.c
    query = sa.select(sa.func.max(r.started_at)).where(
        r.target == target,
        r.finished_at.is_not(None),
        r.outcome.in_(COMPLETED),
        r.mode.in_(("incremental", "full")),
    )
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else float(value)


def refresh_due(conn: Connection, target: str, now: float, period_s: float) -> RefreshSlice:
    """The slice a run starting at ``now`` re-asserts, from read-only queries."""
    p = products.c
    count = int(conn.execute(sa.select(sa.func.count()).where(p.target == target)).scalar_one())
    started = last_completed_start(conn, target)
    elapsed = None if started is None else max(now - started, 0.0)
    if elapsed is None:
        return RefreshSlice(0, count, period_s, elapsed)
    # due: products that would be more than half a run's spacing past the period at
    # the next run (so runs too frequent for the share to reach one product still re-send
    # each in time, give or take half their spacing)
    threshold = now - period_s + min(elapsed, period_s) / 2
    due = conn.execute(
        sa.select(sa.func.count()).where(p.target == target, p.acked_at <= threshold)
    ).scalar_one()
    size = refresh_slice_size(count, elapsed, period_s, int(due))
    if size == 0:
        return RefreshSlice(0, count, period_s, elapsed)
    oldest_first = sa.select(p.acked_at).where(p.target == target).order_by(p.acked_at, p.key)
    oldest = float(conn.execute(oldest_first.limit(1)).scalar_one())
    newest = float(conn.execute(oldest_first.offset(size - 1).limit(1)).scalar_one())
    return RefreshSlice(size, count, period_s, elapsed, now - oldest, now - newest)


def mark_refresh_due(conn: Connection, target: str, now: float, period_s: float) -> RefreshSlice:
    """Mark the slice's products for re-sending whole (hash: a ``refresh_marker`` of each
    one's age; fingerprint cleared) and return the slice."""
    found = refresh_due(conn, target, now, period_s)
    p = products.c
    query = (
        sa.select(p.key, p.hash, p.acked_at).where(p.target == target).order_by(p.acked_at, p.key)
    )
    mark = (
        products.update()
        .where(p.target == sa.bindparam("b_target"), p.key == sa.bindparam("b_key"))
        .values(hash=sa.bindparam("b_hash"), source_hash=sa.null())
    )
    left = found.size
    after: tuple[float, str] | None = None
    while left > 0:  # keyset pages in (acked_at, key) order, which marking leaves alone
        page = query
        if after is not None:
            page = page.where(
                sa.or_(p.acked_at > after[0], sa.and_(p.acked_at == after[0], p.key > after[1]))
            )
        batch: list[tuple[str, bytes, float]] = [
            (str(row[0]), bytes(row[1]), float(row[2]))
            for row in conn.execute(page.limit(min(left, READ_BATCH)))
        ]
        if not batch:
            break
        rows = [
            (target, key, refresh_marker(now - acked_at))
            for key, hash_, acked_at in batch
            if len(hash_) == _DIGEST_BYTES
        ]
        executemany(conn, mark, ("b_target", "b_key", "b_hash"), rows)
        left -= len(batch)
        after = (batch[-1][2], batch[-1][0])
    return found
