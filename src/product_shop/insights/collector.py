"""What the database already knows, read when `/metrics` is scraped: the outbox backlog per
destination (pending deliveries and the oldest one's age), parked deliveries per destination, and
committed events not routed yet.

Three cheap queries, each answered by a partial index (`events/tables.py`): the pending
deliveries (`ix_event_deliveries_next`), the parked ones (`ix_event_deliveries_parked`) and the
unrouted events (`ix_outbox_events_unrouted`); the work follows the backlog, never the history.
The audit feed to Audit & Compliance reads the audit log, not the outbox, and is not counted
here (`product-shop events status` shows it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from product_shop.core.clock import Clock
from product_shop.events.routing import AUDIT_FEED, Destination
from product_shop.events.status import DeliveryStatus, delivery_status
from product_shop.insights.metrics import NAMESPACE
from product_shop.logging import get_logger

log = get_logger("product_shop.insights")

# The outbox's destinations (the audit feed has no deliveries: it reads the audit log).
DESTINATIONS = tuple(d.value for d in Destination if d is not AUDIT_FEED)

PENDING = f"{NAMESPACE}_outbox_pending"
OLDEST_PENDING = f"{NAMESPACE}_outbox_oldest_pending_age_seconds"
PARKED = f"{NAMESPACE}_outbox_parked"
UNROUTED = f"{NAMESPACE}_outbox_unrouted"
OLDEST_UNROUTED = f"{NAMESPACE}_outbox_oldest_unrouted_age_seconds"
DATABASE_UP = f"{NAMESPACE}_metrics_database_up"


def outbox_families(session: Session, now: datetime) -> list[Metric]:
    """The outbox gauges as the backlog stands now (`events/status.py`, without the audit
    feed: its backlog is a count over the audit log, not an index read)."""
    return list(
        _families(
            delivery_status(session, now, {}, only=DESTINATIONS, audit_feed=False),
            now,
            database_up=True,
        )
    )


def describe_families() -> list[Metric]:
    """The metric families this collector exposes (without samples)."""
    return list(_families(None, datetime.min, database_up=False))


class OutboxCollector(Collector):
    """The outbox gauges, read from the database at each scrape (`reading`: a read session,
    `Database.reading`). A database that does not answer gives `..._metrics_database_up 0` and
    no outbox samples, never a failed scrape."""

    def __init__(
        self, reading: Callable[[], AbstractContextManager[Session]], clock: Clock
    ) -> None:
        self._read = reading
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return describe_families()

    def collect(self) -> Iterable[Metric]:
        try:
            with self._read() as session:
                return outbox_families(session, self._clock.now())
        except Exception as exc:  # a scrape shows the database is away; it never fails
            log.warning("metrics_outbox_unreadable", error=type(exc).__name__)
            return list(_families(None, self._clock.now(), database_up=False))


def _families(
    status: DeliveryStatus | None, now: datetime, *, database_up: bool
) -> Iterable[Metric]:
    pending = GaugeMetricFamily(
        PENDING, "Outbox deliveries waiting for their destination.", labels=["destination"]
    )
    oldest = GaugeMetricFamily(
        OLDEST_PENDING,
        "Age of the oldest delivery waiting for each destination (0: none waiting).",
        labels=["destination"],
    )
    parked = GaugeMetricFamily(
        PARKED,
        "Deliveries parked (given up on) per destination, until redelivered.",
        labels=["destination"],
    )
    unrouted = GaugeMetricFamily(
        UNROUTED, "Committed outbox events the relay has not routed to their destinations yet."
    )
    oldest_unrouted = GaugeMetricFamily(
        OLDEST_UNROUTED, "Age of the oldest event not routed yet (0: none)."
    )
    up = GaugeMetricFamily(
        DATABASE_UP, "1 when the scrape could read the outbox from the database, else 0."
    )
    if status is not None:
        for d in status.destinations:
            pending.add_metric([d.destination], d.pending)
            oldest.add_metric([d.destination], d.oldest_pending_age_seconds or 0.0)
            parked.add_metric([d.destination], d.parked)
        unrouted.add_metric([], status.unrouted)
        oldest_unrouted.add_metric(
            [],
            max(0.0, (now - status.oldest_unrouted_at).total_seconds())
            if status.oldest_unrouted_at
            else 0.0,
        )
    up.add_metric([], 1.0 if database_up else 0.0)
    return (pending, oldest, parked, unrouted, oldest_unrouted, up)
