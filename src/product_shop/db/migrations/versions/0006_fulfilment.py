"""fulfilment: per-line dates, exceptions and supplier sequence; voucher codes (hash + last four);
the patient's first name on the checkout (for the practice's collection task)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import product_shop.db.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REASONS = (
    "exception_reason IN ('out_of_stock', 'address_problem', 'lost', 'damaged', 'other', "
    "'supplier_unavailable', 'supplier_refused')"
)


def upgrade() -> None:
    utc = product_shop.db.base.UTCDateTime()
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", utc, nullable=True))
        batch_op.add_column(sa.Column("delivered_at", utc, nullable=True))
        batch_op.add_column(sa.Column("collected_at", utc, nullable=True))
        batch_op.add_column(sa.Column("exception_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("exception_since", utc, nullable=True))
        batch_op.add_column(sa.Column("exception_resolution", sa.String(length=24), nullable=True))
        batch_op.add_column(
            sa.Column("supplier_sequence", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("shipment_attempt", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.create_index(
            "ix_order_lines_fulfilment_status", ["fulfilment_status"], unique=False
        )
        batch_op.create_check_constraint("exception_reason", REASONS)
        batch_op.create_check_constraint("supplier_sequence", "supplier_sequence >= 0")
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_first_name", sa.String(length=80), nullable=True))
    op.create_table(
        "vouchers",
        sa.Column("voucher_id", sa.Uuid(), nullable=False),
        sa.Column("line_item_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("unit_no", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("last_four", sa.String(length=4), nullable=False),
        sa.Column("issued_at", product_shop.db.base.UTCDateTime(), nullable=False),
        sa.CheckConstraint("unit_no > 0", name=op.f("ck_vouchers_unit_no_positive")),
        sa.ForeignKeyConstraint(
            ["line_item_id"],
            ["order_lines.line_item_id"],
            name=op.f("fk_vouchers_line_item_id_order_lines"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_vouchers_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("voucher_id", name=op.f("pk_vouchers")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_vouchers_code_hash")),
    )
    op.create_index("ix_vouchers_line_unit", "vouchers", ["line_item_id", "unit_no"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.drop_column("patient_first_name")
    op.drop_index("ix_vouchers_line_unit", table_name="vouchers")
    op.drop_table("vouchers")
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_order_lines_supplier_sequence"), type_="check")
        batch_op.drop_constraint(op.f("ck_order_lines_exception_reason"), type_="check")
        batch_op.drop_index("ix_order_lines_fulfilment_status")
        for column in (
            "shipment_attempt",
            "supplier_sequence",
            "exception_resolution",
            "exception_since",
            "exception_reason",
            "collected_at",
            "delivered_at",
            "dispatched_at",
        ):
            batch_op.drop_column(column)
