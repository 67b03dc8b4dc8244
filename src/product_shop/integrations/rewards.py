"""Rewards Manager: patients' loyalty points (spec §5.4, §11.1, §11.2).

The port names what Product Shop needs; `HttpRewardsManager` speaks the module's HTTP contract
(served for the demo and tests by `simulators.rewards`). Product Shop never changes a points
balance: Rewards Manager deducts points when it confirms a redemption, and reinstates them when
it acts on a reversal request.

Contract (Bearer API key on every route):
- GET  /v1/accounts/{patient_id}?practice_id=... -> `{"patient_id", "practice_id", "enabled",
  "balance_points", "value_minor_per_point", "currency"}`; `enabled` false where the practice has
  no rewards (the balance and `value_minor_per_point` are then 0).
- POST /v1/redemptions (Idempotency-Key) `{"patient_id", "practice_id", "points",
  "amount_minor", "currency", "reference"}` (`reference`: our checkout id) -> 202
  `{"redemption_ref", "status": "pending", ...}`. Rewards Manager then deducts the points and
  confirms by a signed callback; a repeated key answers the first redemption (as it is now, so
  possibly `confirmed`). The answer is the redemption as GET shows it (`redemption_ref`,
  `status`, `reference`, `patient_id`, `practice_id`, `points`, `amount_minor`, `currency`,
  `settlement_ref`, `points_reversed`, ...). Refusals (4xx problem+json `code`):
  `rewards_disabled`, `insufficient_points`, `amount_mismatch` (the points at the practice's
  value per point are not the amount, or the currency is not the account's),
  `idempotency_key_reused` (the key came with another request).
- POST /v1/redemptions/{redemption_ref}/reversals (Idempotency-Key) `{"points", "reason"}` ->
  202 `{"reversal_ref", "redemption_ref", "points", "status": "pending"}`; confirmed later by a
  signed `redemption.reversed` callback. A repeated key answers the first reversal; points are
  never reinstated beyond what was redeemed: the answer's `points` are those reinstated, fewer
  than asked (down to 0) when earlier reversals already gave back the rest. Unknown redemption:
  404 `redemption_not_found`.
- GET  /v1/redemptions/{redemption_ref} -> the redemption with `points_reversed`.
- Signed callbacks (Standard Webhooks, its own secret) to Product Shop's
  `POST /v1/webhooks/rewards`: `{"id", "type", "created_at", "data"}` where `type` is
  `redemption.confirmed` (data: `redemption_ref`, `reference`, `patient_id`, `practice_id`,
  `points`, `amount_minor`, `currency`, `settlement_ref`) or `redemption.reversed` (data:
  `redemption_ref`, `reversal_ref`, `points`, `reference`). Callbacks may arrive twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RewardsAccount:
    patient_id: str
    practice_id: str
    enabled: bool
    balance_points: int
    value_minor_per_point: int
    currency: str

    def value_of(self, points: int) -> int:
        """The money value of `points`, in minor units."""
        return points * self.value_minor_per_point


@dataclass(frozen=True, slots=True)
class Redemption:
    redemption_ref: str
    status: str  # pending (confirmed by callback), confirmed, ...
    points: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Reversal:
    reversal_ref: str
    redemption_ref: str
    points: int
    status: str


class RewardsUnavailable(Exception):
    """Rewards Manager did not answer (timeout, connection, 5xx): the outcome is unknown."""


class RewardsRejected(Exception):
    """Rewards Manager refused for good (4xx) with a stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RewardsManager(Protocol):
    def account(self, patient_id: str, practice_id: str) -> RewardsAccount: ...

    def redeem(
        self,
        *,
        patient_id: str,
        practice_id: str,
        points: int,
        amount_minor: int,
        currency: str,
        reference: str,
        idempotency_key: str,
    ) -> Redemption: ...

    def request_reversal(
        self, redemption_ref: str, *, points: int, reason: str, idempotency_key: str
    ) -> Reversal: ...
