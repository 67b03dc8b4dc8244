"""The relay's SQL: the committed events not yet routed, the due deliveries a destination's relay
claims (in order per aggregate), and the claimed deliveries with their events. SQLAlchemy Core
statements built once; `events/relay.py` runs them."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)

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
    select(
        EVENTS.c.position,
        EVENTS.c.event_id,
        EVENTS.c.event_type,
        EVENTS.c.aggregate_type,
        EVENTS.c.aggregate_id,
        EVENTS.c.occurred_at,
    )
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

    Read through `ix_event_deliveries_next` (destination, next_attempt_at, event_position;
    pending only) in its own order, so a claim reads one batch of due rows and stops, however
    large the backlog due or waiting to retry (run after `CLAIM_PLANNING`). The
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


# How PostgreSQL plans a claim, for its transaction only (`due_deliveries`). The tables grow
# from nothing and churn: a plan cached while they were small (psycopg prepares repeated
# statements) turned the per-aggregate check into a sequential scan per candidate, so each claim
# is planned afresh. And the planner cannot estimate how many candidates pass that check (it
# guesses 0.5%), so it chose to read every due delivery and sort them (14 ms a claim at 3,600
# due, growing with the backlog) over walking `ix_event_deliveries_next` in the claim's order and
# stopping after one batch (0.4 ms): bitmap scans and sorts are priced out here, and so are
# sequential scans (the lease taken by key, `delivery_id IN (...)`, read the whole table).
CLAIM_PLANNING = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
    " set_config('enable_bitmapscan', 'off', true),"
    " set_config('enable_sort', 'off', true),"
    " set_config('enable_seqscan', 'off', true)"
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


# ---- recording one try (`relay_record.py`): built once, run with each outcome's parameters ---

_AT = DELIVERIES.c.next_attempt_at.type
# The delivery's row, only while the claim's lease is still the relay's. Found by its key: the
# status test is written so that no partial index of pending rows can serve the statement. A
# planner without statistics (a young table, autovacuum behind) priced `ix_event_deliveries_next`
# (pending only) below the primary key and walked every pending delivery for each one recorded,
# 8,000 rows a delivery after a minute of bench/checkout_bench.py (session 12).
_MINE = (
    DELIVERIES.c.delivery_id == bindparam("the_delivery"),
    DELIVERIES.c.claims == bindparam("the_claim"),
    func.coalesce(DELIVERIES.c.status, literal_column("''")) == literal_column("'pending'"),
)
# Its new values: delivered, parked, or waiting for its retry (`retry_at`; a delivered or
# parked one keeps its `next_attempt_at`, which only pending rows are indexed by).
MARK = (
    update(DELIVERIES)
    .where(*_MINE)
    .values(
        status=bindparam("new_status"),
        attempts=bindparam("new_attempts"),
        last_error=bindparam("new_error"),
        delivered_at=bindparam("delivered_at_", type_=_AT),
        parked_at=bindparam("parked_at_", type_=_AT),
        next_attempt_at=func.coalesce(
            bindparam("retry_at", type_=_AT), DELIVERIES.c.next_attempt_at
        ),
    )
    .returning(DELIVERIES.c.delivery_id)
)
# The `delivery_attempts` row of one try.
ATTEMPT = insert(ATTEMPTS).values(
    delivery_id=bindparam("the_delivery"),
    attempted_at=bindparam("attempted_at_", type_=_AT),
    latency_ms=bindparam("latency_ms_"),
    outcome=bindparam("outcome_"),
    status_code=bindparam("status_code_"),
    error=bindparam("error_"),
)
# PostgreSQL, both in one statement: the new values if the lease is still ours (a data-modifying
# CTE) and the attempt, whose outcome is the send's alone if it was not; returns 1 when it was.
_OURS = MARK.cte("ours")
_WAS_OURS = select(func.count()).select_from(_OURS).scalar_subquery()
MARKED = (
    insert(ATTEMPTS)
    .values(
        delivery_id=bindparam("the_delivery"),
        attempted_at=bindparam("attempted_at_", type_=_AT),
        latency_ms=bindparam("latency_ms_"),
        outcome=case((_WAS_OURS > 0, bindparam("outcome_")), else_=bindparam("sent_outcome")),
        status_code=bindparam("status_code_"),
        error=bindparam("error_"),
    )
    .add_cte(_OURS)
    .returning(_WAS_OURS)
)
# A delivery waiting for its retry: the later events of its queue are not due before it.
HOLD_BACK = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.aggregate_key == bindparam("key"),
        DELIVERIES.c.status == literal_column("'pending'"),
        DELIVERIES.c.event_position > bindparam("position"),
        DELIVERIES.c.next_attempt_at < bindparam("retry_at", type_=_AT),
    )
    .values(next_attempt_at=bindparam("retry_at", type_=_AT))
)
_FOLLOWING = (
    select(DELIVERIES.c.delivery_id)
    .where(
        DELIVERIES.c.aggregate_key == bindparam("key"),
        DELIVERIES.c.status == literal_column("'pending'"),
        DELIVERIES.c.event_position > bindparam("position"),
    )
    .order_by(DELIVERIES.c.event_position)
    .limit(1)
    .scalar_subquery()
)
# A delivery delivered or parked: the next of its queue is due at once.
RELEASE_NEXT = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.delivery_id == _FOLLOWING,
        DELIVERIES.c.next_attempt_at > bindparam("now", type_=_AT),
    )
    .values(next_attempt_at=bindparam("now", type_=_AT))
)
