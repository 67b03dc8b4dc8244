"""The simulator's memory: its configuration, the shipments it holds, the idempotency keys it saw,
the faults and refusals queued by the test controls, and the callbacks waiting to be delivered or
held back. One re-entrant lock guards all of it (routes run on the event loop, test controls,
the timeline and the callback worker on threads)."""

from __future__ import annotations

import hashlib
import json
import queue
import random
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from product_shop.core.signing import DEMO_SUPPLIER_WEBHOOK_SECRET
from product_shop.simulators.faults import Fault as Fault  # re-exported: its old home
from product_shop.simulators.faults import FaultQueue
from product_shop.simulators.timeline import Timeline

# The order a shipment moves in; `exception` can interrupt any step before `delivered`, and a
# cancellation any before `dispatched` (also an `exception` raised before dispatch).
PROGRESSION = ("accepted", "dispatched", "in_transit", "delivered")
# Statuses a shipment moves no further from (on its own or by a test control); only a
# cancellation may still take an undispatched `exception` to `cancelled`.
FINAL = frozenset({"delivered", "exception", "cancelled"})
ExceptionReasonCode = Literal["out_of_stock", "address_problem", "lost", "damaged", "other"]
RefusalCode = Literal["out_of_stock", "address_problem", "invalid_shipment"]
# A delivery postcode the network always refuses as `address_problem` (spaces and case ignored).
UNDELIVERABLE_POSTCODE = "XX0 0XX"
# Carriers the network hands parcels to: (name, slug in the tracking URL, tracking number format).
CARRIERS = (
    ("Royal Mail", "royal-mail", "royal_mail"),
    ("DPD", "dpd", "digits14"),
    ("Evri", "evri", "evri"),
)


@dataclass
class SupplierSimulatorConfig:
    api_key: str = "demo-suppliers-api-key"
    # core.signing.DEMO_SUPPLIER_WEBHOOK_SECRET, the API's demo `supplier_webhook_secret`.
    webhook_secret: str = DEMO_SUPPLIER_WEBHOOK_SECRET
    # Where signed callbacks go (Product Shop's POST /v1/webhooks/suppliers); None sends none.
    callback_url: str | None = None
    # Public tracking pages: `{tracking_base_url}/{carrier slug}/{tracking number}`.
    tracking_base_url: str = "https://track.example-carrier.test/parcel"
    # With auto_advance, each step happens this long after the shipment was accepted.
    dispatch_after_seconds: float = 3.0
    in_transit_after_seconds: float = 6.0
    deliver_after_seconds: float = 12.0
    auto_advance: bool = True
    # Chance that a callback is delivered twice (same event id), as real networks do.
    duplicate_rate: float = 0.0
    # Deliveries of one callback before it is given up (retried on a 5xx, a 409 or no answer).
    callback_attempts: int = 4
    callback_timeout_seconds: float = 5.0
    seed: int | None = None  # carriers and tracking numbers; None: different every run


@dataclass
class Refusal:
    code: str
    times: int = 1
    reference: str | None = None  # only submissions for this line item; None: any


@dataclass
class ShipmentRecord:
    shipment_id: str
    reference: str
    order_id: str
    practice_id: str
    items: list[dict[str, Any]]
    delivery_address: dict[str, Any]
    status: str = "accepted"
    sequence: int = 1
    occurred_at: str = ""
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    dispatched_at: str | None = None
    delivered_at: str | None = None
    exception_reason: str | None = None
    requests: int = 1  # submissions answered with this shipment (the first and any replays)
    cancellations: int = 0  # cancellations answered with this shipment (any replays included)
    callbacks_sent: int = 0  # callback deliveries the receiver answered
    callbacks_failed: int = 0  # callback deliveries given up after every attempt

    def public(self) -> dict[str, Any]:
        """The shipment as the network shows it: the API's answer and a callback's `data`."""
        return {
            "shipment_id": self.shipment_id,
            "reference": self.reference,
            "status": self.status,
            "sequence": self.sequence,
            "occurred_at": self.occurred_at,
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "tracking_url": self.tracking_url,
            "dispatched_at": self.dispatched_at,
            "delivered_at": self.delivered_at,
            "exception_reason": self.exception_reason,
        }


@dataclass(frozen=True)
class Callback:
    """One signed callback to send: its body is fixed when the change happens, so a duplicate
    is the same bytes under the same event id (only the signature's timestamp differs)."""

    url: str
    event_id: str
    shipment_id: str
    body: bytes
    generation: int  # deliveries queued before a reset are dropped


@dataclass
class State(FaultQueue):
    config: SupplierSimulatorConfig
    shipments: dict[str, ShipmentRecord] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (hash, id)
    faults: dict[str, Fault] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=random.Random)
    # Callbacks: a FIFO worked by one thread (so they leave in the order the changes happened),
    # or held back by a test control until released.
    outbox: queue.Queue[Callback | None] = field(default_factory=queue.Queue)
    holding: bool = False
    held: list[Callback] = field(default_factory=list)
    generation: int = 0
    worker: threading.Thread | None = None
    # auto_advance's steps, one thread for every shipment (not a timer thread per step).
    timeline: Timeline = field(default_factory=lambda: Timeline("supplier-simulator-steps"))
    initial: SupplierSimulatorConfig | None = None  # the configuration /_simulator/reset restores

    def __post_init__(self) -> None:
        if self.config.seed is not None:
            self.rng.seed(self.config.seed)
        self.initial = replace(self.config)

    def authorised(self, authorization: str | None) -> bool:
        return authorization == f"Bearer {self.config.api_key}"

    def take_refusal(self, reference: str) -> str | None:
        """The code of the first refusal queued for this line item (or any), counting its use."""
        with self.lock:
            for refusal in self.refusals:
                if refusal.reference in (None, reference):
                    refusal.times -= 1
                    if refusal.times <= 0:
                        self.refusals.remove(refusal)
                    return refusal.code
            return None

    def idempotent(self, key: str, body: dict[str, Any]) -> tuple[str, str | None]:
        """(the body's digest, what the key already produced): the stored shipment's id,
        "mismatch" when the key came with another body, None when the key is new.
        Hold the lock across this check and the store of a new shipment."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self.lock:
            seen = self.idempotency.get(key)
        if seen is None:
            return digest, None
        if seen[0] != digest:
            return digest, "mismatch"
        return digest, seen[1]

    def submissions(self, reference: str) -> int:
        """Shipments made for one line item (a second one means a submission was duplicated)."""
        with self.lock:
            return sum(1 for s in self.shipments.values() if s.reference == reference)

    def latest(self, reference: str) -> ShipmentRecord | None:
        """The shipment last made for one line item (our reference), if any."""
        with self.lock:
            found = None
            for shipment in self.shipments.values():  # in the order they were made
                if shipment.reference == reference:
                    found = shipment
            return found

    def inspect(self, shipment: ShipmentRecord) -> dict[str, Any]:
        with self.lock:
            return {
                **shipment.public(),
                "order_id": shipment.order_id,
                "practice_id": shipment.practice_id,
                "items": shipment.items,
                "delivery_address": shipment.delivery_address,
                "requests": shipment.requests,
                "cancellations": shipment.cancellations,
                "submissions": self.submissions(shipment.reference),
                "callbacks_sent": shipment.callbacks_sent,
                "callbacks_failed": shipment.callbacks_failed,
            }


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
