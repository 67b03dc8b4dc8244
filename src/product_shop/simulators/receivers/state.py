"""The simulator's memory: one inbox per destination (its secret, the events it recorded in arrival
order, the webhook ids it has seen, its counters and the fault set on it). One lock guards all of
it: the receiving route runs on the event loop, the test controls on the thread pool."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from product_shop.core.signing import DEFAULT_TOLERANCE_SECONDS, demo_destination_secret
from product_shop.events.routing import FEED_DESTINATIONS
from product_shop.events.types import PREFIX

FaultMode = Literal["fail", "hang", "slow", "down"]
Counter = Literal["duplicates", "refused", "failed"]


def demo_secrets() -> dict[str, str]:
    """Every feed destination (the ones our relay reaches by webhook) with its demo secret."""
    return {d.value: demo_destination_secret(d.value) for d in FEED_DESTINATIONS}


@dataclass
class ReceiversSimulatorConfig:
    # Destination key -> its Standard Webhooks secret (`whsec_...`); a destination not named
    # here does not exist (404). Default: the demo secret of every FEED_DESTINATIONS key.
    secrets: dict[str, str] = field(default_factory=demo_secrets)
    # How far `webhook-timestamp` may be from the simulator's clock (0..300 seconds).
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS


@dataclass
class ReceiverFault:
    """How one destination misbehaves, set by the test controls until cleared or used up.

    - fail: answer `status` at once, record nothing.
    - hang: sleep `seconds`, then answer `status`, record nothing (the sender has usually given
      up by then: its read timeout).
    - slow: sleep `seconds`, then record and answer as usual (past the sender's read timeout the
      event is recorded all the same, and the sender's retry is a duplicate).
    - down: answer `status` to every request, signed or not, until cleared (`count` is None).
    """

    mode: FaultMode
    status: int = 503
    seconds: float = 0.0
    count: int | None = None  # deliveries it still applies to; None: until cleared

    def public(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": self.status,
            "seconds": self.seconds,
            "count": self.count,
        }


@dataclass(frozen=True)
class ReceivedEvent:
    sequence: int  # per destination, from 1, in arrival order
    destination: str
    webhook_id: str
    type: str
    source: str
    subject: str | None
    data: Any
    time: str | None  # the CloudEvents `time` (when it happened)
    received_at: str  # the simulator's clock when it was recorded

    def public(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "destination": self.destination,
            "webhook_id": self.webhook_id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "data": self.data,
            "time": self.time,
            "received_at": self.received_at,
        }

    def matches(self, event_type: str | None, subject: str | None, order_id: str | None) -> bool:
        """The received-list filters: `event_type` full or without `com.primoro.productshop.`,
        `subject` exact, `order_id` the data's `order_id` or the subject."""
        if event_type is not None:
            full = event_type if event_type.startswith(PREFIX) else PREFIX + event_type
            if self.type not in (event_type, full):
                return False
        if subject is not None and self.subject != subject:
            return False
        if order_id is not None:
            data_order = self.data.get("order_id") if isinstance(self.data, dict) else None
            if order_id not in (data_order, self.subject):
                return False
        return True


@dataclass
class Inbox:
    destination: str
    secret: str
    events: list[ReceivedEvent] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # webhook id -> its event's sequence
    duplicates: int = 0  # deliveries of an id already recorded (answered 200, not recorded)
    refused: int = 0  # deliveries refused as not authentic or not a CloudEvent (401, 400, 415)
    failed: int = 0  # deliveries answered with a fault's failure (fail, hang, down)
    fault: ReceiverFault | None = None

    def counts(self) -> dict[str, int]:
        return {
            "events": len(self.events),
            "duplicates": self.duplicates,
            "refused": self.refused,
            "failed": self.failed,
        }


@dataclass
class State:
    config: ReceiversSimulatorConfig
    inboxes: dict[str, Inbox] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.inboxes = {key: Inbox(key, secret) for key, secret in self.config.secrets.items()}

    def inbox(self, destination: str) -> Inbox | None:
        return self.inboxes.get(destination)

    def take_fault(self, inbox: Inbox, modes: tuple[FaultMode, ...]) -> ReceiverFault | None:
        """The destination's fault if it is one of `modes`, counting one use of it (gone after
        its last); a copy, so clearing it meanwhile changes nothing for this delivery."""
        with self.lock:
            found = inbox.fault
            if found is None or found.mode not in modes:
                return None
            if found.count is not None:
                found.count -= 1
                if found.count <= 0:
                    inbox.fault = None
            return ReceiverFault(found.mode, found.status, found.seconds, found.count)

    def set_fault(self, inbox: Inbox, fault: ReceiverFault | None) -> None:
        with self.lock:
            inbox.fault = fault

    def fault_of(self, inbox: Inbox) -> dict[str, Any] | None:
        with self.lock:
            return inbox.fault.public() if inbox.fault else None

    def bump(self, inbox: Inbox, counter: Counter) -> None:
        with self.lock:
            setattr(inbox, counter, getattr(inbox, counter) + 1)

    def record(self, inbox: Inbox, event: dict[str, Any]) -> tuple[int, bool]:
        """Record a validated CloudEvent unless its id was seen: (its sequence, whether it was
        new). The dedupe check and the append are one step under the lock."""
        webhook_id = str(event["id"])
        with self.lock:
            seen = inbox.seen.get(webhook_id)
            if seen is not None:
                inbox.duplicates += 1
                return seen, False
            sequence = len(inbox.events) + 1
            inbox.events.append(
                ReceivedEvent(
                    sequence=sequence,
                    destination=inbox.destination,
                    webhook_id=webhook_id,
                    type=event["type"],
                    source=event["source"],
                    subject=event.get("subject"),
                    data=event.get("data"),
                    time=event.get("time"),
                    received_at=now_iso(),
                )
            )
            inbox.seen[webhook_id] = sequence
            return sequence, True

    def received(
        self,
        inbox: Inbox,
        event_type: str | None = None,
        subject: str | None = None,
        order_id: str | None = None,
    ) -> dict[str, Any]:
        """GET /_simulator/{destination}/received: the events (filtered) and the counters."""
        with self.lock:
            events = [e.public() for e in inbox.events if e.matches(event_type, subject, order_id)]
            return {"destination": inbox.destination, "events": events, **_counters(inbox)}

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"destinations": {key: i.counts() for key, i in self.inboxes.items()}}

    def clear_received(self) -> None:
        """Forget every event, webhook id and counter (faults stay until cleared)."""
        with self.lock:
            for inbox in self.inboxes.values():
                inbox.events.clear()
                inbox.seen.clear()
                inbox.duplicates = inbox.refused = inbox.failed = 0


def _counters(inbox: Inbox) -> dict[str, int]:
    counts = inbox.counts()
    del counts["events"]
    return counts


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
