"""The outbox relay: delivers committed events, at least once, in order per aggregate.

Each run claims due rows of each sink's type (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so several
relays share the work), skips any event whose aggregate still has an earlier undelivered event,
hands the batch to the sinks (several at a time: one event per aggregate), and records the
outcome: delivered; or retried later on a growing schedule; or parked after the last try
(re-deliverable by command). Only event types with a registered sink are claimed; the
others wait in the outbox for theirs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import and_, exists, literal_column, select, text
from sqlalchemy.orm import Session, aliased

from product_shop.core.clock import Clock
from product_shop.db.engine import Database
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


class PermanentDeliveryError(Exception):
    """The sink refused the event for good: park it without further tries."""


Sink = Callable[[OutboxEvent], None]


class OutboxRelay:
    def __init__(
        self,
        database: Database,
        sinks: Mapping[str, Sink],
        clock: Clock,
        *,
        batch: int = 50,
        concurrency: int = 8,
    ) -> None:
        self._database = database
        self._sinks = dict(sinks)
        self._clock = clock
        self._batch = batch
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None

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
                events = [e for event_type in self._sinks for e in self._claim(session, event_type)]
                failures = self._send(events)
                round_delivered = sum(
                    self._record(event, failure)
                    for event, failure in zip(events, failures, strict=True)
                )
            delivered += round_delivered
            if not round_delivered:
                break
        return delivered

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _claim(self, session: Session, event_type: str) -> list[OutboxEvent]:
        """Due events of one type, oldest first, at most one per aggregate: an event waits while
        an earlier one of its aggregate is undelivered (so a batch may be sent concurrently)."""
        earlier = aliased(OutboxEvent)
        blocked = exists().where(
            and_(
                earlier.aggregate_type == OutboxEvent.aggregate_type,
                earlier.aggregate_id == OutboxEvent.aggregate_id,
                earlier.position < OutboxEvent.position,
                earlier.event_type.in_(self._sinks),
                earlier.status != "delivered",
            )
        )
        statement = (
            select(OutboxEvent)
            .where(
                OutboxEvent.event_type == event_type,
                # A literal, not a parameter: the partial index ix_outbox_events_due is only
                # usable when the planner can see this condition (also in generic plans).
                OutboxEvent.status == literal_column("'pending'"),
                OutboxEvent.next_attempt_at <= self._clock.now(),
                ~blocked,
            )
            .order_by(OutboxEvent.position)
            .limit(self._batch)
            .with_for_update(skip_locked=True)
        )
        return list(session.scalars(statement))

    def _send(self, events: list[OutboxEvent]) -> list[Exception | None]:
        """Hand each event to its sink; None for a delivery, else what went wrong. Events of
        a batch belong to different aggregates, so they go out `concurrency` at a time (each
        sink call waits on another module's HTTP answer)."""
        if len(events) <= 1 or self._concurrency <= 1:
            return [self._send_one(event) for event in events]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="relay-send")
        return list(self._pool.map(self._send_one, events))

    def _send_one(self, event: OutboxEvent) -> Exception | None:
        try:
            self._sinks[event.event_type](event)
        except Exception as exc:  # recorded by _record: retried later, or parked
            return exc
        return None

    def _record(self, event: OutboxEvent, failure: Exception | None) -> int:
        now = self._clock.now()
        event.attempts += 1
        if failure is None:
            event.status, event.delivered_at, event.last_error = "delivered", now, None
            return 1
        if isinstance(failure, PermanentDeliveryError):
            event.status, event.last_error = "parked", str(failure)[:500]
            log.error("event_parked", event_type=event.event_type, event_id=str(event.event_id))
            return 0
        event.last_error = f"{type(failure).__name__}: {failure}"[:500]
        if event.attempts > len(RETRY_SCHEDULE):
            event.status = "parked"
            log.error("event_parked", event_type=event.event_type, event_id=str(event.event_id))
        else:
            event.next_attempt_at = now + RETRY_SCHEDULE[event.attempts - 1]
        return 0

    def redeliver_parked(self) -> int:
        """Put parked events back in the queue (the `relay --redeliver-parked` command)."""
        with self._database.unit_of_work() as session:
            parked = list(
                session.scalars(select(OutboxEvent).where(OutboxEvent.status == "parked"))
            )
            for event in parked:
                event.status, event.attempts, event.next_attempt_at = (
                    "pending",
                    0,
                    self._clock.now(),
                )
            return len(parked)


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
