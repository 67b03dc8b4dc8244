"""event deliveries: one row per event and destination, each attempt recorded; feed cursors
(how far the audit log has been sent to Audit & Compliance)

The relay now routes every committed outbox event to its destinations (a delivery row each) and
delivers per destination, so a slow receiver holds back only its own events. The outbox keeps
the events; its status says whether an event has been routed (`pending` -> `routed`), and its
partial index now finds the unrouted ones in outbox order.

Existing rows: events already `delivered` become `routed` (their one sink had them); `pending`
and `parked` events stay or become `pending`, so the relay routes them to every destination.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from product_shop.db.base import BigIntKey, UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
PARKED = sa.text("status = 'parked'")


def upgrade() -> None:
    op.create_table(
        "event_deliveries",
        sa.Column("delivery_id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("event_position", sa.BigInteger(), nullable=False),
        sa.Column("destination", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=120), nullable=False),
        sa.Column("aggregate_type", sa.String(length=40), nullable=False),
        sa.Column("aggregate_id", sa.String(length=64), nullable=False),
        sa.Column("aggregate_key", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("parked_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'parked')",
            name=op.f("ck_event_deliveries_status_known"),
        ),
        sa.CheckConstraint(
            "(status = 'delivered') = (delivered_at IS NOT NULL)",
            name=op.f("ck_event_deliveries_delivered_when"),
        ),
        sa.ForeignKeyConstraint(
            ["event_position"],
            ["outbox_events.position"],
            name=op.f("fk_event_deliveries_event_position_outbox_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_event_deliveries")),
        sa.UniqueConstraint(
            "event_position",
            "destination",
            name=op.f("uq_event_deliveries_event_position_destination"),
        ),
    )
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_event_deliveries_next",
            ["destination", "next_attempt_at"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
        batch_op.create_index(
            "ix_event_deliveries_aggregate",
            ["aggregate_key", "event_position"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
        batch_op.create_index(
            "ix_event_deliveries_parked",
            ["destination", "event_position"],
            unique=False,
            postgresql_where=PARKED,
            sqlite_where=PARKED,
        )
    op.create_table(
        "delivery_attempts",
        sa.Column("attempt_id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("attempted_at", UTCDateTime(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('delivered', 'failed', 'parked')",
            name=op.f("ck_delivery_attempts_outcome_known"),
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["event_deliveries.delivery_id"],
            name=op.f("fk_delivery_attempts_delivery_id_event_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_delivery_attempts")),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_attempts_delivery", ["delivery_id", "attempt_id"], unique=False
        )
    op.create_table(
        "feed_cursors",
        sa.Column("feed", sa.String(length=40), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("gap_position", sa.BigInteger(), nullable=True),
        sa.Column("gap_seen_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("feed", name=op.f("pk_feed_cursors")),
    )
    op.execute("UPDATE outbox_events SET status = 'routed' WHERE status = 'delivered'")
    op.execute("UPDATE outbox_events SET status = 'pending' WHERE status = 'parked'")
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_events_due", postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.create_index(
            "ix_outbox_events_unrouted",
            ["position"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_events_unrouted", postgresql_where=PENDING, sqlite_where=PENDING
        )
        batch_op.create_index(
            "ix_outbox_events_due",
            ["event_type", "position"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
    op.execute("UPDATE outbox_events SET status = 'delivered' WHERE status = 'routed'")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_attempts_delivery")
    op.drop_table("delivery_attempts")
    op.drop_table("feed_cursors")
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_event_deliveries_parked", postgresql_where=PARKED, sqlite_where=PARKED
        )
        batch_op.drop_index(
            "ix_event_deliveries_aggregate", postgresql_where=PENDING, sqlite_where=PENDING
        )
        batch_op.drop_index(
            "ix_event_deliveries_next", postgresql_where=PENDING, sqlite_where=PENDING
        )
    op.drop_table("event_deliveries")
