"""orders must name a recorded capture; indexes for the bounded reads of issue 8

The check `paid` accepted `payment_ref IS NOT NULL OR redemption_ref IS NOT NULL`, so an order
with no capture, nothing captured and any redemption string was accepted by the database. Until
points settlements exist as rows of their own (the rewards issue admits them by foreign key), an
order is paid only by a capture: `payment_ref` is required, and its foreign key to
`payment_captures` makes it a capture that was recorded.

When a product stops being purchasable, the open checkouts that hold it are failed and their
payment intents cancelled: `ix_checkout_lines_product` finds them without a scan. The catalogue
is read in keyset pages in display order (`ix_products_display_order`), and a deprecation names
the active orders holding a product in order-id batches (`ix_order_lines_product_order`, which
replaces the index on product alone).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_paid"), type_="check")
        batch_op.create_check_constraint("paid", "payment_ref IS NOT NULL")
    with op.batch_alter_table("checkout_lines", schema=None) as batch_op:
        batch_op.create_index("ix_checkout_lines_product", ["product_id"], unique=False)
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index(
            "ix_products_display_order", ["category", "name", "product_id"], unique=False
        )
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_order_lines_product")
        batch_op.create_index(
            "ix_order_lines_product_order", ["product_id", "order_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_order_lines_product_order")
        batch_op.create_index("ix_order_lines_product", ["product_id"], unique=False)
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index("ix_products_display_order")
    with op.batch_alter_table("checkout_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_checkout_lines_product")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_paid"), type_="check")
        batch_op.create_check_constraint(
            "paid", "payment_ref IS NOT NULL OR redemption_ref IS NOT NULL"
        )
