"""Writes in doubt and products absent from recent reads.

``doubts``: products whose write the server may have applied after syncd gave up on
it (a timeout, a dropped connection): re-asserted once the in-doubt window passes.
``absences``: products missing from consecutive complete reads, deleted only after
``delete_after_missing_runs`` of them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = sa.String(512).with_variant(postgresql.VARCHAR(512, collation="C"), "postgresql")
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
        "doubts",
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("until", sa.Double(), nullable=False),
        sa.Column("payload", JSON_TEXT, nullable=True),
        sa.PrimaryKeyConstraint("target", "key", name="pk_doubts"),
        **options,
    )
    op.create_table(
        "absences",
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("target", "key", name="pk_absences"),
        **options,
    )


def downgrade() -> None:
    op.drop_table("absences")
    op.drop_table("doubts")
