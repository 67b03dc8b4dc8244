"""The relay's SQL: the committed events not yet routed, the due deliveries a destination's relay
claims (in order per aggregate), and the claimed deliveries with their events. SQLAlchemy Core
statements built once; `events/relay.py` runs them."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, literal_column, select

from product_shop.events.tables import DeliveryAttempt, EventDelivery, OutboxEvent

EVENTS = cast(Table, OutboxEvent.__table__)
DELIVERIES = cast(Table, EventDelivery.__table__)
ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
# Events routed per unit of work.
ROUTE_BATCH = 500

UNROUTED_ANY = (
    select(EVENTS.c.position).where(EVENTS.c.status == literal_column("'pending'")).limit(1)
)
UNROUTED_BATCH = (
    select(EVENTS.c.position, EVENTS.c.event_type, EVENTS.c.aggregate_type, EVENTS.c.aggregate_id)
    .where(EVENTS.c.status == literal_column("'pending'"))
    .order_by(EVENTS.c.position)
    .limit(ROUTE_BATCH)
)
_FOLLOWER = DELIVERIES.alias("follower")
CLAIMED_EVENTS = select(
    DELIVERIES.c.delivery_id,
    # Is a later event of its queue waiting? Then its outcome makes that one due.
    select(_FOLLOWER.c.delivery_id)
    .where(
        _FOLLOWER.c.aggregate_key == DELIVERIES.c.aggregate_key,
        _FOLLOWER.c.event_position > DELIVERIES.c.event_position,
        _FOLLOWER.c.status == literal_column("'pending'"),
    )
    .limit(1)
    .scalar_subquery()
    .label("follower"),
    DELIVERIES.c.destination,
    DELIVERIES.c.attempts,
    DELIVERIES.c.claims,
    DELIVERIES.c.queued_at,
    EVENTS.c.position,
    EVENTS.c.event_id,
    EVENTS.c.event_type,
    EVENTS.c.source,
    EVENTS.c.subject,
    EVENTS.c.aggregate_type,
    EVENTS.c.aggregate_id,
    EVENTS.c.occurred_at,
    EVENTS.c.data,
).join(EVENTS, EVENTS.c.position == DELIVERIES.c.event_position)


def due_deliveries(batch: int) -> Select[Any]:
    """Due deliveries of one destination, longest due first, at most one per aggregate: a
    delivery waits while an earlier event of its aggregate is still on its way there.

    Read through `ix_event_deliveries_next` (destination, next_attempt_at; pending only), so a
    claim reads the due rows and stops, however large the backlog waiting to retry. The
    per-aggregate check is a scalar subquery on one key column (`aggregate_key`, only in
    `ix_event_deliveries_aggregate`): run per candidate with the key as its index condition,
    whatever the planner's statistics say. As an EXISTS on three columns, a planner misjudging
    a young table flattened it into an anti-join that filtered the whole backlog per candidate
    (2.8 s a claim at 60,000 pending), or used another index on the destination alone."""
    d = DELIVERIES
    earlier = DELIVERIES.alias("earlier")
    earlier_pending = (
        select(earlier.c.delivery_id)
        .where(
            earlier.c.aggregate_key == d.c.aggregate_key,
            earlier.c.event_position < d.c.event_position,
            # A parked delivery has been given up on (until redelivered by command): it
            # does not hold back what its aggregate does next.
            earlier.c.status == literal_column("'pending'"),
        )
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(d.c.delivery_id)
        .where(
            d.c.destination == bindparam("destination"),
            # A literal, not a parameter: the partial indexes are only usable when the
            # planner can see this condition (also in generic plans).
            d.c.status == literal_column("'pending'"),
            d.c.next_attempt_at <= bindparam("now", type_=d.c.next_attempt_at.type),
            earlier_pending.is_(None),
        )
        .order_by(d.c.next_attempt_at, d.c.event_position)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )


# Is anything due for a destination? One indexed read (autocommit on PostgreSQL) before a claim
# opens a transaction: an idle destination's loop costs one round trip, not four.
ANY_DUE = (
    select(DELIVERIES.c.delivery_id)
    .where(
        DELIVERIES.c.destination == bindparam("destination"),
        DELIVERIES.c.status == literal_column("'pending'"),
        DELIVERIES.c.next_attempt_at <= bindparam("now", type_=DELIVERIES.c.next_attempt_at.type),
    )
    .limit(1)
)
