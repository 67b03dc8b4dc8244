"""Work a simulator does later, at a set time, on one thread for all of it: a heap of due steps
and a thread that sleeps until the next one. A `threading.Timer` per step starts a thread each
time and keeps it asleep until then; a network that accepts thousands of shipments, each with
three steps ahead of it, would hold thousands of sleeping threads. Steps must be short and must
not block (they change the simulator's memory and queue what goes over the network for a worker
of its own); steps due at the same moment run in the order they were added."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from product_shop.logging import get_logger

log = get_logger("product_shop.simulators")

Step = tuple[float, int, Callable[..., None], tuple[Any, ...]]


class Timeline:
    def __init__(self, name: str = "simulator-timeline") -> None:
        self._name = name
        self._due: list[Step] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, step: Callable[..., None], *args: Any) -> None:
        """Run `step(*args)` `seconds` from now (at once for 0 or less)."""
        with self._changed:
            heapq.heappush(
                self._due, (time.monotonic() + max(seconds, 0.0), next(self._order), step, args)
            )
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._changed.notify()

    def pending(self) -> int:
        """Steps not run yet."""
        with self._changed:
            return len(self._due)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._changed.wait(wait)
                _at, _order, step, args = heapq.heappop(self._due)
            try:
                step(*args)
            except Exception:  # one step's failure must not stop every later one
                log.exception("simulator_step_failed", step=getattr(step, "__name__", "?"))
