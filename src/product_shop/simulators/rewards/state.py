"""The simulator's memory: its configuration, the points accounts, redemptions and reversals it
holds, the idempotency keys it saw and the faults queued by the test controls. One re-entrant
lock guards all of it (routes run on the event loop, test controls, confirmation timers and
callback deliveries on threads)."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from product_shop.core.signing import DEMO_REWARDS_WEBHOOK_SECRET
from product_shop.simulators.faults import Fault as Fault  # re-exported: its old home
from product_shop.simulators.faults import FaultQueue

CURRENCY = "GBP"


@dataclass
class RewardsSimulatorConfig:
    # The API's demo `rewards_api_key`.
    api_key: str = "demo-rewards-api-key"
    # core.signing.DEMO_REWARDS_WEBHOOK_SECRET, the API's demo `rewards_webhook_secret`.
    webhook_secret: str = DEMO_REWARDS_WEBHOOK_SECRET
    # Where signed callbacks go (Product Shop's POST /v1/webhooks/rewards); None sends none.
    callback_url: str | None = None
    # Practices with rewards: practice id -> value of one point in minor units (GBP pence).
    # Every other practice has no rewards (its accounts show `enabled` false and 0 points).
    enabled_practices: dict[str, int] = field(default_factory=dict)
    # The balance a patient of an enabled practice starts with, the first time they are seen.
    default_balance_points: int = 5000
    # Confirm each redemption by itself (status `confirmed`, signed callback) this long after it
    # was made; off, a redemption stays `pending` until /_simulator/redemptions/{ref}/confirm.
    auto_confirm: bool = True
    confirm_delay_seconds: float = 0.05
    # Chance that a callback is delivered twice (same event id), as real modules do.
    duplicate_callback_rate: float = 0.3
    # Deliveries of one callback before it is given up (retried on a 5xx, a 409 or no answer).
    callback_attempts: int = 4
    callback_timeout_seconds: float = 5.0
    seed: int | None = None  # duplicate callbacks; None: different every run


@dataclass
class RedemptionRecord:
    redemption_ref: str
    reference: str  # our checkout id
    patient_id: str
    practice_id: str
    points: int
    amount_minor: int
    currency: str
    created_at: str
    status: str = "pending"  # -> confirmed
    settlement_ref: str | None = None
    confirmed_at: str | None = None
    points_reversed: int = 0
    requests: int = 1  # redemption requests answered with this one (the first and any replays)
    callbacks_sent: int = 0  # `redemption.confirmed` deliveries the receiver answered
    callbacks_failed: int = 0  # ... given up after every attempt
    confirmation: bytes | None = None  # the confirmation callback's body, fixed when confirmed

    def public(self) -> dict[str, Any]:
        """The redemption as the module shows it (POST and GET /v1/redemptions...)."""
        return {
            "redemption_ref": self.redemption_ref,
            "status": self.status,
            "reference": self.reference,
            "patient_id": self.patient_id,
            "practice_id": self.practice_id,
            "points": self.points,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "settlement_ref": self.settlement_ref,
            "points_reversed": self.points_reversed,
            "created_at": self.created_at,
            "confirmed_at": self.confirmed_at,
        }


@dataclass
class ReversalRecord:
    reversal_ref: str
    redemption_ref: str
    reference: str  # the redemption's (our checkout id)
    points: int  # reinstated: at most what was still redeemed
    points_requested: int
    reason: str
    created_at: str
    status: str = "pending"  # -> confirmed once its callback is sent
    requests: int = 1
    callbacks_sent: int = 0
    callbacks_failed: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "reversal_ref": self.reversal_ref,
            "redemption_ref": self.redemption_ref,
            "reference": self.reference,
            "points": self.points,
            "points_requested": self.points_requested,
            "reason": self.reason,
            "status": self.status,
            "created_at": self.created_at,
        }


@dataclass
class State(FaultQueue):
    config: RewardsSimulatorConfig
    # (patient_id, practice_id) -> balance in points; made the first time a patient is seen.
    accounts: dict[tuple[str, str], int] = field(default_factory=dict)
    redemptions: dict[str, RedemptionRecord] = field(default_factory=dict)
    reversals: dict[str, ReversalRecord] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (hash, ref)
    faults: dict[str, Fault] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=random.Random)
    generation: int = 0  # timers and deliveries started before a reset do nothing
    initial: RewardsSimulatorConfig | None = None  # the configuration /_simulator/reset restores

    def __post_init__(self) -> None:
        if self.config.seed is not None:
            self.rng.seed(self.config.seed)
        self.config.enabled_practices = dict(self.config.enabled_practices)
        self.initial = replace(self.config, enabled_practices=dict(self.config.enabled_practices))

    def authorised(self, authorization: str | None) -> bool:
        return authorization == f"Bearer {self.config.api_key}"

    def idempotent(self, key: str, operation: str, body: dict[str, Any]) -> tuple[str, str | None]:
        """(the request's digest, what the key already produced): the stored redemption's or
        reversal's ref, "mismatch" when the key came with another request (another body, or
        another operation: keys are one namespace), None when the key is new.
        Hold the lock across this check and the store of a new result."""
        request = {"operation": operation, "body": body}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        with self.lock:
            seen = self.idempotency.get(key)
        if seen is None:
            return digest, None
        if seen[0] != digest:
            return digest, "mismatch"
        return digest, seen[1]

    def value_per_point(self, practice_id: str) -> int | None:
        """The practice's value of one point in minor units; None when it has no rewards."""
        return self.config.enabled_practices.get(practice_id)

    def balance(self, patient_id: str, practice_id: str) -> int:
        """The patient's points at an enabled practice (opening the account with the default
        balance the first time); 0 at a practice without rewards. The caller holds the lock."""
        if self.value_per_point(practice_id) is None:
            return 0
        return self.accounts.setdefault(
            (patient_id, practice_id), self.config.default_balance_points
        )

    def account(self, patient_id: str, practice_id: str) -> dict[str, Any]:
        """The account as GET /v1/accounts/{patient_id} shows it."""
        with self.lock:
            value = self.value_per_point(practice_id)
            return {
                "patient_id": patient_id,
                "practice_id": practice_id,
                "enabled": value is not None,
                "balance_points": self.balance(patient_id, practice_id),
                "value_minor_per_point": value or 0,
                "currency": CURRENCY,
            }

    def inspect(self, redemption: RedemptionRecord) -> dict[str, Any]:
        with self.lock:
            return {
                **redemption.public(),
                "reversal_count": sum(
                    1
                    for r in self.reversals.values()
                    if r.redemption_ref == redemption.redemption_ref
                ),
                "requests": redemption.requests,
                "callbacks_sent": redemption.callbacks_sent,
                "callbacks_failed": redemption.callbacks_failed,
            }

    def inspect_reversal(self, reversal: ReversalRecord) -> dict[str, Any]:
        with self.lock:
            return {
                **reversal.public(),
                "requests": reversal.requests,
                "callbacks_sent": reversal.callbacks_sent,
                "callbacks_failed": reversal.callbacks_failed,
            }


def new_ref(prefix: str) -> str:
    """`RM-RD-...` (redemption), `RM-RV-...` (reversal), `RM-ST-...` (settlement)."""
    return f"{prefix}-{secrets.token_hex(8).upper()}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
