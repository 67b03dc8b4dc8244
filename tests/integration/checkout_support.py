"""Shared steps for checkout tests: a small shop, checkout, pay on the hosted page, webhooks."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient

from product_shop.core.signing import sign
from tests.conftest import WEBHOOK_SECRET, Person
from tests.http_support import SIMULATORS

SUCCESS = "4242424242424242"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
THREE_DS_FAILED = "4000002500003155"
PROCESSING_ERROR = "4000000000000119"

ADDRESS = {
    "recipient_name": "Penny Patient",
    "line1": "1 Harbour Road",
    "city": "Bristol",
    "postcode": "BS1 4AA",
}


@dataclass(frozen=True)
class Shop:
    toothbrush: uuid.UUID  # Drop-Ship, 5999
    voucher: uuid.UUID  # Digital, 6000
    kit: uuid.UUID  # In-Clinic, 24900


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def start_checkout(
    client: TestClient, patient: Person, lines: list[tuple[uuid.UUID, int]], **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "lines": [{"product_id": str(p), "quantity": q} for p, q in lines],
        "delivery_address": ADDRESS,
        **extra,
    }
    return client.post("/v1/checkouts", headers={**patient.headers, **key()}, json=body)


def pay(checkout: dict[str, Any], card: str = SUCCESS) -> httpx.Response:
    """What the patient app does on Integrated Payments' hosted page."""
    return SIMULATORS.post(checkout["payment"]["payment_url"], json={"card_number": card})


def paid_checkout(
    client: TestClient, patient: Person, lines: list[tuple[uuid.UUID, int]]
) -> dict[str, Any]:
    created = start_checkout(client, patient, lines)
    assert created.status_code == 201, created.text
    paid = pay(created.json())
    assert paid.status_code == 200, paid.text
    document: dict[str, Any] = created.json()
    return document


def payments_webhook(
    client: TestClient,
    intent: dict[str, Any],
    *,
    event_id: str | None = None,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    """Integrated Payments' signed callback, as the simulator sends it."""
    event_type = "payment.captured" if intent["status"] == "captured" else "payment.failed"
    event_id = event_id or f"evt_{uuid.uuid4().hex[:24]}"
    body = json.dumps({"id": event_id, "type": event_type, "data": intent}).encode()
    headers = sign(secret, event_id, timestamp or int(time.time()), body).as_dict()
    return client.post(
        "/v1/webhooks/payments",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )


def simulator_intent(payments_url: str, intent_id: str) -> dict[str, Any]:
    document: dict[str, Any] = SIMULATORS.get(
        f"{payments_url}/_simulator/intents/{intent_id}"
    ).json()
    return document
