"""refunds: refunds and their lines, payment exceptions, cancellation requests; refund amounts in
flight on orders and lines (checked against the capture), the `cancelled` line state, voucher
redemption and voiding

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Payment exceptions recorded before this revision (audit action `payment.orphaned_capture`) are
not copied into the new table: before it, none existed outside development databases.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import product_shop.db.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_LINE_STATES = (
    "'pending', 'sent_to_supplier', 'dispatched', 'preparing', 'ready_for_collection', "
    "'collected', 'delivered', 'exception'"
)
LINE_STATES = OLD_LINE_STATES + ", 'cancelled'"


def upgrade() -> None:
    op.create_table(
        "payment_exceptions",
        sa.Column("exception_id", sa.Uuid(), nullable=False),
        sa.Column("checkout_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("intent_id", sa.String(length=64), nullable=False),
        sa.Column("payment_ref", sa.String(length=64), nullable=False),
        sa.Column("payment_method", sa.String(length=24), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("expected_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("recorded_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("refund_pending_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_exceptions_amount_positive")),
        sa.CheckConstraint(
            "refunded_minor >= 0 AND refund_pending_minor >= 0 "
            "AND refunded_minor + refund_pending_minor <= amount_minor",
            name=op.f("ck_payment_exceptions_refund_within_capture"),
        ),
        sa.ForeignKeyConstraint(
            ["checkout_id"],
            ["checkouts.checkout_id"],
            name=op.f("fk_payment_exceptions_checkout_id_checkouts"),
        ),
        sa.PrimaryKeyConstraint("exception_id", name=op.f("pk_payment_exceptions")),
        sa.UniqueConstraint("intent_id", name=op.f("uq_payment_exceptions_intent_id")),
        sa.UniqueConstraint("payment_ref", name=op.f("uq_payment_exceptions_payment_ref")),
    )
    with op.batch_alter_table("payment_exceptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_exceptions_practice_recorded", ["practice_id", "recorded_at"], unique=False
        )

    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("payment_exception_id", sa.Uuid(), nullable=True),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("payment_ref", sa.String(length=64), nullable=False),
        sa.Column("payment_method", sa.String(length=24), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("initiated_by", sa.String(length=64), nullable=False),
        sa.Column("initiated_by_name", sa.String(length=200), nullable=True),
        sa.Column("initiated_by_role", sa.String(length=32), nullable=False),
        sa.Column("initiated_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("mfa_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("provider_refund_ref", sa.String(length=64), nullable=True),
        sa.Column("completed_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("audit_entry_id", sa.Uuid(), nullable=True),
        sa.Column("audit_entry_hash", sa.String(length=64), nullable=True),
        sa.CheckConstraint("kind IN ('amount', 'lines', 'balance')", name=op.f("ck_refunds_kind")),
        sa.CheckConstraint(
            "status <> 'succeeded' "
            "OR (provider_refund_ref IS NOT NULL AND completed_at IS NOT NULL)",
            name=op.f("ck_refunds_succeeded_has_reference"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_refunds_status")
        ),
        sa.CheckConstraint(
            "(order_id IS NULL) <> (payment_exception_id IS NULL)",
            name=op.f("ck_refunds_one_subject"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_refunds_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["payment_exception_id"],
            ["payment_exceptions.exception_id"],
            name=op.f("fk_refunds_payment_exception_id_payment_exceptions"),
        ),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("provider_refund_ref", name=op.f("uq_refunds_provider_refund_ref")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_order", ["order_id"], unique=False)
        batch_op.create_index(
            "ix_refunds_practice_initiated", ["practice_id", "initiated_at"], unique=False
        )
        batch_op.create_index(
            "ix_refunds_status_initiated", ["status", "initiated_at"], unique=False
        )

    op.create_table(
        "cancellation_requests",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "lines",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("requested_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refund_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'refunded', 'closed')", name=op.f("ck_cancellation_requests_status")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_cancellation_requests_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"],
            ["refunds.refund_id"],
            name=op.f("fk_cancellation_requests_refund_id_refunds"),
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_cancellation_requests")),
    )
    with op.batch_alter_table("cancellation_requests", schema=None) as batch_op:
        batch_op.create_index("ix_cancellation_requests_order", ["order_id"], unique=False)
        batch_op.create_index(
            "ix_cancellation_requests_practice_status",
            ["practice_id", "status", "requested_at"],
            unique=False,
        )

    op.create_table(
        "refund_lines",
        sa.Column("refund_id", sa.Uuid(), nullable=False),
        sa.Column("line_item_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_minor >= 0", name=op.f("ck_refund_lines_amount_not_negative")),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_refund_lines_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["line_item_id"],
            ["order_lines.line_item_id"],
            name=op.f("fk_refund_lines_line_item_id_order_lines"),
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.refund_id"], name=op.f("fk_refund_lines_refund_id_refunds")
        ),
        sa.PrimaryKeyConstraint("refund_id", "line_item_id", name=op.f("pk_refund_lines")),
    )
    with op.batch_alter_table("refund_lines", schema=None) as batch_op:
        batch_op.create_index("ix_refund_lines_line", ["line_item_id"], unique=False)

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refunded_quantity", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("refund_pending_quantity", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("cancellation", sa.String(length=16), nullable=True))
        batch_op.drop_constraint(op.f("ck_order_lines_fulfilment_status"), type_="check")
        batch_op.create_check_constraint(
            "fulfilment_status", f"fulfilment_status IN ({LINE_STATES})"
        )
        batch_op.create_check_constraint(
            "refund_quantity_range",
            "refunded_quantity >= 0 AND refund_pending_quantity >= 0 "
            "AND refunded_quantity + refund_pending_quantity <= quantity",
        )
        batch_op.create_check_constraint("cancellation", "cancellation IN ('requested', 'refused')")

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refund_pending_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.create_check_constraint(
            "refund_within_capture",
            "refund_pending_minor >= 0 AND refunded_minor + refund_pending_minor <= captured_minor",
        )

    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("redeemed_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("voided_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.drop_column("voided_at")
        batch_op.drop_column("redeemed_at")

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_refund_within_capture"), type_="check")
        batch_op.drop_column("refund_pending_minor")

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_order_lines_cancellation"), type_="check")
        batch_op.drop_constraint(op.f("ck_order_lines_refund_quantity_range"), type_="check")
        batch_op.drop_constraint(op.f("ck_order_lines_fulfilment_status"), type_="check")
        batch_op.create_check_constraint(
            "fulfilment_status", f"fulfilment_status IN ({OLD_LINE_STATES})"
        )
        batch_op.drop_column("cancellation")
        batch_op.drop_column("refund_pending_quantity")
        batch_op.drop_column("refunded_quantity")

    with op.batch_alter_table("refund_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_refund_lines_line")

    op.drop_table("refund_lines")
    with op.batch_alter_table("cancellation_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_cancellation_requests_practice_status")
        batch_op.drop_index("ix_cancellation_requests_order")

    op.drop_table("cancellation_requests")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_status_initiated")
        batch_op.drop_index("ix_refunds_practice_initiated")
        batch_op.drop_index("ix_refunds_order")

    op.drop_table("refunds")
    with op.batch_alter_table("payment_exceptions", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_exceptions_practice_recorded")

    op.drop_table("payment_exceptions")
