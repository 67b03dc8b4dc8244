"""Recording one try of a delivery (the relay's third step): in a unit of work of its own, only
while the claim's lease is still the relay's; the destination's follow-up, if it has one, in a
SAVEPOINT; the delivery delivered, retried on the policy's schedule or parked; its queue's next
delivery due at once (or held back to the retry); and the attempt row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Insert, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.db.session import take_write_lock
from product_shop.events.attempts import Sent, after_try, describe, status_code
from product_shop.events.delivery import FollowUp, PendingEvent, PermanentDeliveryError, RetryPolicy
from product_shop.events.statements import ATTEMPTS, DELIVERIES
from product_shop.logging import get_logger

log = get_logger("product_shop.relay")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery as its claim left it: the event, the claim (lease) number, when it was
    queued, and whether a later event of its queue was waiting."""

    event: PendingEvent
    claim: int
    queued_at: datetime
    followed: bool  # a later event of its queue was waiting when it was claimed


class DeliveryRecorder:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        policy: RetryPolicy,
        follow_ups: Mapping[tuple[str, str], FollowUp],
    ) -> None:
        self._database = database
        self._clock = clock
        self._policy = policy
        self._follow_ups = dict(follow_ups)

    def record(self, item: Claimed, sent: Sent) -> str:
        """The outcome of one try, in its own unit of work. Returns the delivery's status
        afterwards (`lost` when the lease ran out and another relay has the delivery now)."""
        event = item.event
        if (event.destination, event.event_type) not in self._follow_ups:
            status, error = self._record_plain(item, sent)
            self._log(event, status, error)
            return status
        with self._database.unit_of_work() as session:
            take_write_lock(session)
            now = self._clock.now()
            still_ours = session.execute(
                select(DELIVERIES.c.delivery_id)
                .where(
                    DELIVERIES.c.delivery_id == event.delivery_id,
                    DELIVERIES.c.claims == item.claim,
                    DELIVERIES.c.status == literal_column("'pending'"),
                )
                .with_for_update()
            ).first()
            error = sent.error
            if still_ours is None:
                status = "lost"
                outcome = "delivered" if error is None else "failed"
            else:
                retry_at = self._retry_at(event, item.queued_at, error, now)
                error = self._follow_up(
                    session, event, sent, parks=error is not None and retry_at is None
                )
                if error is not None and sent.error is None:  # the follow-up failed
                    retry_at = self._retry_at(event, item.queued_at, error, now)
                status, values = after_try(event, error, retry_at, now)
                session.execute(
                    update(DELIVERIES)
                    .where(DELIVERIES.c.delivery_id == event.delivery_id)
                    .values(values)
                )
                _move_queue(session, item, status, retry_at, now)
                outcome = "failed" if status == "pending" else status
            session.execute(_attempt(event, sent, outcome, error))
        self._log(event, status, error)
        return status

    def _record_plain(self, item: Claimed, sent: Sent) -> tuple[str, Exception | None]:
        """`_record` for a delivery with no follow-up: three statements on a Core connection,
        the lease checked by the conditional UPDATE itself."""
        event, error = item.event, sent.error
        now = self._clock.now()
        retry_at = self._retry_at(event, item.queued_at, error, now)
        status, values = after_try(event, error, retry_at, now)
        mine = (
            DELIVERIES.c.delivery_id == event.delivery_id,
            DELIVERIES.c.claims == item.claim,
            DELIVERIES.c.status == literal_column("'pending'"),
        )
        if error is None and not item.followed and self._database.dialect == "postgresql":
            # The common case in one round trip: a data-modifying CTE marks it delivered (if
            # the lease is still ours) and the attempt row goes in, atomically.
            ours = (
                update(DELIVERIES)
                .where(*mine)
                .values(values)
                .returning(DELIVERIES.c.delivery_id)
                .cte("ours")
            )
            was_ours = select(func.count()).select_from(ours).scalar_subquery()
            with self._database.single_statement() as connection:
                count = connection.execute(
                    _attempt(event, sent, "delivered", None).add_cte(ours).returning(was_ours)
                ).scalar_one()
            return ("delivered" if count else "lost"), None
        with self._database.statements() as connection:
            found = connection.execute(
                update(DELIVERIES).where(*mine).values(values).returning(DELIVERIES.c.delivery_id)
            ).first()
            if found is None:
                outcome = "delivered" if error is None else "failed"
                status = "lost"
            else:
                _move_queue(connection, item, status, retry_at, now)
                outcome = "failed" if status == "pending" else status
            connection.execute(_attempt(event, sent, outcome, error))
        return status, error

    @staticmethod
    def _log(event: PendingEvent, status: str, error: Exception | None) -> None:
        if status == "parked":
            log.error(
                "event_parked",
                destination=event.destination,
                event_type=event.event_type,
                event_id=str(event.event_id),
                error=describe(error),
            )
        elif status == "lost":
            log.warning(
                "delivery_lease_lost",
                destination=event.destination,
                event_id=str(event.event_id),
            )

    def _follow_up(
        self, session: Session, event: PendingEvent, sent: Sent, *, parks: bool
    ) -> Exception | None:
        """The destination's follow-up for the event's type, if any, in a SAVEPOINT. Returns the
        failure to record: the send's, or the follow-up's (then the delivery is tried again)."""
        follow_up = self._follow_ups.get((event.destination, event.event_type))
        error = sent.error
        if follow_up is None or (error is not None and not parks):
            return error
        try:
            with session.begin_nested():
                if error is None:
                    follow_up.delivered(session, event, sent.result)
                else:
                    follow_up.parked(session, event, error)
        except Exception as exc:
            log.error(
                "relay_follow_up_failed",
                destination=event.destination,
                event_type=event.event_type,
                event_id=str(event.event_id),
                error=type(exc).__name__,
            )
            return exc if error is None else error
        return error

    def _retry_at(
        self, event: PendingEvent, queued_at: datetime, error: Exception | None, now: datetime
    ) -> datetime | None:
        """When a failed try is tried again; None when it parks (or did not fail)."""
        if error is None or isinstance(error, PermanentDeliveryError):
            return None
        return self._policy.next_attempt(attempts=event.attempts + 1, queued_at=queued_at, now=now)

    # Operators.


def aggregate_key(destination: str, aggregate_type: str, aggregate_id: str) -> str:
    """The queue a delivery is ordered in: one per destination and aggregate."""
    return f"{destination}|{aggregate_type}|{aggregate_id}"


def _attempt(event: PendingEvent, sent: Sent, outcome: str, error: Exception | None) -> Insert:
    """The `delivery_attempts` row of one try."""
    return insert(ATTEMPTS).values(
        delivery_id=event.delivery_id,
        attempted_at=sent.started_at,
        latency_ms=sent.latency_ms,
        outcome=outcome,
        status_code=status_code(sent.result, error),
        error=describe(error),
    )


def _move_queue(
    session: Session | Connection,
    item: Claimed,
    status: str,
    retry_at: datetime | None,
    now: datetime,
) -> None:
    """What the delivery's new status means for the rest of its queue: held back to its retry,
    or the next one due at once (only looked for when one was waiting at the claim)."""
    if status == "pending" and retry_at is not None:
        _hold_back_followers(session, item.event, retry_at)
    elif item.followed:
        _release_next(session, item.event, now)


def _hold_back_followers(
    session: Session | Connection, event: PendingEvent, retry_at: datetime
) -> None:
    """The later events of the queue cannot go before this one: they are not due before its
    retry (so claims never read them meanwhile)."""
    session.execute(
        update(DELIVERIES)
        .where(
            DELIVERIES.c.aggregate_key
            == aggregate_key(event.destination, event.aggregate_type, event.aggregate_id),
            DELIVERIES.c.status == literal_column("'pending'"),
            DELIVERIES.c.event_position > event.position,
            DELIVERIES.c.next_attempt_at < retry_at,
        )
        .values(next_attempt_at=retry_at)
    )


def _release_next(session: Session | Connection, event: PendingEvent, now: datetime) -> None:
    """The delivery behind this one in its queue (delivered or parked now) is due at once."""
    key = aggregate_key(event.destination, event.aggregate_type, event.aggregate_id)
    following = (
        select(DELIVERIES.c.delivery_id)
        .where(
            DELIVERIES.c.aggregate_key == key,
            DELIVERIES.c.status == literal_column("'pending'"),
            DELIVERIES.c.event_position > event.position,
        )
        .order_by(DELIVERIES.c.event_position)
        .limit(1)
        .scalar_subquery()
    )
    session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.delivery_id == following, DELIVERIES.c.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
