"""Recording outbound events. An event is a row added to the caller's session, so it commits with
the change it announces (transactional outbox); the relay publishes it after commit.

Each event is a CloudEvents 1.0 structured document once published:
`type` like `com.primoro.productshop.product.created.v1`, `subject` the aggregate id, `id` unique.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from product_shop.core.clock import Clock, SystemClock
from product_shop.core.ids import new_id
from product_shop.db.base import json_default
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import EVENT_SOURCE, EventType


class Outbox:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()

    def emit(
        self,
        session: Session,
        event_type: EventType,
        *,
        aggregate_id: str | uuid.UUID,
        data: dict[str, Any],
        at: datetime | None = None,
    ) -> OutboxEvent:
        event = OutboxEvent(**self.row(event_type, aggregate_id=aggregate_id, data=data, at=at))
        session.add(event)
        return event

    def row(
        self,
        event_type: EventType,
        *,
        aggregate_id: str | uuid.UUID,
        data: dict[str, Any],
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """The same event as `emit`, as a row for a batch writer (`db.fast.Statements`) to
        insert in the caller's transaction."""
        now = at or self._clock.now()
        return {
            "event_id": new_id(),
            "event_type": event_type.name,
            "source": EVENT_SOURCE,
            "subject": str(aggregate_id),
            "aggregate_type": event_type.aggregate_type,
            "aggregate_id": str(aggregate_id),
            "occurred_at": now,
            "data": json.loads(json.dumps(data, default=json_default)),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
        }


class _EventFields(Protocol):
    @property
    def event_id(self) -> uuid.UUID: ...
    @property
    def source(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def data(self) -> dict[str, Any]: ...


def to_cloudevent(row: _EventFields) -> dict[str, Any]:
    """The structured-mode CloudEvents 1.0 JSON document for an outbox row or a claimed
    delivery (`events.delivery.PendingEvent`): what every sink sends."""
    return {
        "specversion": "1.0",
        "id": str(row.event_id),
        "source": row.source,
        "type": row.event_type,
        "subject": row.subject,
        "time": row.occurred_at.astimezone(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": row.data,
    }


def cloudevent_bytes(row: _EventFields) -> bytes:
    """`to_cloudevent` as compact UTF-8 JSON (`application/cloudevents+json`)."""
    return json.dumps(to_cloudevent(row), separators=(",", ":"), ensure_ascii=False).encode()
