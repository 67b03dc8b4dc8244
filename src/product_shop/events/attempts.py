"""One try of a delivery: calling the sink, timing it, and what its outcome makes of the row."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from product_shop.core.clock import Clock
from product_shop.events.delivery import DeliveryFailed, PendingEvent, Sink


@dataclass(frozen=True, slots=True)
class Sent:
    """One sink call: what it returned or raised, when it started and how long it took."""

    result: object
    error: Exception | None
    started_at: datetime
    latency_ms: int


def status_after(error: Exception | None, retry_at: datetime | None) -> str:
    """A delivery's status after a try: delivered; or pending until `retry_at`; or parked (no
    retry: the horizon passed, or trying again cannot help)."""
    if error is None:
        return "delivered"
    return "parked" if retry_at is None else "pending"


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
