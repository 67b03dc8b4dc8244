"""checkout, payment captures, orders, idempotency keys, inbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkouts",
        sa.Column("checkout_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_due_minor", sa.BigInteger(), nullable=False),
        sa.Column(
            "delivery_address",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("payment_intent_id", sa.String(length=64), nullable=True),
        sa.Column("payment_url", sa.Text(), nullable=True),
        sa.Column("payment_attempts", sa.Integer(), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("redemption_ref", sa.String(length=64), nullable=True),
        sa.Column("redemption_points", sa.Integer(), nullable=True),
        sa.Column("redemption_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'awaiting_redemption', 'awaiting_payment', "
            "'completed', 'failed', 'expired')",
            name=op.f("ck_checkouts_status"),
        ),
        sa.CheckConstraint(
            "amount_due_minor >= 0 AND amount_due_minor <= total_minor",
            name=op.f("ck_checkouts_amount_due_range"),
        ),
        sa.CheckConstraint("total_minor > 0", name=op.f("ck_checkouts_total_positive")),
        sa.PrimaryKeyConstraint("checkout_id", name=op.f("pk_checkouts")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_checkouts_payment_intent_id")),
    )
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_checkouts_patient_created", ["patient_id", "created_at"], unique=False
        )

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("operation", sa.String(length=120), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column(
            "response_body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("response_location", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "inbox_messages",
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=120), nullable=False),
        sa.Column("message_type", sa.String(length=80), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "message_id", name=op.f("pk_inbox_messages")),
    )
    op.create_table(
        "checkout_lines",
        sa.Column("checkout_id", sa.Uuid(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("product_name", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("fulfilment_type", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "quantity BETWEEN 1 AND 10", name=op.f("ck_checkout_lines_quantity_range")
        ),
        sa.CheckConstraint(
            "unit_price_minor > 0", name=op.f("ck_checkout_lines_unit_price_positive")
        ),
        sa.ForeignKeyConstraint(
            ["checkout_id"],
            ["checkouts.checkout_id"],
            name=op.f("fk_checkout_lines_checkout_id_checkouts"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.product_id"],
            name=op.f("fk_checkout_lines_product_id_products"),
        ),
        sa.PrimaryKeyConstraint("checkout_id", "line_no", name=op.f("pk_checkout_lines")),
    )
    op.create_table(
        "payment_captures",
        sa.Column("transaction_ref", sa.String(length=64), nullable=False),
        sa.Column("intent_id", sa.String(length=64), nullable=False),
        sa.Column("checkout_id", sa.Uuid(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("method", sa.String(length=24), nullable=False),
        sa.Column("card_scheme", sa.String(length=24), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_captures_amount_positive")),
        sa.ForeignKeyConstraint(
            ["checkout_id"],
            ["checkouts.checkout_id"],
            name=op.f("fk_payment_captures_checkout_id_checkouts"),
        ),
        sa.PrimaryKeyConstraint("transaction_ref", name=op.f("pk_payment_captures")),
        sa.UniqueConstraint("checkout_id", name=op.f("uq_payment_captures_checkout_id")),
        sa.UniqueConstraint("intent_id", name=op.f("uq_payment_captures_intent_id")),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("checkout_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("fulfilment_status", sa.String(length=32), nullable=False),
        sa.Column("refund_status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("captured_minor", sa.BigInteger(), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("payment_ref", sa.String(length=64), nullable=True),
        sa.Column("payment_method", sa.String(length=24), nullable=True),
        sa.Column("redemption_ref", sa.String(length=64), nullable=True),
        sa.Column("pms_invoice_ref", sa.String(length=120), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "fulfilment_status IN ('Created', 'Fulfilment-In-Progress', 'Completed')",
            name=op.f("ck_orders_fulfilment_status"),
        ),
        sa.CheckConstraint(
            "refund_status IN ('none', 'partial', 'full')", name=op.f("ck_orders_refund_status")
        ),
        sa.CheckConstraint(
            "status IN ('Created', 'Fulfilment-In-Progress', 'Completed', 'Refunded')",
            name=op.f("ck_orders_status"),
        ),
        sa.CheckConstraint(
            "captured_minor >= 0 AND captured_minor <= total_minor",
            name=op.f("ck_orders_captured_range"),
        ),
        sa.CheckConstraint(
            "payment_ref IS NOT NULL OR redemption_ref IS NOT NULL", name=op.f("ck_orders_paid")
        ),
        sa.CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= captured_minor",
            name=op.f("ck_orders_refund_not_above_capture"),
        ),
        sa.CheckConstraint("total_minor > 0", name=op.f("ck_orders_total_positive")),
        sa.ForeignKeyConstraint(
            ["checkout_id"], ["checkouts.checkout_id"], name=op.f("fk_orders_checkout_id_checkouts")
        ),
        sa.ForeignKeyConstraint(
            ["payment_ref"],
            ["payment_captures.transaction_ref"],
            name=op.f("fk_orders_payment_ref_payment_captures"),
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
        sa.UniqueConstraint("checkout_id", name=op.f("uq_orders_checkout_id")),
        sa.UniqueConstraint("payment_ref", name=op.f("uq_orders_payment_ref")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orders_patient_created", ["patient_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_orders_practice_created", ["practice_id", "created_at"], unique=False
        )

    op.create_table(
        "order_lines",
        sa.Column("line_item_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("product_name", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("fulfilment_type", sa.String(length=16), nullable=False),
        sa.Column("fulfilment_status", sa.String(length=24), nullable=False),
        sa.Column("fulfilment_ref", sa.String(length=120), nullable=True),
        sa.Column("carrier", sa.String(length=80), nullable=True),
        sa.Column("tracking_number", sa.String(length=120), nullable=True),
        sa.Column("tracking_url", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "fulfilment_status IN ('pending', 'sent_to_supplier', 'dispatched', 'preparing', "
            "'ready_for_collection', 'collected', 'delivered', 'exception')",
            name=op.f("ck_order_lines_fulfilment_status"),
        ),
        sa.CheckConstraint(
            "fulfilment_type IN ('Drop-Ship', 'In-Clinic', 'Digital')",
            name=op.f("ck_order_lines_fulfilment_type"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_lines_quantity_positive")),
        sa.CheckConstraint("unit_price_minor > 0", name=op.f("ck_order_lines_unit_price_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_order_lines_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.product_id"], name=op.f("fk_order_lines_product_id_products")
        ),
        sa.PrimaryKeyConstraint("line_item_id", name=op.f("pk_order_lines")),
    )
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.create_index("ix_order_lines_order", ["order_id", "line_no"], unique=True)
        batch_op.create_index("ix_order_lines_product", ["product_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_order_lines_product")
        batch_op.drop_index("ix_order_lines_order")

    op.drop_table("order_lines")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_practice_created")
        batch_op.drop_index("ix_orders_patient_created")

    op.drop_table("orders")
    op.drop_table("payment_captures")
    op.drop_table("checkout_lines")
    op.drop_table("inbox_messages")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.drop_index("ix_checkouts_patient_created")

    op.drop_table("checkouts")
