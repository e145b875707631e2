"""The initial state schema: products, runs, rejections, leases.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = sa.String(512).with_variant(postgresql.VARCHAR(512, collation="C"), "postgresql")
HASH = sa.LargeBinary(16).with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
JSON_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _table_options() -> dict[str, Any]:
    """utf8mb4 with a binary, no-pad collation on MySQL/MariaDB; nothing elsewhere."""
    dialect = op.get_bind().dialect
    if dialect.name not in ("mysql", "mariadb"):
        return {}
    collation = "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"
    return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": collation}


def upgrade() -> None:
    options = _table_options()
    op.create_table(
        "products",
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("hash", HASH, nullable=False),
        sa.Column("payload", JSON_TEXT, nullable=False),
        sa.Column("acked_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("target", "key", name="pk_products"),
        **options,
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("mode_reason", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("source_count", sa.Integer(), nullable=True),
        sa.Column("source_complete", sa.Boolean(), nullable=False),
        sa.Column("drift", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        **options,
    )
    op.create_index("ix_runs_target_id", "runs", ["target", "id"])
    op.create_table(
        "rejections",
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("hash", HASH, nullable=True),
        sa.Column("by_target", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("target", "key", name="pk_rejections"),
        **options,
    )
    op.create_table(
        "leases",
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_leases"),
        **options,
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("rejections")
    op.drop_index("ix_runs_target_id", table_name="runs")
    op.drop_table("runs")
    op.drop_table("products")
