"""checkouts: the return URL kept for every payment intent of a checkout

A checkout started with a `return_url` (where Integrated Payments' hosted page sends the patient
back to) passed it only to its first payment intent: a retry after a failed payment, or the
intent opened once Rewards Manager confirmed a points redemption, had none, and the patient was
left on the payment page. The URL is now stored on the checkout and given to each intent.
Existing checkouts have none (NULL), as before.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("return_url", sa.Text(), nullable=True))


def downgrade() -> None:
    # In place on both engines (SQLite 3.35+): a batch copy of `checkouts` would drop the table
    # that checkout lines, captures and redemptions reference.
    op.execute("ALTER TABLE checkouts DROP COLUMN return_url")
