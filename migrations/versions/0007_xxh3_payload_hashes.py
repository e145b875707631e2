"""Payload hashes are XXH3-128, not BLAKE2b-128: the stored ones are rewritten.

A product's ``hash`` is the digest of its acknowledged canonical payload, which the row
keeps (``payload``, exactly the bytes that were hashed, as UTF-8 text). Where the stored
hash is the BLAKE2b-128 of that payload it becomes its XXH3-128, so an unchanged catalog
is not re-pushed. Every other row is left as it is: the markers (``UNACKNOWLEDGED``,
``SEEN_ONLY``, a rolling refresh's 9 bytes) and a hash that does not match its payload,
which then still matches nothing and its product is re-sent. ``rejections.hash`` has no
payload to rehash: a product held as refused by its target is sent once more.

The hash functions are written out here, not imported from syncd: syncd's may change
again, this migration's must not. Rows are read a page at a time by primary key and
updated a batch per statement, so memory stays flat however big the state is.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-12
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import cast

import sqlalchemy as sa
import xxhash
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAGE = 2000
"""Rows read, and at most updated, per statement."""

products = sa.table(
    "products",
    sa.column("target", sa.String()),
    sa.column("key", sa.String()),
    sa.column("hash", sa.LargeBinary()),
    sa.column("payload", sa.Text()),
)


def blake2b_128(payload: bytes) -> bytes:
    """The payload hash up to revision 0006."""
    return hashlib.blake2b(payload, digest_size=16).digest()


def xxh3_128(payload: bytes) -> bytes:
    """The payload hash from revision 0007."""
    return xxhash.xxh3_128_digest(payload)


def rehash(old: Callable[[bytes], bytes], new: Callable[[bytes], bytes]) -> int:
    """Give every product whose hash is ``old`` of its payload the ``new`` hash of it;
    return how many were rewritten."""
    if op.get_context().as_sql:
        raise RuntimeError(
            "migration 0007 rehashes the stored payloads: it needs a database connection, "
            "it can't be written out as an SQL script (--sql)"
        )
    conn = op.get_bind()
    p = products.c
    targets: list[str] = list(
        conn.execute(sa.select(p.target).distinct().order_by(p.target)).scalars()
    )
    # plain text, its parameters untyped: the drivers take bytes as they are, and
    # SQLAlchemy's per-row processing of typed ones was a third of the migration's time
    key = conn.dialect.identifier_preparer.quote("key")  # a reserved word on MySQL
    update = sa.text(
        f"UPDATE products SET hash = :new WHERE target = :target AND {key} = :key AND hash = :old"
    )
    rewritten = 0
    for target in targets:
        # a target's rows a page at a time, by key (the primary key's order: a seek each)
        page = (
            sa.select(p.key, p.hash, p.payload)
            .where(p.target == target, sa.func.length(p.hash) == 16)
            .order_by(p.key)
            .limit(PAGE)
        )
        last: str | None = None
        while True:
            rows = cast(
                "list[tuple[str, bytes, str]]",
                conn.execute(page if last is None else page.where(p.key > last)).all(),
            )
            batch = []
            for product, stored, payload in rows:
                text = payload.encode("utf-8")
                if bytes(stored) == old(text):
                    batch.append(
                        {"target": target, "key": product, "old": bytes(stored), "new": new(text)}
                    )
            if batch:
                conn.execute(update, batch)
                rewritten += len(batch)
            if len(rows) < PAGE:
                break
            last = rows[-1][0]
    return rewritten


def upgrade() -> None:
    rehash(blake2b_128, xxh3_128)


def downgrade() -> None:
    rehash(xxh3_128, blake2b_128)
