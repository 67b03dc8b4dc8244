"""The simulator's memory: its configuration, the events it made (each kept as the exact bytes it
sends, so every copy is the same) and a log of every delivery. One re-entrant lock guards all of
it (the test controls run on the thread pool, several at once)."""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from product_shop.core.signing import DEMO_APPOINTMENTS_WEBHOOK_SECRET


@dataclass
class AppointmentsSimulatorConfig:
    # core.signing.DEMO_APPOINTMENTS_WEBHOOK_SECRET, the API's demo `appointments_webhook_secret`.
    webhook_secret: str = DEMO_APPOINTMENTS_WEBHOOK_SECRET
    # Where signed events go (Product Shop's POST /v1/webhooks/appointments); None sends none.
    callback_url: str | None = None
    # Chance that an event is delivered twice (same id, same bytes), as real modules do.
    duplicate_rate: float = 0.3
    # Deliveries of one copy before it is given up (retried on a 5xx, a 409 or no answer).
    callback_attempts: int = 4
    callback_timeout_seconds: float = 5.0
    # The pause before a retry, times the attempt number (0.2 s, 0.4 s, 0.6 s, ...).
    retry_pause_seconds: float = 0.2
    # Deliveries kept for GET /_simulator/sent (the oldest are dropped first).
    max_recorded: int = 1000
    seed: int | None = None  # duplicate deliveries; None: different every run


@dataclass
class EventRecord:
    event_id: str
    type: str
    data: dict[str, Any]
    body: bytes  # what every copy carries, fixed when the event was made


@dataclass
class State:
    config: AppointmentsSimulatorConfig
    events: dict[str, EventRecord] = field(default_factory=dict)
    sent: deque[dict[str, Any]] = field(default_factory=deque)
    deliveries: int = 0  # every copy sent (or given up), recorded or dropped since
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=random.Random)
    generation: int = 0  # deliveries started before a reset try no more
    initial: AppointmentsSimulatorConfig | None = None  # what /_simulator/reset restores

    def __post_init__(self) -> None:
        self.sent = deque(maxlen=max(1, self.config.max_recorded))
        self.rng.seed(self.config.seed)
        self.initial = replace(self.config)

    def copies(self) -> int:
        """1, or 2 at the duplicate rate."""
        with self.lock:
            rate = self.config.duplicate_rate
            return 2 if rate > 0 and self.rng.random() < rate else 1

    def log(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.deliveries += 1
            self.sent.append({"sequence": self.deliveries, **entry})

    def reset(self) -> None:
        """Events and the delivery log gone, deliveries under way stopped, the configuration as
        at start, draws reseeded."""
        with self.lock:
            self.generation += 1
            if self.initial is not None:
                self.config = replace(self.initial)
            self.events.clear()
            self.sent.clear()
            self.deliveries = 0
            self.rng.seed(self.config.seed)

    def public_config(self) -> dict[str, Any]:
        with self.lock:
            return {
                "callback_url": self.config.callback_url,
                "duplicate_rate": self.config.duplicate_rate,
                "callback_attempts": self.config.callback_attempts,
                "retry_pause_seconds": self.config.retry_pause_seconds,
            }


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
