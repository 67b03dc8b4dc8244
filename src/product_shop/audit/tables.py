"""The audit log table. One row per governed action; rows are never updated or deleted."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, BigIntKey, JSONDoc, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (
        UniqueConstraint("stream_type", "stream_id", "stream_seq"),
        Index("ix_audit_entries_practice_recorded", "practice_id", "recorded_at"),
    )

    # Global insertion order, for export and checkpoints.
    position: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    stream_type: Mapped[str] = mapped_column(String(40))
    stream_id: Mapped[str] = mapped_column(String(64))
    stream_seq: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_role: Mapped[str] = mapped_column(String(32))
    actor_name: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(80))
    practice_id: Mapped[uuid.UUID | None] = mapped_column()
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
