"""points redemptions: Rewards Manager redemptions per checkout; orders record the points' money
value and, when points paid the whole order, the settlement reference (constraint `paid` accepts
it instead of a capture only then; `paid_in_full`: captured plus redeemed is the total)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import product_shop.db.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAID = (
    "payment_ref IS NOT NULL OR (settlement_ref IS NOT NULL AND captured_minor = 0 "
    "AND redeemed_minor = total_minor)"
)


def upgrade() -> None:
    op.create_table(
        "points_redemptions",
        sa.Column("redemption_ref", sa.String(length=64), nullable=False),
        sa.Column("checkout_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("practice_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("settlement_ref", sa.String(length=64), nullable=True),
        sa.Column("requested_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "reversal_requested_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("reversed_at", product_shop.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status = 'requested' OR settlement_ref IS NOT NULL",
            name=op.f("ck_points_redemptions_confirmed_has_settlement"),
        ),
        sa.CheckConstraint(
            "status IN ('requested', 'confirmed', 'reversal_requested', 'reversed')",
            name=op.f("ck_points_redemptions_status"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_points_redemptions_amount_positive")),
        sa.CheckConstraint("points > 0", name=op.f("ck_points_redemptions_points_positive")),
        sa.ForeignKeyConstraint(
            ["checkout_id"],
            ["checkouts.checkout_id"],
            name=op.f("fk_points_redemptions_checkout_id_checkouts"),
        ),
        sa.PrimaryKeyConstraint("redemption_ref", name=op.f("pk_points_redemptions")),
        sa.UniqueConstraint("checkout_id", name=op.f("uq_points_redemptions_checkout_id")),
        sa.UniqueConstraint("settlement_ref", name=op.f("uq_points_redemptions_settlement_ref")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("redeemed_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("settlement_ref", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_orders_settlement_ref"), ["settlement_ref"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_orders_settlement_ref_points_redemptions"),
            "points_redemptions",
            ["settlement_ref"],
            ["settlement_ref"],
        )
        batch_op.drop_constraint(op.f("ck_orders_paid"), type_="check")
        batch_op.create_check_constraint("paid", PAID)
        batch_op.create_check_constraint(
            "paid_in_full", "captured_minor + redeemed_minor = total_minor"
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_paid_in_full"), type_="check")
        batch_op.drop_constraint(op.f("ck_orders_paid"), type_="check")
        batch_op.create_check_constraint("paid", "payment_ref IS NOT NULL")
        batch_op.drop_constraint(
            batch_op.f("fk_orders_settlement_ref_points_redemptions"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("uq_orders_settlement_ref"), type_="unique")
        batch_op.drop_column("settlement_ref")
        batch_op.drop_column("redeemed_minor")

    op.drop_table("points_redemptions")
