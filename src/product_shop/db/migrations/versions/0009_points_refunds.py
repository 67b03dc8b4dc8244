"""points refunds: an order paid wholly with points is refunded by asking Rewards Manager for
the points back (a refund of kind `points`, no money, its points recorded; the order's
`points_returned` carries the Refunded overlay)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT_OR_POINTS = "amount_minor > 0 OR (kind = 'points' AND amount_minor = 0 AND points > 0)"
SUCCEEDED_RECORDED = (
    "status <> 'succeeded' OR (completed_at IS NOT NULL AND "
    "(provider_refund_ref IS NOT NULL OR kind = 'points'))"
)
OLD_SUCCEEDED = (
    "status <> 'succeeded' OR (provider_refund_ref IS NOT NULL AND completed_at IS NOT NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("points_returned", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("points", sa.Integer(), nullable=True))
        batch_op.drop_constraint(op.f("ck_refunds_amount_positive"), type_="check")
        batch_op.drop_constraint(op.f("ck_refunds_succeeded_has_reference"), type_="check")
        batch_op.drop_constraint(op.f("ck_refunds_kind"), type_="check")
        batch_op.create_check_constraint("amount_or_points", AMOUNT_OR_POINTS)
        batch_op.create_check_constraint("succeeded_recorded", SUCCEEDED_RECORDED)
        batch_op.create_check_constraint("kind", "kind IN ('amount', 'lines', 'balance', 'points')")


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_refunds_kind"), type_="check")
        batch_op.drop_constraint(op.f("ck_refunds_succeeded_recorded"), type_="check")
        batch_op.drop_constraint(op.f("ck_refunds_amount_or_points"), type_="check")
        batch_op.create_check_constraint("kind", "kind IN ('amount', 'lines', 'balance')")
        batch_op.create_check_constraint("succeeded_has_reference", OLD_SUCCEEDED)
        batch_op.create_check_constraint("amount_positive", "amount_minor > 0")
        batch_op.drop_column("points")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("points_returned")
