"""Integrated Payments callbacks: authentic, de-duplicated, and never a second order."""

from __future__ import annotations

import time

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.checkout.tables import Checkout
from product_shop.db.engine import Database
from product_shop.events.inbox import InboxMessage
from product_shop.events.tables import OutboxEvent
from product_shop.orders.tables import Order
from tests.conftest import World
from tests.integration.checkout_support import (
    DECLINED,
    SUCCESS,
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


def _orphans(database: Database) -> list[OutboxEvent]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(OutboxEvent).where(OutboxEvent.event_type.like("%orphaned_capture%"))
            )
        )


def test_a_capture_confirmed_late_for_a_declined_attempt_still_creates_the_order(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    pay(checkout, DECLINED)
    failed = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )
    assert failed.status_code == 402
    assert pay(checkout, SUCCESS).status_code == 200  # the patient tries another card on the page
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])

    response = payments_webhook(client, intent)

    assert response.json() == {"status": "order_created"}
    assert count_rows(database, Order) == 1
    state = client.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers).json()
    assert state["status"] == "completed"


def test_a_second_capture_that_slips_past_the_cancellation_is_recorded_for_a_staff_refund(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    first = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    pay(first, DECLINED)
    client.post(f"/v1/checkouts/{first['id']}/complete", headers=world.patient_a.headers)
    retried = client.post(
        f"/v1/checkouts/{first['id']}/retry", headers=world.patient_a.headers
    ).json()
    pay(retried, SUCCESS)
    # The gateway captured the old intent anyway (a race with its cancellation).
    httpx.post(f"{payments_url}/_simulator/intents/{first['payment']['intent_id']}/capture")
    old_intent = simulator_intent(payments_url, first["payment"]["intent_id"])
    new_intent = simulator_intent(payments_url, retried["payment"]["intent_id"])

    assert payments_webhook(client, new_intent).json() == {"status": "order_created"}
    assert payments_webhook(client, old_intent).json() == {"status": "order_created"}
    payments_webhook(client, old_intent)  # redelivered with a new id: still recorded once

    assert count_rows(database, Order) == 1
    (orphan,) = _orphans(database)
    assert orphan.data["reason"] == "duplicate_capture"
    assert orphan.data["intent_id"] == old_intent["intent_id"]
    assert orphan.data["payment_ref"] == old_intent["transaction_ref"]
    assert orphan.data["action_required"] == "staff_refund"


def test_a_capture_of_the_wrong_amount_creates_no_order_and_is_surfaced(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent_id = checkout["payment"]["intent_id"]
    httpx.patch(f"{payments_url}/_simulator/intents/{intent_id}", json={"amount_minor": 100})

    response = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )

    assert response.status_code == 409
    assert response.json()["code"] == "payment_mismatch"
    assert response.json()["captured_minor"] == 100
    assert count_rows(database, Order) == 0
    (orphan,) = _orphans(database)
    assert (orphan.data["reason"], orphan.data["expected_amount_minor"]) == (
        "amount_mismatch",
        6000,
    )
    state = client.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers).json()
    assert (state["status"], state["failure"]["code"]) == ("failed", "payment_mismatch")
    webhook = payments_webhook(client, simulator_intent(payments_url, intent_id))
    assert webhook.json() == {"status": "payment_mismatch"}
    assert len(_orphans(database)) == 1


def test_recording_an_inbox_message_says_whether_it_was_new(database: Database) -> None:
    from datetime import UTC, datetime

    from product_shop.events import inbox

    with database.unit_of_work() as session:
        first = inbox.record(session, "test", "m-1", "t", datetime.now(UTC))
        again = inbox.record(session, "test", "m-1", "t", datetime.now(UTC))
    assert (first, again) == (True, False)


def test_an_intent_id_that_is_not_one_is_a_400_and_never_reaches_integrated_payments(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    """The id names the intent we then read at Integrated Payments: a number, an object, null,
    a path or a query in its place is not a payment event (400), never a call we make."""
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])

    for bad in (
        None,
        123,
        {"a": 1},
        "x" * 200,
        "../../_simulator/intents",
        intent["intent_id"] + "/",
        intent["intent_id"] + "?x=1",
    ):
        response = payments_webhook(client, {**intent, "intent_id": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "malformed_webhook"
    assert count_rows(database, Order) == 0
    assert payments_webhook(client, intent).json() == {"status": "order_created"}
