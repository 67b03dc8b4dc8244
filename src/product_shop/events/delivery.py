"""What a sink is given and what it may answer: the contract between the relay and the code that
carries an event to one destination (a webhook, a JetStream subject, another module's API).

A sink is a callable taking a `PendingEvent`. It returns normally when the destination has the
event (what it returns goes to the destination's follow-up, if any, and its `status_code`, if
it has one, to the attempt's record); it raises `DeliveryFailed` (or any exception) to be tried
again later, and `PermanentDeliveryError` when trying again cannot help (the event is parked at
once). `RetryPolicy` says when the next try is and when the relay stops trying.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A claimed delivery of one outbox event to one destination, as a sink sees it."""

    delivery_id: int
    destination: str
    position: int
    event_id: uuid.UUID
    event_type: str
    source: str
    subject: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    data: dict[str, Any]
    attempts: int  # earlier tries of this delivery


# A sink delivers one event to its destination; what it returns goes to the follow-up.
Sink = Callable[[PendingEvent], object]


class DeliveryFailed(Exception):
    """The destination did not take the event this time; `status_code` is its HTTP answer, if
    there was one."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class PermanentDeliveryError(DeliveryFailed):
    """The destination refused the event for good: park it without further tries."""


class FollowUp(Protocol):
    """What the relay records after an event of one type reached one destination or was parked
    for good (e.g. a shipment accepted by the supplier network: its line moves on). It runs in
    the unit of work that records the delivery: if it fails, the delivery is tried again."""

    def delivered(self, session: Session, event: PendingEvent, result: object) -> None: ...

    def parked(self, session: Session, event: PendingEvent, error: Exception) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, up to a horizon, then parked (as Stripe retries webhooks
    for about three days). The n-th failed try waits `base * 2**(n-1)`, at most `cap`, scaled
    by a random factor in [0.5, 1] so that a receiver coming back is not hit by every relay at
    once; a delivery whose next try would fall beyond `horizon` after it was queued is parked."""

    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=6)
    horizon: timedelta = timedelta(days=3)
    jitter: Callable[[], float] = random.random  # in [0, 1)

    def next_attempt(self, *, attempts: int, queued_at: datetime, now: datetime) -> datetime | None:
        """When to try again after `attempts` failed tries, or None: park it."""
        exponent = min(attempts - 1, 40)
        delay = min(self.cap, self.base * (2**exponent))
        delay = delay * (0.5 + self.jitter() / 2)
        at = now + delay
        return None if at > queued_at + self.horizon else at

    def longest_wait(self, attempts: int) -> timedelta:
        """The most the next try after `attempts` failures can wait (for tests and docs)."""
        longest: timedelta = min(self.cap, self.base * (2 ** min(attempts - 1, 40)))
        return longest


def by_event_type(sinks: Mapping[str, Sink]) -> Sink:
    """One destination's sink made of one sink per event type (another module's API has a call
    per kind of request); a type the destination has no call for is refused for good."""
    table = dict(sinks)

    def dispatch(event: PendingEvent) -> object:
        sink = table.get(event.event_type)
        if sink is None:
            raise PermanentDeliveryError(
                f"{event.destination} takes no {event.event_type} events (check event_routes)"
            )
        return sink(event)

    return dispatch
