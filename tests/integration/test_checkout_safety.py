"""Money and purchase correctness around checkout (issue 8 items 1 and 2).

- A retry closes the previous payment page before opening a new one, so a checkout can never be
  charged twice; its `payment.intent_id` and `payment_url` always name the one live intent.
- A product that stops being purchasable (unavailable, deprecated, hidden, no in-clinic stock)
  stops the unpaid checkouts that hold it and cancels their intents (spec §4.2, §15.2 rule 7);
  completion re-checks availability, and a capture that races past becomes a payment exception.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.tables import Product
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.tables import OutboxEvent
from product_shop.orders.tables import Order
from tests.conftest import World
from tests.integration.checkout_support import (
    DECLINED,
    SUCCESS,
    THREE_DS_FAILED,
    Shop,
    pay,
    payments_webhook,
    simulator_intent,
    start_checkout,
)
from tests.integration.conftest import count_rows
from tests.integration.delivery_support import deliveries

CANCELLED = OutboxEvent.event_type.like("%checkout.cancelled%")
ORPHANED = OutboxEvent.event_type.like("%orphaned_capture%")


def _complete(client: TestClient, world: World, checkout: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)


def _retry(client: TestClient, world: World, checkout: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/checkouts/{checkout['id']}/retry", headers=world.patient_a.headers)


def _checkout(client: TestClient, world: World, checkout: dict[str, Any]) -> dict[str, Any]:
    response = client.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def _events(database: Database, *where: Any) -> list[OutboxEvent]:
    with Session(database.engine) as session:
        return list(session.scalars(select(OutboxEvent).where(*where)))


# ---- item 1: no double charge after a retry --------------------------------------------------


def test_the_old_page_cannot_be_paid_after_a_retry_so_exactly_one_capture_is_taken(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    """The issue's sequence: 3-D Secure fails, retry, pay the new page, then pay the old one."""
    first = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    assert pay(first, THREE_DS_FAILED).status_code == 402
    failed = _complete(client, world, first)
    assert failed.status_code == 402
    assert "retry" in failed.json()["detail"]

    retried = _retry(client, world, first)
    assert retried.status_code == 200, retried.text
    second = retried.json()
    assert pay(second, SUCCESS).status_code == 200
    assert _complete(client, world, second).status_code == 200
    old_page = pay(first, SUCCESS)

    assert old_page.status_code == 409
    assert old_page.json()["code"] == "intent_closed"
    old = simulator_intent(payments_url, first["payment"]["intent_id"])
    new = simulator_intent(payments_url, second["payment"]["intent_id"])
    assert (old["status"], old["capture_count"]) == ("cancelled", 0)
    assert (new["status"], new["capture_count"]) == ("captured", 1)
    assert count_rows(database, Order) == 1
    assert _events(database, ORPHANED) == []


def test_after_a_retry_the_checkout_names_the_one_live_intent(
    client: TestClient, world: World, shop: Shop, payments_url: str
) -> None:
    first = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    pay(first, DECLINED)
    _complete(client, world, first)

    second = _retry(client, world, first).json()
    again = _retry(client, world, first).json()  # idempotent while awaiting payment
    shown = _checkout(client, world, first)

    assert second["status"] == "awaiting_payment"
    assert second["payment"] == again["payment"] == shown["payment"]
    assert shown["payment"]["intent_id"] != first["payment"]["intent_id"]
    assert shown["payment"]["payment_url"].endswith("/" + shown["payment"]["intent_id"])
    assert shown["payment"]["attempts"] == 2
    assert simulator_intent(payments_url, first["payment"]["intent_id"])["status"] == "cancelled"
    live = simulator_intent(payments_url, shown["payment"]["intent_id"])
    assert live["status"] == "requires_payment"


def test_a_retry_after_the_old_page_was_paid_opens_nothing_and_the_checkout_completes(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    first = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    pay(first, DECLINED)
    _complete(client, world, first)
    pay(first, SUCCESS)  # another card on the same (still open) page

    retried = _retry(client, world, first)

    assert retried.status_code == 409
    assert retried.json()["code"] == "payment_already_captured"
    assert retried.json()["complete_url"] == f"/v1/checkouts/{first['id']}/complete"
    assert _checkout(client, world, first)["payment"] == first["payment"]
    completed = _complete(client, world, first)
    assert completed.status_code == 200, completed.text
    assert count_rows(database, Order) == 1
    assert simulator_intent(payments_url, first["payment"]["intent_id"])["capture_count"] == 1


def test_a_retry_that_cannot_close_the_old_page_opens_no_new_one(
    client: TestClient, world: World, shop: Shop, payments_url: str
) -> None:
    first = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    pay(first, DECLINED)
    _complete(client, world, first)
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "cancel_intent", "mode": "error", "status": 503, "times": 3},
    )

    retried = _retry(client, world, first)

    assert retried.status_code == 503
    assert retried.json()["code"] == "payments_unavailable"
    shown = _checkout(client, world, first)
    assert shown["status"] == "failed"
    assert shown["payment"] == first["payment"]


def test_a_capture_on_an_earlier_page_completes_the_order_and_closes_the_current_page(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    first = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    pay(first, DECLINED)
    _complete(client, world, first)
    second = _retry(client, world, first).json()
    # The gateway captured the old intent after all (a race with its cancellation).
    httpx.post(f"{payments_url}/_simulator/intents/{first['payment']['intent_id']}/capture")
    old = simulator_intent(payments_url, first["payment"]["intent_id"])

    assert payments_webhook(client, old).json() == {"status": "order_created"}

    assert count_rows(database, Order) == 1
    current = simulator_intent(payments_url, second["payment"]["intent_id"])
    assert current["status"] == "cancelled"
    assert pay(second, SUCCESS).status_code == 409


# ---- item 2: a product that stops being purchasable stops its unpaid checkouts --------------


def _make_unavailable(client: TestClient, world: World, product_id: uuid.UUID, to: str) -> None:
    response = client.patch(
        f"/v1/products/{product_id}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": to},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("to", ["unavailable", "deprecated"])
def test_an_unavailable_product_stops_open_checkouts_and_cancels_their_intents(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    to: str,
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    other = start_checkout(client, world.patient_a2, [(shop.voucher, 1)]).json()

    _make_unavailable(client, world, shop.toothbrush, to)

    stopped = _checkout(client, world, checkout)
    assert stopped["status"] == "failed"
    assert stopped["failure"]["code"] == "product_unavailable"
    assert (
        client.get(f"/v1/checkouts/{other['id']}", headers=world.patient_a2.headers).json()[
            "status"
        ]
        == "awaiting_payment"
    )
    (event,) = _events(database, CANCELLED)
    assert event.data["checkout_id"] == checkout["id"]
    assert event.data["intent_id"] == checkout["payment"]["intent_id"]
    assert count_rows(database, AuditEntry, AuditEntry.action == "checkout.cancelled") == 1
    # The relay delivers the cancellation to Integrated Payments: the page takes no money.
    context.relay.run_once()
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    assert intent["status"] == "cancelled"
    assert pay(checkout, SUCCESS).status_code == 409
    refused = _complete(client, world, checkout)
    assert refused.status_code == 402
    assert refused.json()["failure_code"] == "product_unavailable"
    assert _retry(client, world, checkout).json()["code"] == "product_not_purchasable"
    assert count_rows(database, Order) == 0


def test_hiding_a_product_stops_only_that_practices_open_checkouts(
    client: TestClient,
    world: World,
    shop: Shop,
    offer: Callable[..., None],
) -> None:
    offer(world.admin_b, shop.voucher, 6500)
    mine = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    theirs = start_checkout(client, world.patient_b, [(shop.voucher, 1)]).json()

    hidden = client.put(
        f"/v1/catalogue/{shop.voucher}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 6000, "visible": False},
    )

    assert hidden.status_code == 200, hidden.text
    assert _checkout(client, world, mine)["failure"]["code"] == "product_unavailable"
    other = client.get(f"/v1/checkouts/{theirs['id']}", headers=world.patient_b.headers).json()
    assert other["status"] == "awaiting_payment"


def test_in_clinic_stock_running_out_stops_open_checkouts_of_that_product(
    client: TestClient, world: World, shop: Shop
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.kit, 1)]).json()

    client.put(
        f"/v1/catalogue/{shop.kit}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 24900, "visible": True, "in_clinic_stock_available": False},
    )

    assert _checkout(client, world, checkout)["failure"]["code"] == "product_unavailable"


def test_a_price_change_leaves_open_checkouts_alone(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()

    client.put(
        f"/v1/catalogue/{shop.voucher}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 7000, "visible": True},
    )

    assert _checkout(client, world, checkout)["status"] == "awaiting_payment"
    assert _events(database, CANCELLED) == []


def test_a_capture_that_races_past_the_stop_is_a_payment_exception_not_an_order(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    assert pay(checkout, SUCCESS).status_code == 200  # paid; completion not yet run
    _make_unavailable(client, world, shop.toothbrush, "unavailable")
    context.relay.run_once()  # the cancellation finds the intent captured: nothing to cancel

    response = _complete(client, world, checkout)

    assert response.status_code == 409
    assert response.json()["code"] == "product_unavailable"
    assert count_rows(database, Order) == 0
    (orphan,) = _events(database, ORPHANED)
    assert orphan.data["reason"] == "product_unavailable"
    assert orphan.data["action_required"] == "staff_refund"
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    assert orphan.data["payment_ref"] == intent["transaction_ref"]
    assert [d.status for d in deliveries(database, destination="integrated_payments")] == [
        "delivered"  # the intent's cancellation: nothing to cancel, not a failure
    ]


def test_completion_rechecks_availability_even_when_no_checkout_was_stopped(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    pay(checkout, SUCCESS)
    # The product changes behind the catalogue service's back (no checkout was stopped).
    with Session(database.engine) as session:
        session.execute(
            update(Product)
            .where(Product.product_id == shop.toothbrush)
            .values(availability_status="unavailable")
        )
        session.commit()
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])

    assert payments_webhook(client, intent).json() == {"status": "payment_exception"}

    assert count_rows(database, Order) == 0
    (orphan,) = _events(database, ORPHANED)
    assert orphan.data["reason"] == "product_unavailable"
    assert _checkout(client, world, checkout)["failure"]["code"] == "product_unavailable"
