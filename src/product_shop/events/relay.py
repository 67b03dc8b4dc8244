"""The outbox relay: delivers committed events to every destination, at least once, in order per
aggregate and destination, with every attempt recorded.

Two steps, each its own unit of work, and no transaction open while another module is called:

1. **Route.** Events the services committed (`outbox_events`, status `pending`) get one
   delivery row per destination the routing names (`events/routing.py`), and become `routed`.
   One relay routes at a time (PostgreSQL: a transaction-level advisory lock, tried, never
   waited for), in outbox order.
2. **Deliver**, per destination: claim due deliveries, at most one per aggregate, and only where
   no earlier event of that aggregate is still on its way to this destination. A claim is a
   lease: it moves `next_attempt_at` past the lease time and counts the claim, then commits, so
   other relays pass the row by and a relay that dies gives it back when the lease runs out.
   The sink calls go out several at a time. Each outcome is recorded in a unit of work of its
   own, only while the lease is still ours: delivered (with the destination's follow-up), or
   tried again on the retry policy's schedule, or parked (the policy's horizon passed, or the
   sink said trying again cannot help). Every try is a `delivery_attempts` row.

A destination is delivered by its own loop (`events/relay_thread.py`), so a slow or hung
receiver holds back only its own deliveries. A relay that dies after a sink call and before
recording it leaves the lease to run out: the event goes again (at least once), and receivers
deduplicate by event id (the webhook id, the JetStream message id, the Idempotency-Key other
modules' APIs take).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from product_shop.audit.log import AuditActor, AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.db.session import take_write_lock, try_schema_lock
from product_shop.events.attempts import send_one
from product_shop.events.delivery import (
    FollowUp,
    PendingEvent,
    RetryPolicy,
    Sink,
)
from product_shop.events.relay_record import Claimed, DeliveryRecorder, aggregate_key
from product_shop.events.routing import Destination, Routing
from product_shop.events.statements import (
    ANY_DUE,
    CLAIM_PLANNING,
    CLAIMED_EVENTS,
    DELIVERIES,
    EVENTS,
    ROUTE_BATCH,
    UNROUTED_ANY,
    UNROUTED_BATCH,
    due_deliveries,
)
from product_shop.logging import get_logger

log = get_logger("product_shop.relay")

# The audit stream of the Communication Hub events emitted (spec §8), and who writes it.
NOTIFICATION_STREAM = ("communication_hub", "events")
RELAY_ACTOR = AuditActor(actor_id="product-shop", role="service", name="Product Shop")
# Rounds of one `run_once`: a delivery may unblock the next event of its aggregate.
MAX_ROUNDS = 50
# Parked deliveries queued again per unit of work by `redeliver`.
REDELIVER_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Round:
    """What one delivery round of one destination did."""

    claimed: int = 0
    delivered: int = 0
    parked: int = 0

    @property
    def progressed(self) -> bool:
        # A delivery, or an event given up on, may let the next of its aggregate go.
        return bool(self.delivered or self.parked)


class OutboxRelay:
    """Routes and delivers through SQLAlchemy Core: rows, not ORM objects (the ORM's identity
    map and per-object flush cost more than the delivery itself; see docs/benchmarks.md)."""

    def __init__(
        self,
        database: Database,
        sinks: Mapping[str, Sink],
        clock: Clock,
        *,
        routing: Routing | None = None,
        policy: RetryPolicy | None = None,
        lease: timedelta = timedelta(seconds=60),
        batch: int = 50,
        concurrency: int = 8,
        follow_ups: Mapping[tuple[str, str], FollowUp] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._database = database
        self._sinks = {str(destination): sink for destination, sink in sinks.items()}
        self._clock = clock
        self._routing = routing or Routing()
        self._audit = audit
        self._recorder = DeliveryRecorder(
            database, clock, policy or RetryPolicy(), follow_ups or {}
        )
        self._lease = lease
        self._batch = batch
        self._concurrency = concurrency
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()
        self._claim = due_deliveries(batch)

    @property
    def destinations(self) -> list[str]:
        """The destinations this relay delivers to (those with a sink)."""
        return list(self._sinks)

    @property
    def batch(self) -> int:
        """Deliveries claimed at most per round."""
        return self._batch

    def run_once(self) -> int:
        """Route what is new and deliver what is due now, destination after destination, until
        nothing moves. Returns how many deliveries were made."""
        delivered = 0
        for _ in range(MAX_ROUNDS):
            progressed = self.route() > 0
            for destination in self._sinks:
                done = self.deliver_round(destination)
                delivered += done.delivered
                progressed = progressed or done.progressed
            if not progressed:
                break
        return delivered

    @property
    def database(self) -> Database:
        return self._database

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=True)

    # Step 1: routing.

    def route(self) -> int:
        """Give every committed, unrouted event its deliveries. Returns how many events."""
        routed = 0
        while True:
            with self._database.reading() as session:  # cheap look first: no lock when idle
                if session.execute(UNROUTED_ANY).first() is None:
                    return routed
            with self._database.unit_of_work() as session:
                count = self._route_batch(session)
            routed += count
            if count < ROUTE_BATCH:
                return routed

    def _route_batch(self, session: Session) -> int:
        if self._database.dialect == "postgresql":
            if not try_schema_lock(session, "product_shop.relay_routing"):
                return 0  # another relay is routing: it keeps the order
        else:
            take_write_lock(session)
        rows = session.execute(UNROUTED_BATCH).all()
        if not rows:
            return 0
        now = self._clock.now()
        deliveries = [
            {
                "event_position": row.position,
                "destination": destination.value,
                "event_type": row.event_type,
                "aggregate_type": row.aggregate_type,
                "aggregate_id": row.aggregate_id,
                "aggregate_key": aggregate_key(
                    destination.value, row.aggregate_type, row.aggregate_id
                ),
                "status": "pending",
                "attempts": 0,
                "claims": 0,
                "queued_at": now,
                "next_attempt_at": now,
            }
            for row in rows
            for destination in self._routing.destinations(row.event_type)
        ]
        if deliveries:
            self._behind_earlier(session, deliveries, now)
            session.execute(insert(DELIVERIES), deliveries)
            to_hub = {
                d["event_position"]
                for d in deliveries
                if d["destination"] == Destination.COMMUNICATION_HUB.value
            }
            self._audit_notifications(session, [r for r in rows if r.position in to_hub], now)
        session.execute(
            update(EVENTS)
            .where(EVENTS.c.position.in_([row.position for row in rows]))
            .values(status="routed", delivered_at=now)
        )
        return len(rows)

    def _audit_notifications(self, session: Session, rows: Sequence[Any], now: datetime) -> None:
        """Spec §8: every Communication Hub event this module emits is in the audit log, as it
        is queued for delivery: one stream (`communication_hub`, `events`), written only here,
        by the one router, so it never waits for another writer. Ids and types only. `rows`: the
        events of the batch routed to Communication Hub."""
        if self._audit is None:
            return
        entries = [
            self._audit.row(
                session,
                stream_type=NOTIFICATION_STREAM[0],
                stream_id=NOTIFICATION_STREAM[1],
                action="communication_hub.event_emitted",
                actor=RELAY_ACTOR,
                after={
                    "event_id": str(row.event_id),
                    "event_type": row.event_type,
                    "aggregate_type": row.aggregate_type,
                    "aggregate_id": row.aggregate_id,
                    "occurred_at": row.occurred_at,
                },
                at=now,
            )
            for row in rows
        ]
        if entries:
            session.execute(insert(AuditEntry), entries)

    def _behind_earlier(
        self, session: Session, deliveries: list[dict[str, Any]], now: datetime
    ) -> None:
        """A delivery behind an earlier one of its queue (aggregate and destination), already
        pending or earlier in this batch, is not due before it: at the earlier one's retry if
        it waits to retry, else after a lease; the earlier one's outcome brings it forward
        (`_release_next`). So claims read queue heads, not what waits behind them."""
        keys = {d["aggregate_key"] for d in deliveries}
        waiting: dict[str, datetime] = {
            row.aggregate_key: row.next
            for row in session.execute(
                select(
                    DELIVERIES.c.aggregate_key,
                    func.max(DELIVERIES.c.next_attempt_at).label("next"),
                )
                .where(
                    DELIVERIES.c.aggregate_key.in_(keys),
                    DELIVERIES.c.status == literal_column("'pending'"),
                )
                .group_by(DELIVERIES.c.aggregate_key)
            )
        }
        held = now + self._lease
        for delivery in deliveries:
            key = delivery["aggregate_key"]
            earlier = waiting.get(key)
            if earlier is not None:
                delivery["next_attempt_at"] = max(earlier, held)
            waiting[key] = delivery["next_attempt_at"]

    # Step 2: delivery, per destination.

    def deliver_round(self, destination: str) -> Round:
        """Claim one batch of `destination`'s due deliveries; send each and record its outcome
        at once, `concurrency` at a time (a batch holds one event per aggregate)."""
        claimed = self._claim_due(destination)
        if not claimed:
            return Round()
        statuses = self._deliver_each(destination, claimed)
        return Round(
            claimed=len(claimed),
            delivered=statuses.count("delivered"),
            parked=statuses.count("parked"),
        )

    def _claim_due(self, destination: str) -> list[Claimed]:
        now = self._clock.now()
        with self._database.reading() as session:
            if session.execute(ANY_DUE, {"destination": destination, "now": now}).first() is None:
                return []
        with self._database.unit_of_work() as session:
            if self._database.dialect == "postgresql":
                session.execute(CLAIM_PLANNING)
            else:
                take_write_lock(session)  # the claim is short: no other module is called here
            ids = list(session.scalars(self._claim, {"destination": destination, "now": now}))
            if not ids:
                return []
            session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.delivery_id.in_(ids))
                .values(claims=DELIVERIES.c.claims + 1, next_attempt_at=now + self._lease)
            )
            rows = session.execute(CLAIMED_EVENTS.where(DELIVERIES.c.delivery_id.in_(ids))).all()
        return [
            Claimed(
                event=PendingEvent(
                    delivery_id=row.delivery_id,
                    destination=row.destination,
                    position=row.position,
                    event_id=row.event_id,
                    event_type=row.event_type,
                    source=row.source,
                    subject=row.subject,
                    aggregate_type=row.aggregate_type,
                    aggregate_id=row.aggregate_id,
                    occurred_at=row.occurred_at,
                    data=row.data,
                    attempts=row.attempts,
                ),
                claim=row.claims,
                queued_at=row.queued_at,
                followed=row.follower is not None,
            )
            for row in sorted(rows, key=lambda r: r.position)
        ]

    def _deliver_each(self, destination: str, claimed: list[Claimed]) -> list[str]:
        """Each claimed delivery sent and its outcome committed on its own, so a delivery made
        never waits for a slower one of its batch; each call waits on another module, so they
        overlap, `concurrency` at a time."""
        sink = self._sinks[destination]

        def deliver(item: Claimed) -> str:
            return self._recorder.record(item, send_one(sink, item.event, self._clock))

        if len(claimed) <= 1 or self._concurrency <= 1:
            return [deliver(item) for item in claimed]
        with self._pools_lock:
            pool = self._pools.get(destination)
            if pool is None:
                pool = ThreadPoolExecutor(
                    self._concurrency, thread_name_prefix=f"relay-{destination}"
                )
                self._pools[destination] = pool
        return list(pool.map(deliver, claimed))

    def redeliver(
        self,
        *,
        destination: str | None = None,
        since: datetime | None = None,
        batch: int = REDELIVER_BATCH,
    ) -> int:
        """Queue parked deliveries again (`product-shop events redeliver`, the staff API): of
        one destination or all, of events that occurred at or after `since` or all. Walks them
        in delivery order, `batch` per unit of work, so neither memory nor locks grow
        with the backlog; the horizon starts afresh. Returns how many were queued."""
        queued = 0
        after = 0
        d = DELIVERIES
        while True:
            with self._database.unit_of_work() as session:
                query = (
                    select(d.c.delivery_id)
                    .where(d.c.status == literal_column("'parked'"), d.c.delivery_id > after)
                    .order_by(d.c.delivery_id)
                    .limit(batch)
                )
                if destination is not None:
                    query = query.where(d.c.destination == destination)
                if since is not None:
                    query = query.join(EVENTS, EVENTS.c.position == d.c.event_position).where(
                        EVENTS.c.occurred_at >= since
                    )
                ids = list(session.scalars(query))
                if not ids:
                    return queued
                now = self._clock.now()
                result = session.execute(
                    update(d)
                    .where(d.c.delivery_id.in_(ids), d.c.status == "parked")
                    .values(status="pending", parked_at=None, queued_at=now, next_attempt_at=now)
                )
                queued += cast(CursorResult[Any], result).rowcount
            if len(ids) < batch:
                return queued
            after = ids[-1]
