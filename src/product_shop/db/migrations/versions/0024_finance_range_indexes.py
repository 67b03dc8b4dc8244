"""finance: the indexes Finance's cross-practice reads walk (orders and refunds by time and id)

`GET /v1/finance/orders` and `/v1/finance/refunds` (`orders/finance.py`) read every practice's
rows in a date range oldest first, a page after a (time, id) cursor. With a practice named,
the (practice_id, time) indexes answer; without one there was none: every page read and sorted
the whole range. (created_at, order_id) and (initiated_at, refund_id) give each page as an index
range that stops after the page.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created_id", ["created_at", "order_id"], unique=False)
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_refunds_initiated_id", ["initiated_at", "refund_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_initiated_id")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_created_id")
