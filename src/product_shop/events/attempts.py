"""One try of a delivery: calling the sink, timing it, and what its outcome makes of the row."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from product_shop.core.clock import Clock
from product_shop.events.delivery import DeliveryFailed, PendingEvent, Sink


@dataclass(frozen=True, slots=True)
class Sent:
    """One sink call: what it returned or raised, when it started and how long it took."""

    result: object
    error: Exception | None
    started_at: datetime
    latency_ms: int


def after_try(
    event: PendingEvent, error: Exception | None, retry_at: datetime | None, now: datetime
) -> tuple[str, dict[str, Any]]:
    """The delivery's status after a try, and the row's new values."""
    attempts = event.attempts + 1
    if error is None:
        return "delivered", {
            "status": "delivered",
            "delivered_at": now,
            "attempts": attempts,
            "last_error": None,
        }
    if retry_at is None:
        return "parked", {
            "status": "parked",
            "parked_at": now,
            "attempts": attempts,
            "last_error": describe(error),
        }
    return "pending", {
        "attempts": attempts,
        "next_attempt_at": retry_at,
        "last_error": describe(error),
    }


def send_one(sink: Sink, event: PendingEvent, clock: Clock) -> Sent:
    started_at = clock.now()
    began = time.perf_counter()
    try:
        result = sink(event)
        error: Exception | None = None
    except Exception as exc:  # recorded: retried later, or parked
        result, error = None, exc
    latency_ms = round((time.perf_counter() - began) * 1000)
    return Sent(result=result, error=error, started_at=started_at, latency_ms=latency_ms)


def status_code(result: object, error: Exception | None) -> int | None:
    if isinstance(error, DeliveryFailed):
        return error.status_code
    if error is None:
        code = getattr(result, "status_code", None)
        return code if isinstance(code, int) else None
    return None


def describe(error: Exception | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, DeliveryFailed):
        return str(error)[:500]
    return f"{type(error).__name__}: {error}"[:500]
