"""What state keeps between runs besides acknowledged products: writes in doubt, and
products absent from recent complete reads.

A write is *in doubt* when the server may have applied it after syncd gave up on it (a
timeout, a dropped connection): it can land after a newer write and undo it. Once the
in-doubt window has passed, the next run re-asserts the product (its state row is marked
unacknowledged, so it is re-sent whole). An *absence* counts the consecutive complete
reads a product was missing from, for ``delete_after_missing_runs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.model import UNACKNOWLEDGED, Acked
from syncd.state.db import ACK_COLUMNS, acked_from_row, chunks, executemany, upsert
from syncd.state.schema import absences, doubts, products


def record_doubts(
    conn: Connection, target: str, entries: Sequence[tuple[str, bytes | None]], until: float
) -> None:
    """Remember (key, payload) as in doubt until ``until`` (a later doubt wins)."""
    rows = [
        (target, key, until, None if payload is None else payload.decode())
        for key, payload in dict(entries).items()
    ]
    stmt = upsert(
        conn,
        doubts,
        ["target", "key"],
        lambda new: {"until": new.until, "payload": new.payload},
    )
    executemany(conn, stmt, ("target", "key", "until", "payload"), rows)


def reassert_doubts(conn: Connection, target: str, now: float) -> int:
    """Mark every product whose doubt is due as unacknowledged, so this run re-sends it.

    A product deleted from state since is put back (from the doubt's payload) as
    unacknowledged: re-deleted if the source still lacks it, re-sent if it has it.
    Returns the number of doubts resolved this way.
    """
    d, p = doubts.c, products.c
    due = conn.execute(sa.select(d.key, d.payload).where(d.target == target, d.until <= now)).all()
    if not due:
        return 0
    keys = [row[0] for row in due]
    present: set[str] = set()
    for chunk in chunks(keys):
        present.update(
            conn.execute(sa.select(p.key).where(p.target == target, p.key.in_(chunk))).scalars()
        )
        conn.execute(
            products.update()
            .where(p.target == target, p.key.in_(chunk))
            .values(hash=UNACKNOWLEDGED, source_hash=None)
        )
    gone = [(target, key, UNACKNOWLEDGED, payload, now, None) for key, payload in due]
    gone = [row for row in gone if row[1] not in present and row[3] is not None]
    if gone:
        executemany(conn, products.insert(), ACK_COLUMNS, gone)
    for chunk in chunks(keys):
        conn.execute(doubts.delete().where(d.target == target, d.key.in_(chunk)))
    return len(due)


def count_doubts(conn: Connection, target: str, now: float) -> tuple[int, int]:
    """(due, waiting): doubts a run would re-assert now, and those still in their window."""
    d = doubts.c
    due = sa.func.sum(sa.case((d.until <= now, 1), else_=0))
    row = conn.execute(
        sa.select(due, sa.func.count()).select_from(doubts).where(d.target == target)
    ).one()
    return int(row[0] or 0), int(row[1] or 0) - int(row[0] or 0)


def read_absences(conn: Connection, target: str) -> dict[str, int]:
    a = absences.c
    rows = conn.execute(sa.select(a.key, a.runs).where(a.target == target)).all()
    return {row[0]: int(row[1]) for row in rows}


def replace_absences(conn: Connection, target: str, missing: Mapping[str, int], now: float) -> None:
    """The target's absences become ``missing`` (key -> consecutive reads missed); a key
    already absent keeps the time it first went missing."""
    a = absences.c
    found = conn.execute(sa.select(a.key, a.since).where(a.target == target)).all()
    since: dict[str, float] = {row[0]: float(row[1]) for row in found}
    conn.execute(absences.delete().where(a.target == target))
    rows = [(target, key, runs, since.get(key, now)) for key, runs in missing.items()]
    executemany(conn, absences.insert(), ("target", "key", "runs", "since"), rows)


def acked_of(conn: Connection, target: str, keys: Sequence[str]) -> list[Acked]:
    """The acknowledged entries of these keys that state holds."""
    p = products.c
    found: list[Acked] = []
    for chunk in chunks(list(dict.fromkeys(keys))):
        query = sa.select(p.key, p.hash, p.payload).where(p.target == target, p.key.in_(chunk))
        found.extend(acked_from_row(row) for row in conn.execute(query))
    return found
