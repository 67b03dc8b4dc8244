"""The relay in the background: one loop per destination."""

from __future__ import annotations

import threading

from product_shop.events.relay import OutboxRelay, Round
from product_shop.logging import get_logger

log = get_logger("product_shop.relay")


class RelayThread:
    """Runs the relay in the background: one loop per destination (a slow or hung receiver holds
    back only its own deliveries), each routing what is new before it delivers."""

    def __init__(self, relay: OutboxRelay, interval_seconds: float = 1.0) -> None:
        self._relay = relay
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._loop, args=(destination,), name=f"relay-{destination}", daemon=True
            )
            for destination in relay.destinations
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _loop(self, destination: str) -> None:
        pause = self._interval
        while not self._stop.wait(pause):
            try:
                self._relay.route()
                done = self._relay.deliver_round(destination)
            except Exception:
                log.exception("relay_run_failed", destination=destination)
                done = Round()
            # A full batch: more is waiting, go on at once (a backlog drains without pauses).
            # Less: wait the interval, so a steady trickle goes out in batches, not a claim
            # (several round trips) per event.
            pause = 0 if done.claimed >= self._relay.batch else self._interval
