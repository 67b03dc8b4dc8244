"""Shared steps for refund tests: staff tokens with a fresh MFA step-up, a refund request, and
what the payments simulator refunded."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.integration.checkout_support import key


def refund(
    client: TestClient | httpx.Client,
    headers: dict[str, str],
    order_id: str,
    body: dict[str, Any],
    *,
    idempotency_key: str | None = None,
) -> httpx.Response:
    idempotency = {"Idempotency-Key": idempotency_key} if idempotency_key else key()
    response: httpx.Response = client.post(
        f"/v1/orders/{order_id}/refunds", headers={**headers, **idempotency}, json=body
    )
    return response


def simulator_refunds(payments_url: str, payment_ref: str) -> list[dict[str, Any]]:
    """Every refund the payments simulator made of a transaction."""
    response = httpx.get(
        f"{payments_url}/_simulator/refunds", params={"transaction_ref": payment_ref}
    )
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["refunds"]
    return found
