"""Reading event deliveries and their attempts in tests."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from product_shop.db.engine import Database
from product_shop.events.tables import DeliveryAttempt, EventDelivery, OutboxEvent


def deliveries(
    database: Database, *, destination: str | None = None, event_type: str | None = None
) -> list[EventDelivery]:
    """Deliveries in outbox order, detached."""
    query = select(EventDelivery).order_by(EventDelivery.event_position, EventDelivery.destination)
    if destination is not None:
        query = query.where(EventDelivery.destination == destination)
    if event_type is not None:
        query = query.where(EventDelivery.event_type == event_type)
    with Session(database.engine, expire_on_commit=False) as session:
        return list(session.scalars(query))


def delivery(database: Database, *, destination: str, event_type: str) -> EventDelivery:
    (found,) = deliveries(database, destination=destination, event_type=event_type)
    return found


def attempts(database: Database, delivery_id: int) -> list[DeliveryAttempt]:
    with Session(database.engine, expire_on_commit=False) as session:
        return list(
            session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery_id)
                .order_by(DeliveryAttempt.attempt_id)
            )
        )


def outbox_statuses(database: Database) -> list[tuple[str, str]]:
    with Session(database.engine) as session:
        return [
            (row.event_type, row.status)
            for row in session.execute(
                select(OutboxEvent.event_type, OutboxEvent.status).order_by(OutboxEvent.position)
            )
        ]


def past_the_horizon(database: Database, event_id: object) -> None:
    """The event's deliveries were queued long ago and are due: their next failure parks them."""
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    with Session(database.engine) as session:
        position = select(OutboxEvent.position).where(OutboxEvent.event_id == event_id)
        session.execute(
            update(EventDelivery)
            .where(EventDelivery.event_position.in_(position.scalar_subquery()))
            .values(queued_at=long_ago, next_attempt_at=long_ago)
        )
        session.commit()


def delivery_of(database: Database, event_id: object) -> EventDelivery:
    """The one delivery of an event (routed to a single destination)."""
    with Session(database.engine, expire_on_commit=False) as session:
        position = select(OutboxEvent.position).where(OutboxEvent.event_id == event_id)
        return session.scalars(
            select(EventDelivery).where(
                EventDelivery.event_position.in_(position.scalar_subquery())
            )
        ).one()
