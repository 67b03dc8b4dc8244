"""retention: orders remember when their personal data was erased (`orders/retention.py`), and
an index on the orders still holding it, by order time, for the retention job to find those
past the retention period

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from product_shop.db.base import UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HELD = sa.text("personal_data_erased_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("personal_data_erased_at", UTCDateTime(), nullable=True))
        batch_op.create_index(
            "ix_orders_retention_due",
            ["created_at"],
            unique=False,
            postgresql_where=HELD,
            sqlite_where=HELD,
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_retention_due", postgresql_where=HELD, sqlite_where=HELD)
        batch_op.drop_column("personal_data_erased_at")
