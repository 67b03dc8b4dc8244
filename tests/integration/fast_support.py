"""Rows and checks shared by the db.fast tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from product_shop.events.tables import OutboxEvent

NOW = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
# A zone far from UTC: values given in it must be stored and read back as UTC.
KOLKATA = timezone(timedelta(hours=5, minutes=30))

# Statements are module constants, as in the callers: the PostgreSQL compile cache is keyed by
# the statement object.
EVENTS = select(
    OutboxEvent.position,
    OutboxEvent.event_id,
    OutboxEvent.event_type,
    OutboxEvent.aggregate_id,
    OutboxEvent.occurred_at,
    OutboxEvent.next_attempt_at,
    OutboxEvent.delivered_at,
    OutboxEvent.data,
    OutboxEvent.status,
    OutboxEvent.attempts,
    OutboxEvent.last_error,
).order_by(OutboxEvent.position)
EVENT = EVENTS.where(OutboxEvent.event_id == bindparam("event_id"))
LOCKED_EVENT = EVENT.with_for_update()
LOCKED_EVENT_NOWAIT = EVENT.with_for_update(nowait=True)
TRANSACTION_ID = select(func.txid_current().label("txid"))


def event_row(**overrides: Any) -> dict[str, Any]:
    """A complete outbox row (every column the callers send)."""
    row: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "event_type": "ORDER_CREATED",
        "source": "product-shop",
        "subject": "order-1",
        "aggregate_type": "order",
        "aggregate_id": "order-1",
        "occurred_at": NOW,
        "data": {"order_id": "order-1", "total_minor": 5999},
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": NOW,
    }
    row.update(overrides)
    return row


def use_far_time_zone(session: Session, engine_name: str) -> None:
    """PostgreSQL hands timestamps back in the session's zone: make it one that is not UTC."""
    if engine_name == "postgresql":
        session.execute(text("SET LOCAL TIME ZONE 'Asia/Kolkata'"))


def assert_utc(value: Any, expected: datetime) -> None:
    assert isinstance(value, datetime)
    assert value.tzinfo is UTC, f"not aware UTC: {value!r}"
    assert value == expected
