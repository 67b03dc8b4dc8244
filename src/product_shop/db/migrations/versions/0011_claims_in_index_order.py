"""event deliveries: the claim index also holds the outbox position, so a claim walks it in
the order it sorts by and stops after one batch

A claim orders due deliveries by (next_attempt_at, event_position). With the index on
(destination, next_attempt_at) only, PostgreSQL read every due delivery of the destination,
checked each one's queue and sorted them all, for every batch of 50: 14 ms a claim with 3,600
due, growing with the backlog (docs/benchmarks.md, session 7).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def _replace(columns: list[str]) -> None:
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_event_deliveries_next", postgresql_where=PENDING, sqlite_where=PENDING
        )
        batch_op.create_index(
            "ix_event_deliveries_next",
            columns,
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )


def upgrade() -> None:
    _replace(["destination", "next_attempt_at", "event_position"])


def downgrade() -> None:
    _replace(["destination", "next_attempt_at"])
