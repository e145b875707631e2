"""Products are found by the age of their last acknowledgement: the rolling refresh
re-asserts, each run, those acknowledged longest ago.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-10
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_products_target_acked_at_key", "products", ["target", "acked_at", "key"])


def downgrade() -> None:
    op.drop_index("ix_products_target_acked_at_key", table_name="products")
