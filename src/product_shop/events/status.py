"""How event delivery stands, per destination: the backlog, its oldest age and what is parked
(`product-shop events status`, `GET /v1/event-deliveries`, the readiness detail)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, literal_column, select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.events.routing import AUDIT_FEED, Destination
from product_shop.events.tables import EventDelivery, FeedCursor, OutboxEvent

_EVENTS = cast(Table, OutboxEvent.__table__)
_DELIVERIES = cast(Table, EventDelivery.__table__)


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    destination: str
    label: str
    sink: str  # api (another module's API), webhook, nats, or off (deliveries wait)
    pending: int
    oldest_pending_at: datetime | None
    oldest_pending_age_seconds: float | None
    parked: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "label": self.label,
            "sink": self.sink,
            "pending": self.pending,
            "oldest_pending_at": self.oldest_pending_at,
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
            "parked": self.parked,
        }


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    unrouted: int  # committed events the relay has not given their deliveries yet
    oldest_unrouted_at: datetime | None
    destinations: list[DestinationStatus]

    @property
    def pending(self) -> int:
        return self.unrouted + sum(d.pending for d in self.destinations)

    @property
    def parked(self) -> int:
        return sum(d.parked for d in self.destinations)


def delivery_status(
    session: Session,
    now: datetime,
    sinks: Mapping[str, str],
    *,
    only: Iterable[str] = (),
    audit_feed: bool = True,
) -> DeliveryStatus:
    """Every destination (with `sinks`, its sink kind), or those in `only`. `audit_feed=False`
    leaves out the audit feed's backlog, which counts audit entries rather than reading an
    index (the metrics scrape, `insights/collector.py`)."""
    pending: dict[str, tuple[int, datetime | None]] = {
        row.destination: (int(row[1]), row[2])
        for row in session.execute(
            select(
                _DELIVERIES.c.destination,
                func.count().label("count"),
                func.min(_DELIVERIES.c.queued_at).label("oldest"),
            )
            .where(_DELIVERIES.c.status == literal_column("'pending'"))
            .group_by(_DELIVERIES.c.destination)
        )
    }
    parked: dict[str, int] = dict(
        session.execute(
            select(_DELIVERIES.c.destination, func.count())
            .where(_DELIVERIES.c.status == literal_column("'parked'"))
            .group_by(_DELIVERIES.c.destination)
        ).all()
    )
    if audit_feed:
        pending[AUDIT_FEED.value] = _audit_feed_backlog(session)
    unrouted, oldest_unrouted = session.execute(
        select(func.count(), func.min(_EVENTS.c.occurred_at)).where(
            _EVENTS.c.status == literal_column("'pending'")
        )
    ).one()
    wanted = set(only)
    rows = []
    for destination in Destination:
        if wanted and destination.value not in wanted:
            continue
        count, oldest = pending.get(destination.value, (0, None))
        oldest_at = _aware(oldest)
        rows.append(
            DestinationStatus(
                destination=destination.value,
                label=destination.label,
                sink=sinks.get(destination.value, "off"),
                pending=count,
                oldest_pending_at=oldest_at,
                oldest_pending_age_seconds=(
                    round((now - oldest_at).total_seconds(), 3) if oldest_at else None
                ),
                parked=parked.get(destination.value, 0),
            )
        )
    return DeliveryStatus(
        unrouted=unrouted, oldest_unrouted_at=_aware(oldest_unrouted), destinations=rows
    )


def _audit_feed_backlog(session: Session) -> tuple[int, datetime | None]:
    """The audit entries after the audit feed's cursor (the feed reads the log, not the
    outbox): how many, and the oldest one's time."""
    cursor = (
        select(FeedCursor.position).where(FeedCursor.feed == AUDIT_FEED.value).scalar_subquery()
    )
    count, oldest = session.execute(
        select(func.count(), func.min(AuditEntry.recorded_at)).where(
            AuditEntry.position > func.coalesce(cursor, 0)
        )
    ).one()
    return int(count), oldest


def _aware(value: datetime | None) -> datetime | None:
    """An aggregate (MIN) bypasses the column type: SQLite hands back naive UTC or text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
