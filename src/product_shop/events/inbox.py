"""Inbound message de-duplication: a message id is recorded in the same transaction as its
effect, so a redelivered webhook has no second effect."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from product_shop.db.base import Base, UTCDateTime


class InboxMessage(Base):
    __tablename__ = "inbox_messages"

    source: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    message_type: Mapped[str] = mapped_column(String(80))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


def seen(session: Session, source: str, message_id: str) -> bool:
    return (
        session.execute(
            select(InboxMessage.message_id).where(
                InboxMessage.source == source, InboxMessage.message_id == message_id
            )
        ).first()
        is not None
    )


def record(session: Session, source: str, message_id: str, message_type: str, at: datetime) -> None:
    """Add the message id; a concurrent duplicate fails on the primary key at flush."""
    session.add(
        InboxMessage(
            source=source, message_id=message_id, message_type=message_type, received_at=at
        )
    )
    session.flush()
