"""The audit log tables: one row per governed action, and the checkpoints over them. Rows are
never updated or deleted (database triggers refuse it: migration 0012)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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


class AuditCheckpoint(Base):
    """A Merkle root over every stream's head at one moment (`audit/checkpoints.py`), chained to
    the checkpoint before it: removing or cutting short a whole stream changes the root."""

    __tablename__ = "audit_checkpoints"

    # 1, 2, 3...: the chain's order (one checkpointer at a time).
    checkpoint_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    streams: Mapped[int] = mapped_column(Integer)  # leaves: one per stream
    entries: Mapped[int] = mapped_column(BigInteger)  # entries the heads cover
    root: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    checkpoint_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointHead(Base):
    """A stream's head as a checkpoint saw it, stored when it moved since the checkpoint before:
    a checkpoint's leaves are the latest head of each stream at or before it."""

    __tablename__ = "audit_checkpoint_heads"

    checkpoint_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("audit_checkpoints.checkpoint_id"), primary_key=True
    )
    stream_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream_seq: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))
