"""Inbound message de-duplication: a message id is recorded in the same transaction as its
effect, so a redelivered webhook has no second effect."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from product_shop.db.base import Base, UTCDateTime


class InboxMessage(Base):
    __tablename__ = "inbox_messages"

    source: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    message_type: Mapped[str] = mapped_column(String(80))
    # Indexed for the purge of messages older than the dedupe window (`jobs/purge.py`).
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


MAX_MESSAGE_ID = 120  # the column's length: a longer webhook id is refused as malformed


def seen(session: Session, source: str, message_id: str) -> bool:
    return (
        session.execute(
            select(InboxMessage.message_id).where(
                InboxMessage.source == source, InboxMessage.message_id == message_id
            )
        ).first()
        is not None
    )


def record(session: Session, source: str, message_id: str, message_type: str, at: datetime) -> bool:
    """Record the message id; True when it is new. Idempotent under concurrency (ON CONFLICT DO
    NOTHING): two deliveries of one message racing each other never fail, and the effect they
    carry is protected by its own uniqueness (one order per checkout)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(InboxMessage)
        .values(source=source, message_id=message_id, message_type=message_type, received_at=at)
        .on_conflict_do_nothing(index_elements=["source", "message_id"])
        .returning(InboxMessage.message_id)
    )
    return session.execute(statement).first() is not None
