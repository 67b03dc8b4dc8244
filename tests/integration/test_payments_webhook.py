"""Integrated Payments callbacks: authentic, de-duplicated, and never a second order."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from product_shop.checkout.tables import Checkout
from product_shop.db.engine import Database
from product_shop.events.inbox import InboxMessage
from product_shop.orders.tables import Order
from tests.conftest import World
from tests.integration.checkout_support import (
    DECLINED,
    Shop,
    paid_checkout,
    pay,
    payments_webhook,
    simulator_intent,
    start_checkout,
)
from tests.integration.conftest import count_rows


def test_a_signed_capture_callback_creates_the_order_without_the_app(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])

    response = payments_webhook(client, intent)

    assert response.status_code == 200
    assert response.json() == {"status": "order_created"}
    assert count_rows(database, Order) == 1
    app_call = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )
    assert app_call.status_code == 200
    assert count_rows(database, Order) == 1


def test_a_duplicate_callback_has_no_second_effect(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])

    first = payments_webhook(client, intent, event_id="evt_same")
    second = payments_webhook(client, intent, event_id="evt_same")

    assert first.json() == {"status": "order_created"}
    assert second.json() == {"status": "duplicate"}
    assert count_rows(database, Order) == 1
    assert count_rows(database, InboxMessage) == 1


def test_a_failure_callback_fails_the_checkout_without_an_order(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    pay(checkout, DECLINED)
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])

    response = payments_webhook(client, intent)

    assert response.json() == {"status": "payment_failed"}
    state = client.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers).json()
    assert state["status"] == "failed"
    assert count_rows(database, Order) == 0


def test_forged_or_replayed_callbacks_are_refused_and_change_nothing(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])

    forged = payments_webhook(client, intent, secret="not-the-secret")
    stale = payments_webhook(client, intent, timestamp=int(time.time()) - 3600)
    unsigned = client.post("/v1/webhooks/payments", json={"data": intent})

    for response in (forged, stale, unsigned):
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_signature"
    assert count_rows(database, Order) == 0
    assert count_rows(database, InboxMessage) == 0
    with database.engine.connect() as connection:
        status = connection.execute(
            Checkout.__table__.select().with_only_columns(Checkout.status)
        ).scalar_one()
    assert status == "awaiting_payment"


def test_a_callback_for_an_unknown_checkout_is_acknowledged_and_ignored(
    client: TestClient, database: Database
) -> None:
    intent = {
        "intent_id": "pi_unknown",
        "status": "captured",
        "merchant_reference": "00000000-0000-0000-0000-000000000000",
        "amount_minor": 100,
        "currency": "GBP",
    }
    response = payments_webhook(client, intent)
    assert response.json() == {"status": "ignored"}
    assert count_rows(database, Order) == 0
