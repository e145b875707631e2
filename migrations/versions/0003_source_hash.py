"""Products remember the fingerprint of the raw source row they were mapped from.

A run skips parsing and mapping a source row whose fingerprint (its raw bytes and the
target's config) equals a product's ``source_hash``: that product is unchanged.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")


def upgrade() -> None:
    op.add_column("products", sa.Column("source_hash", HASH, nullable=True))
    op.create_index(
        "ix_products_target_source_hash_key", "products", ["target", "source_hash", "key"]
    )


def downgrade() -> None:
    op.drop_index("ix_products_target_source_hash_key", table_name="products")
    op.drop_column("products", "source_hash")
