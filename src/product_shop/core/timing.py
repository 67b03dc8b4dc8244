"""Per-request server timings, reported in the standard `Server-Timing` response header
(payment-intent, payment-confirm, order-create), so clients and the benchmark see where time goes.

The middleware starts a dict per request in a context variable; worker threads get a copy of the
context that points at the same dict, so what they record reaches the response."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_timings: ContextVar[dict[str, float] | None] = ContextVar("server_timings", default=None)


def begin_request() -> dict[str, float]:
    timings: dict[str, float] = {}
    _timings.set(timings)
    return timings


@contextmanager
def timed(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings = _timings.get()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + (time.perf_counter() - started) * 1000


def header_value(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={duration:.2f}" for name, duration in timings.items())
