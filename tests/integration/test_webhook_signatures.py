"""POST /v1/webhooks/payments speaks Standard Webhooks (issue 8, item 7).

A callback signed by the reference library (`standardwebhooks`) with our `whsec_` secret is
accepted; a tampered, forged, stale, unsigned or malformed one is 401 problem+json
`invalid_signature` (never a 500) and changes nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from product_shop.core.signing import new_secret
from product_shop.db.engine import Database
from product_shop.events.inbox import InboxMessage
from product_shop.orders.tables import Order
from tests.conftest import WEBHOOK_SECRET, World
from tests.integration.checkout_support import Shop, paid_checkout, simulator_intent
from tests.integration.conftest import count_rows


def _event(intent: dict[str, Any]) -> tuple[str, str]:
    event_id = f"evt_{uuid.uuid4().hex[:24]}"
    body = json.dumps({"id": event_id, "type": "payment.captured", "data": intent})
    return event_id, body


def _library_headers(
    event_id: str, body: str, *, secret: str = WEBHOOK_SECRET, at: float | None = None
) -> dict[str, str]:
    """What any Standard Webhooks sender (here the reference library) puts on the request."""
    timestamp = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, timestamp, body),
        "Content-Type": "application/json",
    }


def test_a_callback_signed_by_the_reference_library_is_accepted(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    event_id, body = _event(intent)

    response = client.post(
        "/v1/webhooks/payments", content=body.encode(), headers=_library_headers(event_id, body)
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "order_created"}
    assert count_rows(database, Order) == 1


def test_tampered_forged_stale_or_malformed_callbacks_are_401_problems_and_change_nothing(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    event_id, body = _event(intent)
    good = _library_headers(event_id, body)

    def without(name: str) -> dict[str, str]:
        return {k: v for k, v in good.items() if k != name}

    tampered = body.replace(intent["intent_id"], "pi_someone_else")
    cases: dict[str, tuple[dict[str, str], bytes]] = {
        "tampered body": (good, tampered.encode()),
        "wrong secret": (_library_headers(event_id, body, secret=new_secret()), body.encode()),
        "old timestamp": (_library_headers(event_id, body, at=time.time() - 600), body.encode()),
        "new timestamp": (_library_headers(event_id, body, at=time.time() + 600), body.encode()),
        "no webhook-id": (without("webhook-id"), body.encode()),
        "no webhook-timestamp": (without("webhook-timestamp"), body.encode()),
        "no webhook-signature": (without("webhook-signature"), body.encode()),
        "no headers at all": ({"Content-Type": "application/json"}, body.encode()),
        "signature 'garbage'": ({**good, "webhook-signature": "garbage"}, body.encode()),
        "signature not base64": ({**good, "webhook-signature": "v1,abc"}, body.encode()),
        "signature with two commas": ({**good, "webhook-signature": "v1,a,b"}, body.encode()),
        "timestamp not a number": ({**good, "webhook-timestamp": "now"}, body.encode()),
        "body not UTF-8": (good, b"\xff" + body.encode()),
    }

    for case, (headers, content) in cases.items():
        response = client.post("/v1/webhooks/payments", content=content, headers=headers)

        assert response.status_code == 401, (case, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json", case
        assert response.json()["code"] == "invalid_signature", case
    assert count_rows(database, Order) == 0
    assert count_rows(database, InboxMessage) == 0
