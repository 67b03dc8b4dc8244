"""Recording one try of a delivery (the relay's third step): in a unit of work of its own, only
while the claim's lease is still the relay's: the delivery delivered, retried on the policy's
schedule or parked; the attempt row; the destination's follow-up, if it has one (if it fails,
all of it is rolled back and the delivery is recorded as failed); and its queue's next delivery
due at once (or held back to the retry)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.db.session import take_write_lock
from product_shop.events.attempts import Sent, describe, status_after, status_code
from product_shop.events.delivery import FollowUp, PendingEvent, PermanentDeliveryError, RetryPolicy
from product_shop.events.statements import ATTEMPT, HOLD_BACK, MARK, MARKED, RELEASE_NEXT
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


class _FollowUpFailed(Exception):
    """A destination's follow-up raised: its unit of work is rolled back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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
        now = self._clock.now()
        retry_at = self._retry_at(event, item.queued_at, sent.error, now)
        follow_up = self._follow_ups.get((event.destination, event.event_type))
        if follow_up is not None and (sent.error is None or retry_at is None):
            try:
                status = self._record_with_follow_up(item, sent, follow_up, retry_at, now)
            except _FollowUpFailed as failed:
                # Rolled back, the follow-up's writes with the rest: the delivery is tried again
                # (or, already given up on, parked without its follow-up).
                log.error(
                    "relay_follow_up_failed",
                    destination=event.destination,
                    event_type=event.event_type,
                    event_id=str(event.event_id),
                    error=type(failed.error).__name__,
                )
                if sent.error is None:
                    sent = replace(sent, error=failed.error)
                status = self._record_plain(item, sent)
        else:
            status = self._record_plain(item, sent)
        self._log(event, status, sent.error)
        return status

    def _record_with_follow_up(
        self,
        item: Claimed,
        sent: Sent,
        follow_up: FollowUp,
        retry_at: datetime | None,
        now: datetime,
    ) -> str:
        """A delivery made, or given up on, whose destination has a follow-up: the delivery
        row, its attempt and the follow-up's writes in one unit of work. The conditional UPDATE
        checks the lease; a follow-up that raises rolls all of it back (`_FollowUpFailed`)."""
        event, error = item.event, sent.error
        status = status_after(error, retry_at)
        with self._database.unit_of_work() as session:
            take_write_lock(session)
            if not self._mark(session, _outcome_params(item, sent, status, retry_at, now)):
                return "lost"
            try:
                if error is None:
                    follow_up.delivered(session, event, sent.result)
                else:
                    follow_up.parked(session, event, error)
            except Exception as exc:
                raise _FollowUpFailed(exc) from exc
            _move_queue(session, item, status, retry_at, now)
        return status

    def _mark(self, session: Session | Connection, params: dict[str, Any]) -> bool:
        """The delivery row's new values and its attempt row, if the lease is still ours (on
        PostgreSQL in one statement). False when it is not: then only the attempt is recorded."""
        if self._database.dialect == "postgresql":
            return bool(session.execute(MARKED, params).scalar_one())
        mine = session.execute(MARK, params).first() is not None
        if not mine:
            params = {**params, "outcome_": params["sent_outcome"]}
        session.execute(ATTEMPT, params)
        return mine

    def _record_plain(self, item: Claimed, sent: Sent) -> str:
        """A delivery's outcome without a follow-up: on a Core connection, the lease checked by
        the conditional UPDATE itself."""
        now = self._clock.now()
        retry_at = self._retry_at(item.event, item.queued_at, sent.error, now)
        status = status_after(sent.error, retry_at)
        params = _outcome_params(item, sent, status, retry_at, now)
        if status == "delivered" and not item.followed and self._database.dialect == "postgresql":
            # The common case in one round trip, autocommit: nothing else to write.
            with self._database.single_statement() as connection:
                mine = connection.execute(MARKED, params).scalar_one()
            return "delivered" if mine else "lost"
        with self._database.statements() as connection:
            if not self._mark(connection, params):
                return "lost"
            _move_queue(connection, item, status, retry_at, now)
        return status

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


def _outcome_params(
    item: Claimed, sent: Sent, status: str, retry_at: datetime | None, now: datetime
) -> dict[str, Any]:
    """The parameters of `MARK`, `ATTEMPT` and `MARKED` for one try's outcome."""
    event, error = item.event, sent.error
    described = describe(error)
    return {
        "the_delivery": event.delivery_id,
        "the_claim": item.claim,
        "new_status": status,
        "new_attempts": event.attempts + 1,
        "new_error": described,
        "delivered_at_": now if status == "delivered" else None,
        "parked_at_": now if status == "parked" else None,
        "retry_at": retry_at if status == "pending" else None,
        "attempted_at_": sent.started_at,
        "latency_ms_": sent.latency_ms,
        "outcome_": "failed" if status == "pending" else status,
        # When the lease had run out meanwhile: what the send alone says.
        "sent_outcome": "delivered" if error is None else "failed",
        "status_code_": status_code(sent.result, error),
        "error_": described,
    }


def _move_queue(
    session: Session | Connection,
    item: Claimed,
    status: str,
    retry_at: datetime | None,
    now: datetime,
) -> None:
    """What the delivery's new status means for the rest of its queue: held back to its retry
    (`HOLD_BACK`), or the next one due at once (`RELEASE_NEXT`; only looked for when one was
    waiting at the claim)."""
    event = item.event
    key = aggregate_key(event.destination, event.aggregate_type, event.aggregate_id)
    if status == "pending" and retry_at is not None:
        session.execute(HOLD_BACK, {"key": key, "position": event.position, "retry_at": retry_at})
    elif item.followed:
        session.execute(RELEASE_NEXT, {"key": key, "position": event.position, "now": now})
