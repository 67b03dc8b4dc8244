"""Checkout to order through the API alone (spec §3.2, §5.1, §5.2, §15.2)."""

from __future__ import annotations

import uuid
from typing import Any

import jsonschema
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.checkout.tables import Checkout
from product_shop.db.engine import Database
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import BY_NAME
from product_shop.orders.tables import Order, OrderLine
from tests.conftest import World
from tests.integration.checkout_support import (
    DECLINED,
    INSUFFICIENT,
    PROCESSING_ERROR,
    SUCCESS,
    THREE_DS_FAILED,
    Shop,
    key,
    paid_checkout,
    pay,
    simulator_intent,
    start_checkout,
)
from tests.integration.conftest import count_rows

ORDER_EVENTS = [
    "com.primoro.productshop.order.created.v1",
    "com.primoro.productshop.payment.receipt.v1",
    "com.primoro.productshop.revenue.sale.v1",
    "com.primoro.productshop.finance.order_recorded.v1",
    "com.primoro.productshop.payment.order_reference.v1",
]


def _order_events(database: Database, order_id: str) -> list[OutboxEvent]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.subject == order_id)
                .order_by(OutboxEvent.position)
            )
        )


def test_a_patient_checks_out_two_products_pays_and_sees_the_order(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    created = start_checkout(client, world.patient_a, [(shop.toothbrush, 2), (shop.voucher, 1)])
    assert created.status_code == 201, created.text
    checkout = created.json()
    assert checkout["status"] == "awaiting_payment"
    assert checkout["total_minor"] == 2 * 5999 + 6000
    assert [line["unit_price_minor"] for line in checkout["lines"]] == [5999, 6000]
    assert created.headers["location"] == f"/v1/checkouts/{checkout['id']}"
    assert count_rows(database, Order) == 0  # no order before payment

    assert pay(checkout, SUCCESS).status_code == 200
    completed = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )

    assert completed.status_code == 200, completed.text
    order = completed.json()
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    assert order["status"] == "Created"
    assert order["fulfilment_status"] == "Created"
    assert order["refund_status"] == "none"
    assert order["total_minor"] == 17998
    assert order["payment"]["payment_ref"] == intent["transaction_ref"]
    assert order["payment"]["card_last4"] == "4242"
    assert order["payment"]["method"] == "card"
    assert order["view"] == "patient"
    assert "pms_invoice_ref" not in order
    assert "created_by" not in order
    assert [
        (line["name"], line["quantity"], line["fulfilment_type"], line["fulfilment_status"])
        for line in order["lines"]
    ] == [
        ("Oral-B Pro 3", 2, "Drop-Ship", "pending"),
        ("Hygienist voucher", 1, "Digital", "delivered"),
    ]
    assert "audit_trail" not in order
    assert [e["event"] for e in order["timeline"]] == [
        "payment_received",
        "order_placed",
        "delivered",  # the voucher, issued at once
    ]
    staff = client.get(f"/v1/orders/{order['order_id']}", headers=world.admin_a.headers).json()
    assert [e["action"] for e in staff["audit_trail"]] == [
        "payment.captured",
        "order.created",
        "fulfilment.shipment_requested",
        "fulfilment.delivered",
    ]
    assert staff["created_by"] == world.patient_a.actor.actor_id
    assert staff["pms_invoice_ref"] is None
    fetched = client.get(f"/v1/orders/{order['order_id']}", headers=world.patient_a.headers)
    assert fetched.json() == order
    mine = client.get("/v1/me/orders", headers=world.patient_a.headers).json()
    assert [o["order_id"] for o in mine["items"]] == [order["order_id"]]
    assert (
        client.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers).json()[
            "order_id"
        ]
        == order["order_id"]
    )


def test_completing_again_returns_the_same_order(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    url = f"/v1/checkouts/{checkout['id']}/complete"
    first = client.post(url, headers=world.patient_a.headers)
    second = client.post(url, headers=world.patient_a.headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert count_rows(database, Order) == 1


def test_order_creation_writes_its_audit_entries_and_events_in_one_go(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.toothbrush, 1)])
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()

    events = _order_events(database, order["order_id"])
    assert [e.event_type for e in events] == ORDER_EVENTS
    for event in events:
        jsonschema.validate(
            event.data,
            BY_NAME[event.event_type].schema(),
            format_checker=jsonschema.FormatChecker(),
        )
    revenue = events[2].data
    assert (revenue["order_id"], revenue["amount"], revenue["currency"], revenue["event_type"]) == (
        order["order_id"],
        5999,
        "GBP",
        "sale",
    )
    assert revenue["timestamp"]
    assert events[4].data["payment_ref"] == order["payment"]["payment_ref"]
    with Session(database.engine) as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.position)).all()
    actions = [e.action for e in entries if e.stream_type in ("order", "checkout")]
    assert actions == [
        "checkout.created",
        "checkout.completed",
        "payment.captured",
        "order.created",
        "fulfilment.shipment_requested",
    ]


@pytest.mark.parametrize(
    ("card", "failure_code"),
    [
        (DECLINED, "card_declined"),
        (THREE_DS_FAILED, "authentication_failed"),
        (INSUFFICIENT, "insufficient_funds"),
        (PROCESSING_ERROR, "processing_error"),
    ],
)
def test_a_failed_payment_fails_the_checkout_and_creates_no_order(
    client: TestClient, world: World, shop: Shop, database: Database, card: str, failure_code: str
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    assert pay(checkout, card).status_code == 402

    response = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )

    assert response.status_code == 402
    problem = response.json()
    assert problem["code"] == "payment_failed"
    assert problem["failure_code"] == failure_code
    assert problem["retry_url"] == f"/v1/checkouts/{checkout['id']}/retry"
    assert "try again" in problem["detail"]
    state = client.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers).json()
    assert state["status"] == "failed"
    assert state["failure"]["code"] == failure_code
    assert count_rows(database, Order) == 0
    assert count_rows(database, OrderLine) == 0
    failed_events = count_rows(
        database, OutboxEvent, OutboxEvent.event_type.like("%checkout.payment_failed%")
    )
    assert failed_events == 1
    again = client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    assert again.status_code == 402
    assert count_rows(database, Order) == 0


def test_a_failed_checkout_can_be_retried_with_a_new_intent_and_then_paid(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    pay(checkout, DECLINED)
    client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)

    retried = client.post(f"/v1/checkouts/{checkout['id']}/retry", headers=world.patient_a.headers)

    assert retried.status_code == 200, retried.text
    again = retried.json()
    assert again["status"] == "awaiting_payment"
    assert again["failure"] is None
    assert again["payment"]["intent_id"] != checkout["payment"]["intent_id"]
    assert again["payment"]["attempts"] == 2
    repeat = client.post(
        f"/v1/checkouts/{checkout['id']}/retry", headers=world.patient_a.headers
    ).json()
    assert repeat["payment"]["intent_id"] == again["payment"]["intent_id"]  # retry is idempotent
    assert pay(again, SUCCESS).status_code == 200
    order = client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    assert order.status_code == 200
    assert count_rows(database, Order) == 1


def test_completing_before_paying_is_refused_without_an_order(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.voucher, 1)]).json()
    response = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )
    assert (response.status_code, response.json()["code"]) == (409, "payment_not_captured")
    assert count_rows(database, Order) == 0


def test_prices_come_from_the_catalogue_and_the_order_keeps_the_price_it_sold_at(
    client: TestClient, world: World, shop: Shop, offer: object
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    client.put(
        f"/v1/catalogue/{shop.toothbrush}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 9999, "visible": True},
    )
    pay(checkout)
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()
    assert order["lines"][0]["unit_price_minor"] == 5999
    assert order["total_minor"] == 5999
    sent_price = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)], unit_price_minor=1)
    assert (sent_price.status_code, sent_price.json()["code"]) == (422, "validation_failed")


def test_unavailable_hidden_and_unknown_products_are_refused_before_any_payment(
    client: TestClient, world: World, shop: Shop, database: Database, make_product: object
) -> None:
    client.patch(
        f"/v1/products/{shop.kit}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "unavailable"},
    )
    client.put(
        f"/v1/catalogue/{shop.voucher}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 6000, "visible": False},
    )
    unknown = uuid.uuid4()

    response = start_checkout(
        client,
        world.patient_a,
        [(shop.toothbrush, 1), (shop.kit, 1), (shop.voucher, 1), (unknown, 1)],
    )

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "product_not_purchasable"
    assert {(line["product_id"], line["reason"]) for line in problem["lines"]} == {
        (str(shop.kit), "product_unavailable"),
        (str(shop.voucher), "product_not_found"),
        (str(unknown), "product_not_found"),
    }
    assert count_rows(database, Checkout) == 0


def test_another_practices_product_cannot_be_bought(
    client: TestClient, world: World, shop: Shop
) -> None:
    response = start_checkout(client, world.patient_b, [(shop.toothbrush, 1)])
    assert response.status_code == 422
    assert response.json()["lines"] == [
        {"product_id": str(shop.toothbrush), "reason": "product_not_found"}
    ]


def test_a_delivery_address_is_required_only_for_drop_ship(
    client: TestClient, world: World, shop: Shop
) -> None:
    body = {"lines": [{"product_id": str(shop.toothbrush), "quantity": 1}]}
    refused = client.post("/v1/checkouts", headers={**world.patient_a.headers, **key()}, json=body)
    assert (refused.status_code, refused.json()["code"]) == (422, "delivery_address_required")
    digital = {"lines": [{"product_id": str(shop.voucher), "quantity": 1}]}
    accepted = client.post(
        "/v1/checkouts", headers={**world.patient_a.headers, **key()}, json=digital
    )
    assert accepted.status_code == 201


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"payment_gateway": "stripe"}, "payment_gateway_not_permitted"),
        ({"payment_gateway": "PayPal"}, "payment_gateway_not_permitted"),
        ({"payment_method": "direct_debit"}, "payment_method_not_permitted"),
        ({"card_number": "4242424242424242"}, "card_data_refused"),
    ],
)
def test_other_payment_paths_and_card_data_are_refused(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    extra: dict[str, str],
    code: str,
) -> None:
    response = start_checkout(client, world.patient_a, [(shop.voucher, 1)], **extra)
    assert (response.status_code, response.json()["code"]) == (422, code)
    assert count_rows(database, Checkout) == 0
    # docs/problems.md: input values are never echoed back.
    for value in extra.values():
        assert value not in response.text


def test_wallet_payments_are_accepted(client: TestClient, world: World, shop: Shop) -> None:
    import httpx

    checkout = start_checkout(
        client, world.patient_a, [(shop.voucher, 1)], payment_method="apple_pay"
    ).json()
    assert (
        httpx.post(checkout["payment"]["payment_url"], json={"method": "apple_pay"}).status_code
        == 200
    )
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()
    assert order["payment"]["method"] == "apple_pay"


def test_only_patients_check_out(client: TestClient, world: World, shop: Shop) -> None:
    for person in (world.admin_a, world.clinician_a, world.service, world.catalogue_admin):
        response = start_checkout(client, person, [(shop.voucher, 1)])
        assert response.status_code == 403, person.actor.role


def test_completion_reports_server_timings_for_confirmation_and_order_creation(
    client: TestClient, world: World, shop: Shop
) -> None:
    created = start_checkout(client, world.patient_a, [(shop.voucher, 1)])
    assert "payment-intent;dur=" in created.headers["server-timing"]
    pay(created.json())
    completed = client.post(
        f"/v1/checkouts/{created.json()['id']}/complete", headers=world.patient_a.headers
    )
    timing = completed.headers["server-timing"]
    assert "payment-confirm;dur=" in timing
    assert "order-create;dur=" in timing


def test_deprecating_a_product_names_the_active_orders_that_contain_it(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    checkout = paid_checkout(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, 1)])
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()
    other = paid_checkout(client, world.patient_a2, [(shop.voucher, 1)])
    client.post(f"/v1/checkouts/{other['id']}/complete", headers=world.patient_a2.headers)

    client.patch(
        f"/v1/products/{shop.toothbrush}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "deprecated"},
    )

    with Session(database.engine) as session:
        event = session.scalars(
            select(OutboxEvent).where(OutboxEvent.event_type.like("%product.deprecated%"))
        ).one()
    assert event.data["affected"]["active_order_ids"] == [order["order_id"]]
    assert event.data["affected"]["hygiene_subscriptions"]["product_id"] == str(shop.toothbrush)


def test_starting_a_checkout_takes_two_transactions_and_stores_in_one_round_trip(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    engine_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hot path's shape (docs/benchmarks.md): the Idempotency-Key is claimed and the lines
    priced in one transaction, then, after Integrated Payments opens the intent, the checkout,
    its lines, its audit entry and the idempotent answer are stored in another. The claim is
    the only statement sent one by one; on PostgreSQL the prices are read in one pipeline and
    the store's rows go with its COMMIT in another."""
    transactions: list[str] = []
    statements: list[str] = []
    pipelines: list[int] = []

    def began(_connection: object) -> None:
        transactions.append("begin")

    def executed(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        statements.append(sql.split(None, 1)[0].upper())

    real_pipeline = psycopg.Connection.pipeline

    def counting_pipeline(self: psycopg.Connection[Any]) -> Any:
        pipelines.append(1)
        return real_pipeline(self)

    monkeypatch.setattr(psycopg.Connection, "pipeline", counting_pipeline)
    sqlalchemy_event.listen(database.engine, "begin", began)
    sqlalchemy_event.listen(database.engine, "before_cursor_execute", executed)
    try:
        created = start_checkout(client, world.patient_a, [(shop.toothbrush, 2), (shop.voucher, 1)])
    finally:
        sqlalchemy_event.remove(database.engine, "begin", began)
        sqlalchemy_event.remove(database.engine, "before_cursor_execute", executed)

    assert created.status_code == 201, created.text
    assert len(transactions) == 2
    if engine_name == "postgresql":
        assert statements == ["INSERT"]  # the claim; the rest travel in the two pipelines
        assert pipelines == [1, 1]
    checkout_id = uuid.UUID(created.json()["id"])
    with Session(database.engine) as session:
        assert session.get(Checkout, checkout_id) is not None
        trail = session.scalars(
            select(AuditEntry.action).where(AuditEntry.stream_id == str(checkout_id))
        ).all()
    assert trail == ["checkout.created"]
    replay = client.post(
        "/v1/checkouts",
        headers={
            **world.patient_a.headers,
            "Idempotency-Key": created.request.headers["idempotency-key"],
            "Content-Type": "application/json",
        },
        content=created.request.content,  # the same body, byte for byte
    )
    assert replay.status_code == 201
    assert replay.json() == created.json()
