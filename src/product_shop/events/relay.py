"""The outbox relay: delivers committed events, at least once, in order per aggregate.

Each run claims due rows of each sink's type (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so several
relays share the work), skips any event whose aggregate still has an earlier pending event (a
parked event has been given up on and holds nothing back; redelivered by command, it arrives
after its aggregate's later events), hands the batch to the sinks (several at a time: one
event per aggregate), and records the
outcome: delivered; or retried later on a growing schedule; or parked after the last try
(re-deliverable by command). Only event types with a registered sink are claimed; the
others wait in the outbox for theirs.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import (
    CursorResult,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.db.session import take_write_lock
from product_shop.events.tables import OutboxEvent
from product_shop.logging import get_logger

log = get_logger("product_shop.relay")

# Minutes to hours, then parked.
RETRY_SCHEDULE = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
)


MAX_ROUNDS = 10
# Parked events queued again per transaction by `redeliver_parked`.
REDELIVER_BATCH = 1000


class PermanentDeliveryError(Exception):
    """The sink refused the event for good: park it without further tries."""


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A claimed outbox event, as a sink sees it."""

    position: int
    event_id: uuid.UUID
    event_type: str
    source: str
    subject: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    data: dict[str, Any]
    attempts: int  # earlier tries


# A sink delivers one event to another module; what it returns goes to the follow-up.
Sink = Callable[[PendingEvent], object]


class FollowUp(Protocol):
    """What the relay's unit of work records after an event of one type went out or was parked
    for good (e.g. a shipment accepted by the supplier network: its line moves on). It runs
    inside a SAVEPOINT of the relay's transaction: if it fails, the event is tried again later."""

    def delivered(self, session: Session, event: PendingEvent, result: object) -> None: ...

    def parked(self, session: Session, event: PendingEvent, error: Exception) -> None: ...


@dataclass(frozen=True, slots=True)
class _Sent:
    result: object = None
    error: Exception | None = None


_EVENTS = cast(Table, OutboxEvent.__table__)
_CLAIMED = [
    _EVENTS.c[name]
    for name in (f.name for f in fields(PendingEvent))  # the columns a sink sees, in order
]


class OutboxRelay:
    """Claims and records through SQLAlchemy Core: rows, not ORM objects (the ORM's identity
    map and per-object flush cost more than the delivery itself; see docs/benchmarks.md)."""

    def __init__(
        self,
        database: Database,
        sinks: Mapping[str, Sink],
        clock: Clock,
        *,
        batch: int = 50,
        concurrency: int = 8,
        follow_ups: Mapping[str, FollowUp] | None = None,
    ) -> None:
        self._database = database
        self._sinks = dict(sinks)
        self._follow_ups = dict(follow_ups or {})
        self._clock = clock
        self._batch = batch
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._claims = {event_type: self._claim_statement(event_type) for event_type in sinks}

    def run_once(self) -> int:
        """Deliver what is due now. Returns how many events were delivered."""
        if not self._sinks:
            return 0
        delivered = 0
        for _ in range(MAX_ROUNDS):  # a delivery may unblock the next event of its aggregate
            with self._database.unit_of_work() as session:
                if self._database.dialect == "postgresql":
                    # The outbox grows from nothing and churns; a plan cached while it was small
                    # (psycopg prepares repeated statements) turned the per-aggregate check into
                    # a sequential scan per candidate: 0.5-2 s a claim. Plan each claim afresh.
                    session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
                now = self._clock.now()
                events = [
                    PendingEvent(*row)
                    for claim in self._claims.values()
                    for row in session.execute(claim, {"now": now})
                ]
                sent = self._send(events)
                round_delivered, round_parked = self._record(session, events, sent)
            delivered += round_delivered
            # A delivery, or an event given up on, may let the next of its aggregate go.
            if not (round_delivered or round_parked):
                break
        return delivered

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _claim_statement(self, event_type: str) -> Select[Any]:
        """Due events of one type, oldest first, at most one per aggregate: an event waits while
        an earlier one of its aggregate is still pending (so a batch may be sent concurrently)."""
        earlier = _EVENTS.alias("earlier")
        blocked = exists().where(
            and_(
                earlier.c.aggregate_type == _EVENTS.c.aggregate_type,
                earlier.c.aggregate_id == _EVENTS.c.aggregate_id,
                earlier.c.position < _EVENTS.c.position,
                earlier.c.event_type.in_(self._sinks),
                # A parked event has been given up on (until redelivered by command): it does
                # not hold back what its aggregate does next.
                earlier.c.status == literal_column("'pending'"),
            )
        )
        return (
            select(*_CLAIMED)
            .where(
                _EVENTS.c.event_type == event_type,
                # A literal, not a parameter: the partial index ix_outbox_events_due is only
                # usable when the planner can see this condition (also in generic plans).
                _EVENTS.c.status == literal_column("'pending'"),
                _EVENTS.c.next_attempt_at <= bindparam("now", type_=_EVENTS.c.next_attempt_at.type),
                ~blocked,
            )
            .order_by(_EVENTS.c.position)
            .limit(self._batch)
            .with_for_update(skip_locked=True)
        )

    def _send(self, events: list[PendingEvent]) -> list[_Sent]:
        """Hand each event to its sink; None for a delivery, else what went wrong. Events of
        a batch belong to different aggregates, so they go out `concurrency` at a time (each
        sink call waits on another module's HTTP answer)."""
        if len(events) <= 1 or self._concurrency <= 1:
            return [self._send_one(event) for event in events]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="relay-send")
        return list(self._pool.map(self._send_one, events))

    def _send_one(self, event: PendingEvent) -> _Sent:
        try:
            return _Sent(result=self._sinks[event.event_type](event))
        except Exception as exc:  # recorded by _record: retried later, or parked
            return _Sent(error=exc)

    def _record(
        self, session: Session, events: list[PendingEvent], sent: list[_Sent]
    ) -> tuple[int, int]:
        """Delivered events in one statement; each failure retried later, or parked. Follow-ups
        run first: one that fails turns its delivery into a failure to retry. Returns how many
        were delivered and how many parked."""
        now = self._clock.now()
        take_write_lock(session)  # SQLite: the claim read took no lock; the writes start here
        failures = [
            self._follow_up(session, event, outcome, now)
            for event, outcome in zip(events, sent, strict=True)
        ]
        delivered = [e.position for e, f in zip(events, failures, strict=True) if f is None]
        if delivered:
            session.execute(
                update(_EVENTS)
                .where(_EVENTS.c.position.in_(delivered))
                .values(
                    status="delivered",
                    delivered_at=now,
                    last_error=None,
                    attempts=_EVENTS.c.attempts + 1,
                )
            )
        for event, failure in zip(events, failures, strict=True):
            if failure is not None:
                session.execute(
                    update(_EVENTS)
                    .where(_EVENTS.c.position == event.position)
                    .values(self._after_failure(event, failure, now))
                )
        parked = sum(
            1
            for event, failure in zip(events, failures, strict=True)
            if failure is not None and self._parks(event, failure)
        )
        return len(delivered), parked

    def _follow_up(
        self, session: Session, event: PendingEvent, outcome: _Sent, now: datetime
    ) -> Exception | None:
        """The event's follow-up (if its type has one) in a SAVEPOINT; the failure to record."""
        follow_up = self._follow_ups.get(event.event_type)
        error = outcome.error
        parks = error is not None and self._parks(event, error)
        if follow_up is None or (error is not None and not parks):
            return error
        try:
            with session.begin_nested():
                if error is None:
                    follow_up.delivered(session, event, outcome.result)
                else:
                    follow_up.parked(session, event, error)
        except Exception as exc:
            log.error(
                "relay_follow_up_failed",
                event_type=event.event_type,
                event_id=str(event.event_id),
                error=type(exc).__name__,
            )
            return exc if error is None else error
        return error

    @staticmethod
    def _parks(event: PendingEvent, error: Exception) -> bool:
        return isinstance(error, PermanentDeliveryError) or event.attempts + 1 > len(RETRY_SCHEDULE)

    def _after_failure(
        self, event: PendingEvent, failure: Exception, now: datetime
    ) -> dict[str, Any]:
        attempts = event.attempts + 1
        if isinstance(failure, PermanentDeliveryError):
            log.error("event_parked", event_type=event.event_type, event_id=str(event.event_id))
            return {"attempts": attempts, "status": "parked", "last_error": str(failure)[:500]}
        changes: dict[str, Any] = {
            "attempts": attempts,
            "last_error": f"{type(failure).__name__}: {failure}"[:500],
        }
        if attempts > len(RETRY_SCHEDULE):
            changes["status"] = "parked"
            log.error("event_parked", event_type=event.event_type, event_id=str(event.event_id))
        else:
            changes["next_attempt_at"] = now + RETRY_SCHEDULE[attempts - 1]
        return changes

    def redeliver_parked(self, *, batch: int = REDELIVER_BATCH) -> int:
        """Put parked events back in the queue (the `relay --redeliver-parked` command). Walks
        the outbox in position order, `batch` parked events per transaction (one bounded SELECT
        and one UPDATE each), so neither memory nor locks grow with the backlog; an event parked
        again meanwhile behind the walk waits for the next run. Returns how many were queued."""
        queued = 0
        after = 0  # positions start at 1
        while True:
            with self._database.unit_of_work() as session:
                positions = list(
                    session.scalars(
                        select(_EVENTS.c.position)
                        .where(_EVENTS.c.status == "parked", _EVENTS.c.position > after)
                        .order_by(_EVENTS.c.position)
                        .limit(batch)
                    )
                )
                if not positions:
                    return queued
                result = session.execute(
                    update(_EVENTS)
                    .where(_EVENTS.c.position.in_(positions), _EVENTS.c.status == "parked")
                    .values(status="pending", attempts=0, next_attempt_at=self._clock.now())
                )
                queued += cast(CursorResult[Any], result).rowcount
            if len(positions) < batch:
                return queued
            after = positions[-1]


class RelayThread:
    """Runs the relay in the background of the embedded service (the demo)."""

    def __init__(self, relay: OutboxRelay, interval_seconds: float = 1.0) -> None:
        self._relay = relay
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        pause = self._interval
        while not self._stop.wait(pause):
            try:
                delivered = self._relay.run_once()
            except Exception:
                log.exception("relay_run_failed")
                delivered = 0
            pause = 0 if delivered else self._interval  # drain a busy outbox without pauses
