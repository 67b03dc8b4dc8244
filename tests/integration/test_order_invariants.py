"""Invariants 1 and 2 under pressure: no unpaid order, one order per checkout."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.checkout.tables import Checkout, PaymentCapture
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.tables import OutboxEvent
from product_shop.orders.tables import Order
from product_shop.simulators.server import BackgroundServer, serve_in_background
from product_shop.web.app import create_app
from tests.conftest import World
from tests.integration.checkout_support import (
    Shop,
    paid_checkout,
    payments_webhook,
    simulator_intent,
    start_checkout,
)
from tests.integration.conftest import count_rows


@pytest.fixture
def live_app(context: AppContext) -> Iterator[BackgroundServer]:
    """The app under a real server, for truly concurrent requests."""
    server = serve_in_background(create_app(context=context))
    yield server
    server.stop()


@pytest.mark.postgres_only
def test_fifty_concurrent_completions_mixing_app_calls_and_webhooks_make_one_order(
    client: TestClient,
    live_app: BackgroundServer,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, 2)])
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    url = f"{live_app.url}/v1/checkouts/{checkout['id']}/complete"
    barrier = threading.Barrier(50)

    def app_call(_: int) -> tuple[int, str | None]:
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            response = http.post(url, headers=world.patient_a.headers)
            return response.status_code, response.json().get("order_id")

    def webhook(index: int) -> tuple[int, str | None]:
        with httpx.Client(base_url=live_app.url, timeout=30) as http:
            barrier.wait()
            response = payments_webhook(http, intent, event_id=f"evt_{index % 5}")  # type: ignore[arg-type]
            return response.status_code, None

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda i: app_call(i) if i % 2 else webhook(i), range(50)))

    app_results = [r for i, r in enumerate(results) if i % 2]
    assert all(status == 200 for status, _ in results), results
    assert len({order_id for _, order_id in app_results}) == 1
    assert count_rows(database, Order) == 1
    assert count_rows(database, PaymentCapture) == 1
    assert count_rows(database, OutboxEvent, OutboxEvent.event_type.like("%order.created%")) == 1
    assert count_rows(database, OutboxEvent, OutboxEvent.aggregate_type == "order") == 5
    assert count_rows(database, AuditEntry, AuditEntry.action == "order.created") == 1
    assert count_rows(database, AuditEntry, AuditEntry.action == "payment.captured") == 1
    assert count_rows(database, AuditEntry, AuditEntry.action == "checkout.completed") == 1


def test_concurrent_app_completions_make_one_order_on_either_engine(
    client: TestClient, live_app: BackgroundServer, world: World, shop: Shop, database: Database
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    url = f"{live_app.url}/v1/checkouts/{checkout['id']}/complete"

    def call(_: int) -> tuple[int, str]:
        response = httpx.post(url, headers=world.patient_a.headers, timeout=30)
        return response.status_code, response.json().get("order_id", response.text)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(8)))

    assert {status for status, _ in results} == {200}
    assert len({order_id for _, order_id in results}) == 1
    assert count_rows(database, Order) == 1


def test_a_timeout_after_capture_is_reconciled_into_one_order_not_a_double_charge(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    # Integrated Payments captured the money but answers slower than our timeout, every retry.
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "get_payment", "mode": "delay", "seconds": 1.5, "times": 3},
    )

    unknown = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )

    assert unknown.status_code == 503
    assert unknown.json()["code"] == "payment_status_unknown"
    assert count_rows(database, Order) == 0
    reconciled = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )
    assert reconciled.status_code == 200
    assert count_rows(database, Order) == 1
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    assert intent["capture_count"] == 1
    assert reconciled.json()["payment"]["payment_ref"] == intent["transaction_ref"]


def test_payments_being_down_refuses_the_checkout_without_writing_anything(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "create_intent", "mode": "error", "status": 503, "times": 3},
    )
    response = start_checkout(client, world.patient_a, [(shop.voucher, 1)])
    assert (response.status_code, response.json()["code"]) == (503, "payments_unavailable")
    assert count_rows(database, Checkout) == 0


def _order_row(
    checkout_id: uuid.UUID, payment_ref: str | None, redemption_ref: str | None
) -> Order:
    now = datetime.now(UTC)
    return Order(
        order_id=uuid.uuid4(),
        checkout_id=checkout_id,
        patient_id=uuid.uuid4(),
        practice_id=uuid.uuid4(),
        status="Created",
        fulfilment_status="Created",
        refund_status="none",
        currency="GBP",
        total_minor=100,
        captured_minor=100,
        refunded_minor=0,
        payment_ref=payment_ref,
        payment_method="card",
        redemption_ref=redemption_ref,
        created_by="x",
        created_at=now,
        updated_at=now,
        version=1,
    )


def test_the_database_refuses_an_order_without_a_captured_payment(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    checkout_id = uuid.UUID(checkout["id"])

    for payment_ref in (None, "DNA-NEVER-CAPTURED"):
        with Session(database.engine) as session:
            session.add(_order_row(checkout_id, payment_ref=payment_ref, redemption_ref=None))
            with pytest.raises(IntegrityError):
                session.commit()
    assert count_rows(database, Order) == 0


def test_a_redemption_reference_alone_does_not_make_an_order_paid(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    """Issue 8 item 3: no capture, nothing captured and any redemption string was accepted."""
    checkout = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    row = _order_row(uuid.UUID(checkout["id"]), payment_ref=None, redemption_ref="RM-ANY-STRING")
    row.captured_minor = 0
    with Session(database.engine) as session:
        session.add(row)
        with pytest.raises(IntegrityError):
            session.commit()
    assert count_rows(database, Order) == 0


def test_the_database_refuses_a_second_order_for_one_checkout(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    with Session(database.engine) as session:
        capture = session.query(PaymentCapture).one()
        session.add(
            _order_row(
                uuid.UUID(checkout["id"]), payment_ref=capture.transaction_ref, redemption_ref=None
            )
        )
        with pytest.raises(IntegrityError):
            session.commit()
    assert count_rows(database, Order) == 1


def test_refunds_can_never_exceed_the_capture_in_the_database(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()
    with Session(database.engine) as session:
        row = session.get(Order, uuid.UUID(order["order_id"]))
        assert row is not None
        row.refunded_minor = row.captured_minor + 1
        with pytest.raises(IntegrityError):
            session.commit()
