"""The outbox: events written in the same transaction as the change they announce."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, BigIntKey, JSONDoc, UTCDateTime


class OutboxEvent(Base):
    __tablename__ = "outbox_events"
    __table_args__ = (
        # What the relay claims: pending events of one type (a sink), oldest first. Partial, so
        # delivered events and events still waiting for a sink of their own never slow it.
        Index(
            "ix_outbox_events_due",
            "event_type",
            "position",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_events_aggregate", "aggregate_type", "aggregate_id", "position"),
    )

    # Commit order within the outbox; delivery is in order per aggregate.
    position: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    event_type: Mapped[str] = mapped_column(String(120))
    source: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(120))
    aggregate_type: Mapped[str] = mapped_column(String(40))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
