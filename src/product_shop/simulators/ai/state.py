"""The simulator's memory: its configuration (API key, failure rate, latency, malformed answers),
the one-off faults queued by the test controls and the requests it received. One re-entrant lock
guards all of it (the API route runs on the event loop, the test controls on the thread pool)."""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from product_shop.simulators.faults import Fault, FaultQueue

ENGINE = {"name": "platform-ai-simulator", "version": "1"}

# How an answer can break the contract, each on purpose (`malformed`):
# - unknown_product: the first suggestion is for a product that is not among the candidates
# - bad_product_id: the first suggestion's product id is not a UUID
# - duplicate: the first suggestion is repeated (second; still within the limit if it allows two)
# - too_many: one suggestion more than `limit` (the candidates, matching or not)
# - score_out_of_range: the first suggestion scores 1001
# - score_not_int: the first suggestion scores 500.5
# - unordered: the suggestions worst first (with at least two scores that differ)
# - empty_rationale / missing_rationale / long_rationale (1001 characters): the first one's
# - no_engine: the answer has no `engine`
# - not_json: 200 with an HTML body
# - not_an_object: 200 with a JSON list
Malformed = Literal[
    "unknown_product",
    "bad_product_id",
    "duplicate",
    "too_many",
    "score_out_of_range",
    "score_not_int",
    "unordered",
    "empty_rationale",
    "missing_rationale",
    "long_rationale",
    "no_engine",
    "not_json",
    "not_an_object",
]
MALFORMED_MODES: tuple[str, ...] = get_args(Malformed)


@dataclass
class AiSimulatorConfig:
    # The API's demo `ai_service_api_key`.
    api_key: str = "demo-ai-service-api-key"
    # Chance that a request is answered 503 `simulated_failure` (0..1).
    failure_rate: float = 0.0
    # How long every answer takes (seconds), on top of any queued delay.
    latency_seconds: float = 0.0
    # Every answer breaks the contract this way (None: answers are the contract's).
    malformed: Malformed | None = None
    # Requests kept for GET /_simulator/requests (the oldest are dropped first).
    max_recorded: int = 1000
    seed: int | None = None  # the failure rate's draws; None: different every run


@dataclass
class State(FaultQueue):
    config: AiSimulatorConfig
    requests: deque[dict[str, Any]] = field(default_factory=deque)
    received: int = 0  # every request to /v1/suggestions, recorded or dropped since
    faults: dict[str, Fault] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=random.Random)
    initial: AiSimulatorConfig | None = None  # the configuration /_simulator/reset restores

    def __post_init__(self) -> None:
        self.requests = deque(maxlen=max(1, self.config.max_recorded))
        self.rng.seed(self.config.seed)
        self.initial = replace(self.config)

    def authorised(self, authorization: str | None) -> bool:
        return authorization == f"Bearer {self.config.api_key}"

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.received += 1
            self.requests.append({"sequence": self.received, **entry})

    def fails(self) -> bool:
        """Whether this request is one the failure rate makes fail."""
        with self.lock:
            rate = self.config.failure_rate
            return rate > 0 and self.rng.random() < rate

    def reset(self) -> None:
        """The configuration as at start; faults and recorded requests gone; draws reseeded."""
        with self.lock:
            if self.initial is not None:
                self.config = replace(self.initial)
            self.faults.clear()
            self.requests.clear()
            self.received = 0
            self.rng.seed(self.config.seed)

    def public_config(self) -> dict[str, Any]:
        with self.lock:
            return {
                "failure_rate": self.config.failure_rate,
                "latency_seconds": self.config.latency_seconds,
                "malformed": self.config.malformed,
            }


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
