"""The outbox (events written in the same transaction as the change they announce) and their
deliveries: one row per event and destination, with every attempt recorded."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, BigIntKey, UTCDateTime
from product_shop.db.encrypted import EncryptedJSON

DELIVERY_STATUSES = ("pending", "delivered", "parked")


class OutboxEvent(Base):
    __tablename__ = "outbox_events"
    __table_args__ = (
        # What the relay routes: events not yet given a delivery per destination, oldest first.
        # Partial, so routed events never slow it.
        Index(
            "ix_outbox_events_unrouted",
            "position",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_events_aggregate", "aggregate_type", "aggregate_id", "position"),
    )

    # Commit order within the outbox; delivery is in order per aggregate and destination.
    position: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    event_type: Mapped[str] = mapped_column(String(120))
    source: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(120))
    aggregate_type: Mapped[str] = mapped_column(String(40))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("outbox_events.data"))
    # `pending` until the relay has given it one delivery per destination (`routed`).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when it was routed
    last_error: Mapped[str | None] = mapped_column(Text)


class EventDelivery(Base):
    """One event on its way to one destination. Delivered in order per aggregate and
    destination; a claim leases it (`next_attempt_at` moves past the lease and `claims` grows),
    so two relays never send it at the same time and a relay that dies gives it back."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("event_position", "destination"),
        CheckConstraint("status IN ('pending', 'delivered', 'parked')", name="status_known"),
        CheckConstraint(
            "(status = 'delivered') = (delivered_at IS NOT NULL)", name="delivered_when"
        ),
        # What a destination's relay claims: its pending deliveries that are due, longest due
        # first, in the claim's own order, so it stops after one batch (those waiting to retry,
        # or behind an earlier event, are not read).
        Index(
            "ix_event_deliveries_next",
            "destination",
            "next_attempt_at",
            "event_position",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # The per-aggregate order: is an earlier event of this aggregate still on its way here?
        # On one key column, so it is the only index that can answer (a planner misjudging a
        # young table cannot pick another one).
        Index(
            "ix_event_deliveries_aggregate",
            "aggregate_key",
            "event_position",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_event_deliveries_parked",
            "destination",
            "event_position",
            postgresql_where=text("status = 'parked'"),
            sqlite_where=text("status = 'parked'"),
        ),
    )

    delivery_id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    event_position: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbox_events.position", ondelete="CASCADE")
    )
    destination: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(120))
    aggregate_type: Mapped[str] = mapped_column(String(40))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    # destination|aggregate_type|aggregate_id: the queue this delivery is ordered in.
    aggregate_key: Mapped[str] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    parked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    """One try of a delivery: when, how long, what the destination answered."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        Index("ix_delivery_attempts_delivery", "delivery_id", "attempt_id"),
        CheckConstraint("outcome IN ('delivered', 'failed', 'parked')", name="outcome_known"),
    )

    attempt_id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("event_deliveries.delivery_id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    latency_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class FeedCursor(Base):
    """How far a feed read from a log has been delivered (the audit log to Audit & Compliance):
    the last position delivered, the lease of the run being sent (`claims`, `next_attempt_at`),
    and a gap in the log's positions first seen when (a transaction not yet committed, or one
    rolled back)."""

    __tablename__ = "feed_cursors"

    feed: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gap_position: Mapped[int | None] = mapped_column(BigInteger)
    gap_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
