"""HTTP adapter for Rewards Manager, on urllib3.

It speaks the contract in `integrations.rewards` through `integrations.json_http`, the client the
other adapters use (one keep-alive pool, timeouts, one retry layer). Account and redemption
reads, and the redemption and reversal POSTs (they always carry an Idempotency-Key, so Rewards
Manager answers a resend with the first result and never deducts or reinstates twice), are
resent after a connection error, a timeout or a 408/429/5xx answer, with a short backoff or the
answer's `Retry-After` (bounded): at most three sends per call.

Answers map to the port's errors: no answer, 408/429/5xx after the retries, or an answer that is
not the contract's (not JSON, a missing field or one of the wrong type, a negative balance, an
enabled account worth nothing per point, an unknown status, another patient's account, another
redemption than the one asked for, a reversal of more points than were asked) is
`RewardsUnavailable` (the outcome is unknown: try again later under the same key); another 4xx
is `RewardsRejected` with the module's problem `code` (`rewards_disabled`,
`insufficient_points`, `amount_mismatch`, `idempotency_key_reused`, `redemption_not_found`,
`unauthorised`, ...).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from product_shop.integrations.json_http import JsonHttpClient, NoAnswer, Refused
from product_shop.integrations.rewards import (
    Redemption,
    Reversal,
    RewardsAccount,
    RewardsRejected,
    RewardsUnavailable,
)

INTEGRATION = "rewards_manager"  # its label in the integration metrics

# What a redemption's and a reversal's `status` may be (the contract's).
REDEMPTION_STATUSES = frozenset({"pending", "confirmed"})
REVERSAL_STATUSES = frozenset({"pending", "confirmed"})
_CURRENCY = re.compile(r"[A-Z]{3}")


class HttpRewardsManager:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._client = JsonHttpClient(
            base_url, integration=INTEGRATION, api_key=api_key, timeout_seconds=timeout_seconds
        )

    def close(self) -> None:
        self._client.close()

    def account(self, patient_id: str, practice_id: str) -> RewardsAccount:
        path = f"/v1/accounts/{_segment(patient_id)}?{urlencode({'practice_id': practice_id})}"
        data = self._call("GET", path)
        try:
            account = RewardsAccount(
                patient_id=_text(data["patient_id"]),
                practice_id=_text(data["practice_id"]),
                enabled=_flag(data["enabled"]),
                balance_points=_count(data["balance_points"]),
                value_minor_per_point=_count(data["value_minor_per_point"]),
                currency=_currency(data["currency"]),
            )
            if account.enabled and account.value_minor_per_point < 1:
                raise ValueError("an enabled account whose points are worth nothing")
        except (KeyError, ValueError, TypeError) as exc:
            raise RewardsUnavailable(
                f"unexpected account answer from Rewards Manager ({exc!r})"
            ) from exc
        if (account.patient_id, account.practice_id) != (patient_id, practice_id):
            raise RewardsUnavailable("Rewards Manager answered with another patient's account")
        return account

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
    ) -> Redemption:
        body = {
            "patient_id": patient_id,
            "practice_id": practice_id,
            "points": points,
            "amount_minor": amount_minor,
            "currency": currency,
            "reference": reference,
        }
        data = self._call(
            "POST", "/v1/redemptions", json_body=body, idempotency_key=idempotency_key
        )
        redemption = _redemption(data, "redemption")
        answered = (data["reference"], redemption.points, redemption.amount_minor, data["currency"])
        if answered != (reference, points, amount_minor, currency):
            raise RewardsUnavailable("Rewards Manager answered with another redemption")
        return redemption

    def request_reversal(
        self, redemption_ref: str, *, points: int, reason: str, idempotency_key: str
    ) -> Reversal:
        data = self._call(
            "POST",
            f"/v1/redemptions/{_segment(redemption_ref)}/reversals",
            json_body={"points": points, "reason": reason},
            idempotency_key=idempotency_key,
        )
        try:
            reversal = Reversal(
                reversal_ref=_text(data["reversal_ref"]),
                redemption_ref=_text(data["redemption_ref"]),
                points=_count(data["points"]),
                status=_status(data["status"], REVERSAL_STATUSES),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise RewardsUnavailable(
                f"unexpected reversal answer from Rewards Manager ({exc!r})"
            ) from exc
        if reversal.redemption_ref != redemption_ref:
            raise RewardsUnavailable("Rewards Manager answered with another redemption's reversal")
        if reversal.points > points:
            raise RewardsUnavailable(
                f"Rewards Manager reinstated {reversal.points} points, more than the {points} asked"
            )
        return reversal

    def get_redemption(self, redemption_ref: str) -> Redemption:
        """The redemption as it is now (not part of the port: for settling an unknown outcome
        and for tests)."""
        data = self._call("GET", f"/v1/redemptions/{_segment(redemption_ref)}")
        redemption = _redemption(data, "redemption")
        if redemption.redemption_ref != redemption_ref:
            raise RewardsUnavailable("Rewards Manager answered with another redemption")
        return redemption

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One call (`JsonHttpClient`), its failures as the port's errors."""
        try:
            return self._client.call(
                method, path, json_body=json_body, idempotency_key=idempotency_key
            )
        except NoAnswer as exc:
            raise RewardsUnavailable(f"Rewards Manager did not answer ({exc})") from exc
        except Refused as exc:
            raise RewardsRejected(
                exc.code or f"http_{exc.status}",
                exc.detail or "Rewards Manager refused the request.",
            ) from exc


def _redemption(data: dict[str, Any], what: str) -> Redemption:
    """The contract's redemption document; RewardsUnavailable when the answer is not one."""
    try:
        redemption = Redemption(
            redemption_ref=_text(data["redemption_ref"]),
            status=_status(data["status"], REDEMPTION_STATUSES),
            points=_count(data["points"]),
            amount_minor=_count(data["amount_minor"]),
        )
        _text(data["reference"])
        _currency(data["currency"])
        if redemption.points < 1:
            raise ValueError("a redemption of no points")
    except (KeyError, ValueError, TypeError) as exc:
        raise RewardsUnavailable(
            f"unexpected {what} answer from Rewards Manager ({exc!r})"
        ) from exc
    return redemption


def _segment(value: str) -> str:
    return quote(value, safe="")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a non-empty string: {value!r}")
    return value


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"not a whole number of at least 0: {value!r}")
    return value


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"not true or false: {value!r}")
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise ValueError(f"not a currency code: {value!r}")
    return value


def _status(value: Any, known: frozenset[str]) -> str:
    if value not in known:
        raise ValueError(f"an unknown status: {value!r}")
    return str(value)
