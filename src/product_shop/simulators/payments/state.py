"""The simulator's memory: its configuration, the payment intents it holds, the refunds it made,
the idempotency keys it saw and the faults queued by the test controls. One re-entrant lock
guards all of it (routes run on the event loop, test controls and callbacks on threads)."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from product_shop.simulators.faults import Fault as Fault  # re-exported: its old home
from product_shop.simulators.faults import FaultQueue

# What the hosted page takes besides a card.
WALLETS = frozenset({"apple_pay", "google_pay"})


@dataclass
class SimulatorConfig:
    api_key: str = "demo-payments-api-key"
    # core.signing.DEMO_WEBHOOK_SECRET, the API's demo default (a Standard Webhooks secret).
    webhook_secret: str = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1ub3QtZm9yLXByb2Q="  # noqa: S105
    callback_url: str | None = None
    public_url: str = "http://127.0.0.1:0"
    duplicate_callback_rate: float = 0.3
    callback_delay_seconds: float = 0.05
    slow_seconds: float = 3.0


@dataclass
class Intent:
    intent_id: str
    amount_minor: int
    currency: str
    merchant_reference: str
    created_at: str
    status: str = "requires_payment"
    transaction_ref: str | None = None
    method: str | None = None
    card_scheme: str | None = None
    card_last4: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    order_reference: str | None = None
    capture_count: int = 0
    refunded_minor: int = 0
    callbacks_sent: int = 0
    return_url: str | None = None  # the hosted page's way back to the merchant (not public)

    def public(self) -> dict[str, Any]:
        return {
            "intent_id": self.intent_id,
            "status": self.status,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "merchant_reference": self.merchant_reference,
            "transaction_ref": self.transaction_ref,
            "method": self.method,
            "card_scheme": self.card_scheme,
            "card_last4": self.card_last4,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "order_reference": self.order_reference,
            "refunded_minor": self.refunded_minor,
            "created_at": self.created_at,
        }


@dataclass
class State(FaultQueue):
    config: SimulatorConfig
    intents: dict[str, Intent] = field(default_factory=dict)
    by_transaction: dict[str, str] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (hash, result)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=random.Random)

    def authorised(self, authorization: str | None) -> bool:
        return authorization == f"Bearer {self.config.api_key}"

    def idempotent(self, key: str | None, body: dict[str, Any]) -> tuple[str | None, str | None]:
        """(the body's digest, what the key already produced): the stored result's id,
        "mismatch" when the key came with another body, None when the key is new (or absent).
        Hold the lock across this check and the store of a new result."""
        if key is None:
            return None, None
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self.lock:
            seen = self.idempotency.get(key)
        if seen is None:
            return digest, None
        if seen[0] != digest:
            return digest, "mismatch"
        return digest, seen[1]

    def record_capture(self, intent: Intent) -> None:
        """Give a just-captured intent its transaction reference (the caller holds the lock)."""
        intent.capture_count += 1
        intent.transaction_ref = "DNA-" + secrets.token_hex(8).upper()
        self.by_transaction[intent.transaction_ref] = intent.intent_id
