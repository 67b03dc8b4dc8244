"""Fulfilment over HTTP (spec §6, §3.3, §15.2 rules 3 and 12): a mixed order through every stage
via the supplier simulator and staff calls; tracking for the patient; vouchers; exceptions."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.context import AppContext
from product_shop.core.signing import sign
from product_shop.db.engine import Database
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import BY_NAME
from product_shop.logging import configure_logging
from product_shop.orders.tables import OrderLine
from product_shop.simulators.server import BackgroundServer
from tests.conftest import SUPPLIER_WEBHOOK_SECRET, World
from tests.integration.checkout_support import ADDRESS, Shop
from tests.integration.delivery_support import delivery_of, past_the_horizon
from tests.integration.fulfilment_support import (
    advance,
    events_of,
    line_named,
    place_order,
    read_order,
    wait_for,
)

BRUSH, KIT, VOUCHER = "Oral-B Pro 3", "Home Whitening Kit", "Hygienist voucher"


def _staff_move(
    client: TestClient, person: Any, order: dict[str, Any], line: str, **body: Any
) -> httpx.Response:
    line_item_id = line_named(order, line)["line_item_id"]
    return client.post(
        f"/v1/orders/{order['order_id']}/lines/{line_item_id}/fulfilment",
        headers=person.headers,
        json=body,
    )


def _notifications(database: Database, line_item_id: str) -> list[str]:
    return [
        e.data["notification"]
        for e in events_of(database, "fulfilment.stage_changed")
        if e.data["line_item_id"] == line_item_id
    ]


def test_a_mixed_order_goes_through_every_stage_to_completed(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
    live_api: BackgroundServer,
) -> None:
    order = place_order(
        client, world.patient_a, [(shop.toothbrush, 1), (shop.kit, 1), (shop.voucher, 2)]
    )
    order_id = order["order_id"]

    def staff_view() -> dict[str, Any]:
        return read_order(client, world.admin_a, order_id)

    # Born: the voucher delivered at once, the kit being prepared, the brush waiting.
    assert [(line["name"], line["fulfilment_status"]) for line in order["lines"]] == [
        (BRUSH, "pending"),
        (KIT, "preparing"),
        (VOUCHER, "delivered"),
    ]
    assert order["status"] == "Created"  # the least advanced line is the brush
    (task,) = events_of(database, "fulfilment.staff_task")
    assert (task.data["task"], task.data["patient_first_name"]) == (
        "prepare_for_collection",
        "Penny",
    )
    assert task.data["in_clinic_stock_available"] is True

    # The relay submits the brush; the supplier accepts it.
    context.relay.run_once()
    brush = line_named(staff_view(), BRUSH)
    assert brush["fulfilment_status"] == "sent_to_supplier"
    assert brush["fulfilment_ref"].startswith("shp_")
    assert staff_view()["status"] == "Fulfilment-In-Progress"

    # The supplier dispatches it: tracking reaches the order through the signed webhook.
    advance(suppliers_url, brush["fulfilment_ref"])
    dispatched = wait_for(
        staff_view, lambda o: line_named(o, BRUSH)["fulfilment_status"] == "dispatched"
    )
    tracking = line_named(dispatched, BRUSH)["tracking"]
    assert tracking["carrier"]
    assert tracking["tracking_number"]
    assert tracking["tracking_url"].startswith("https://")
    assert line_named(dispatched, BRUSH)["dispatched_at"]
    assert dispatched["status"] == "Fulfilment-In-Progress"

    # Staff hand over the kit.
    ready = _staff_move(client, world.staff_a, order, KIT, status="ready_for_collection")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "Fulfilment-In-Progress"
    collected = _staff_move(client, world.clinician_a, order, KIT, status="collected")
    assert line_named(collected.json(), KIT)["collected_at"]
    assert collected.json()["status"] == "Fulfilment-In-Progress"

    # In transit, then delivered: the last line done, the order is Completed.
    advance(suppliers_url, brush["fulfilment_ref"])
    advance(suppliers_url, brush["fulfilment_ref"])
    done = wait_for(staff_view, lambda o: o["status"] == "Completed")
    assert line_named(done, BRUSH)["delivered_at"]
    assert done["fulfilment_status"] == "Completed"

    assert _notifications(database, brush["line_item_id"]) == [
        "sent_to_supplier",
        "shipment_dispatched",
        "in_transit",
        "delivered",
    ]
    assert _notifications(database, line_named(order, KIT)["line_item_id"]) == [
        "preparing",
        "pickup_ready",
        "collected",
    ]
    assert _notifications(database, line_named(order, VOUCHER)["line_item_id"]) == ["delivered"]
    for event_type in ("stage_changed", "staff_task", "shipment_requested"):
        for event in events_of(database, f"fulfilment.{event_type}"):
            jsonschema.validate(
                event.data,
                BY_NAME[event.event_type].schema(),
                format_checker=jsonschema.FormatChecker(),
            )
    statuses = [
        (e["before"]["status"], e["after"]["status"])
        for e in done["audit_trail"]
        if e["action"] == "order.status_changed"
    ]
    assert statuses == [
        ("Created", "Fulfilment-In-Progress"),
        ("Fulfilment-In-Progress", "Completed"),
    ]
    patient = read_order(client, world.patient_a, order_id)
    assert [e["event"] for e in patient["timeline"]][-1] == "delivered"


def test_the_patient_sees_tracking_on_their_own_order_and_another_patient_gets_404(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    suppliers_url: str,
    live_api: BackgroundServer,
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    context.relay.run_once()
    shipment = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)
    advance(suppliers_url, shipment["fulfilment_ref"])

    mine = wait_for(
        lambda: read_order(client, world.patient_a, order["order_id"]),
        lambda o: o["lines"][0]["fulfilment_status"] == "dispatched",
    )
    other = client.get(f"/v1/orders/{order['order_id']}", headers=world.patient_a2.headers)

    tracking = mine["lines"][0]["tracking"]
    assert tracking["carrier"]
    assert tracking["tracking_number"] in tracking["tracking_url"]
    assert other.status_code == 404
    assert "dispatched" in [e["event"] for e in mine["timeline"]]


def test_staff_see_masked_voucher_codes_and_no_full_code_reaches_logs_or_audit(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        order = place_order(client, world.patient_a, [(shop.voucher, 3)])
        patient = read_order(client, world.patient_a, order["order_id"])
        staff = read_order(client, world.admin_a, order["order_id"])
    finally:
        configure_logging("INFO")

    codes = [v["code"] for v in patient["lines"][0]["vouchers"]]
    assert codes == [v["code"] for v in order["lines"][0]["vouchers"]]
    assert len(set(codes)) == 3
    assert all(len(code.replace("-", "")) == 20 for code in codes)  # PRIM + 16 base32 = 80 bits
    masked = [v["code"] for v in staff["lines"][0]["vouchers"]]
    assert all("••••" in code for code in masked)
    with Session(database.engine) as session:
        audit = json.dumps(
            [[e.before, e.after, e.action] for e in session.scalars(select(AuditEntry))],
            ensure_ascii=False,
        )
        events = json.dumps([e.data for e in session.scalars(select(OutboxEvent))])
    for code in codes:
        for text in (stream.getvalue(), audit, events, json.dumps(staff)):
            assert code not in text
            assert code.replace("-", "") not in text


def test_a_delivery_exception_is_queued_audited_and_notified_and_resolving_it_clears_it(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
    live_api: BackgroundServer,
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    context.relay.run_once()
    shipment_id = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)[
        "fulfilment_ref"
    ]
    httpx.post(
        f"{suppliers_url}/_simulator/shipments/{shipment_id}/exception", json={"reason": "lost"}
    ).raise_for_status()

    def queue() -> dict[str, Any]:
        response = client.get("/v1/fulfilment/exceptions", headers=world.staff_a.headers)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    queued = wait_for(queue, lambda page: len(page["items"]) == 1)
    item = queued["items"][0]
    assert (item["order_id"], item["exception_reason"]) == (order["order_id"], "lost")
    assert item["since"]
    staff = read_order(client, world.admin_a, order["order_id"])
    assert "fulfilment.exception" in [e["action"] for e in staff["audit_trail"]]
    assert line_named(staff, BRUSH)["exception_reason"] == "lost"
    assert "delivery_exception" in _notifications(database, item["line_item_id"])
    tasks = [e.data["task"] for e in events_of(database, "fulfilment.staff_task")]
    assert "resolve_fulfilment_exception" in tasks
    other_practice = client.get("/v1/fulfilment/exceptions", headers=world.admin_b.headers)
    assert other_practice.json()["items"] == []

    resolved = _staff_move(client, world.admin_a, order, BRUSH, status="delivered")

    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "Completed"
    assert queue()["items"] == []


def test_an_exception_left_for_a_refund_leaves_the_queue_and_a_resend_goes_back_to_the_supplier(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    suppliers_url: str,
    live_api: BackgroundServer,
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    httpx.post(
        f"{suppliers_url}/_simulator/refusals", json={"code": "out_of_stock", "times": 1}
    ).raise_for_status()
    context.relay.run_once()  # refused for good: parked, the line an exception at once
    line = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)
    assert (line["fulfilment_status"], line["exception_reason"]) == ("exception", "out_of_stock")

    left = _staff_move(client, world.admin_a, order, BRUSH, status="exception", resolution="refund")
    assert left.status_code == 200, left.text
    queue = client.get("/v1/fulfilment/exceptions", headers=world.admin_a.headers).json()
    assert queue["items"] == []

    resent = _staff_move(client, world.admin_a, order, BRUSH, status="sent_to_supplier")
    assert resent.status_code == 200, resent.text
    context.relay.run_once()
    line = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)
    assert line["fulfilment_status"] == "sent_to_supplier"
    shipments = httpx.get(
        f"{suppliers_url}/_simulator/shipments", params={"reference": f"{line['line_item_id']}:2"}
    ).json()
    assert len(shipments if isinstance(shipments, list) else shipments["shipments"]) == 1


def test_when_the_supplier_is_down_the_order_stands_and_after_the_retries_the_line_is_an_exception(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
) -> None:
    httpx.post(
        f"{suppliers_url}/_simulator/faults",
        json={"operation": "submit", "mode": "error", "status": 503, "times": 100},
    ).raise_for_status()
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    assert order["status"] == "Created"  # payment captured: the order exists regardless

    context.relay.run_once()
    (request,) = events_of(database, "fulfilment.shipment_requested")
    shipment = delivery_of(database, request.event_id)
    assert (shipment.status, shipment.attempts) == ("pending", 1)  # retried later, not lost
    line = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)
    assert line["fulfilment_status"] == "pending"

    past_the_horizon(database, request.event_id)  # the relay tries for about three days
    context.relay.run_once()

    line = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)
    assert (line["fulfilment_status"], line["exception_reason"]) == (
        "exception",
        "supplier_unavailable",
    )
    assert delivery_of(database, request.event_id).status == "parked"
    queue = client.get("/v1/fulfilment/exceptions", headers=world.admin_a.headers).json()
    assert [i["line_item_id"] for i in queue["items"]] == [line["line_item_id"]]


def test_an_undeliverable_address_is_refused_and_becomes_an_exception(
    client: TestClient, context: AppContext, world: World, shop: Shop, suppliers_url: str
) -> None:
    checkout = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, "Idempotency-Key": "undeliverable"},
        json={
            "lines": [{"product_id": str(shop.toothbrush), "quantity": 1}],
            "delivery_address": {**ADDRESS, "postcode": "XX0 0XX"},
        },
    ).json()
    httpx.post(checkout["payment"]["payment_url"], json={"card_number": "4242424242424242"})
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()

    context.relay.run_once()

    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert (line["fulfilment_status"], line["exception_reason"]) == ("exception", "address_problem")


def _supplier_webhook(
    client: TestClient,
    data: dict[str, Any],
    *,
    secret: str = SUPPLIER_WEBHOOK_SECRET,
    timestamp: int | None = None,
    event_id: str = "evt_test_1",
) -> httpx.Response:
    body = json.dumps({"id": event_id, "type": f"shipment.{data['status']}", "data": data}).encode()
    headers = sign(secret, event_id, timestamp or int(time.time()), body).as_dict()
    return client.post(
        "/v1/webhooks/suppliers",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("problem", ["wrong_secret", "stale", "unsigned"])
def test_a_forged_or_stale_supplier_webhook_is_refused_and_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database, problem: str
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    data = {
        "shipment_id": "shp_forged",
        "reference": f"{order['lines'][0]['line_item_id']}:1",
        "status": "delivered",
        "sequence": 9,
        "delivered_at": "2026-11-30T10:00:00+00:00",
    }
    if problem == "unsigned":
        response = client.post("/v1/webhooks/suppliers", json={"id": "x", "data": data})
    elif problem == "stale":
        response = _supplier_webhook(client, data, timestamp=int(time.time()) - 3600)
    else:
        response = _supplier_webhook(client, data, secret="whsec_" + "QUJD" * 10)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert line["fulfilment_status"] == "pending"


def test_a_tracking_number_that_passes_the_luhn_check_is_not_refused_as_card_data(
    client: TestClient, world: World, shop: Shop, context: AppContext
) -> None:
    """One carrier tracking number in ten of 13-19 digits passes the Luhn check (DPD's have
    14): the card-data wall (web/abuse.py) must not refuse the supplier's update for it, or the
    line never leaves `sent_to_supplier` (the supplier gets the same 422 on every retry)."""
    parcel = "64818311058679"  # Luhn-valid, and a real DPD number's shape
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    context.relay.run_once()
    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert line["fulfilment_status"] == "sent_to_supplier"
    data = {
        "shipment_id": line["fulfilment_ref"],
        "reference": f"{line['line_item_id']}:1",
        "status": "dispatched",
        "sequence": 2,
        "occurred_at": "2026-11-30T10:00:00+00:00",
        "carrier": "DPD",
        "tracking_number": parcel,
        "tracking_url": f"https://track.example-carrier.test/parcel/dpd/{parcel}",
        "dispatched_at": "2026-11-30T10:00:00+00:00",
    }

    response = _supplier_webhook(client, data, event_id="evt_luhn_parcel")

    assert response.status_code == 200, response.text
    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert line["fulfilment_status"] == "dispatched"
    assert line["tracking"]["tracking_number"] == parcel


def test_an_update_for_an_unknown_shipment_is_acknowledged_and_recorded(
    client: TestClient, database: Database
) -> None:
    response = _supplier_webhook(
        client,
        {
            "shipment_id": "shp_nobody",
            "reference": "not-ours",
            "status": "dispatched",
            "sequence": 2,
        },
    )
    again = _supplier_webhook(
        client,
        {
            "shipment_id": "shp_nobody",
            "reference": "not-ours",
            "status": "dispatched",
            "sequence": 2,
        },
    )

    assert response.json() == {"status": "unknown_shipment"}
    assert again.json() == {"status": "duplicate"}
    with Session(database.engine) as session:
        (entry,) = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "supplier.unknown_shipment")
        ).all()
    assert entry.after is not None
    assert entry.after["shipment_id"] == "shp_nobody"


def test_staff_moves_follow_the_transition_table(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1), (shop.voucher, 1)])

    repeated = _staff_move(client, world.staff_a, order, KIT, status="preparing")
    backwards_digital = _staff_move(client, world.staff_a, order, VOUCHER, status="preparing")
    tracking_on_kit = _staff_move(
        client, world.staff_a, order, KIT, status="dispatched", carrier="DPD", tracking_number="1"
    )
    collected = _staff_move(client, world.staff_a, order, KIT, status="collected")
    backwards = _staff_move(client, world.staff_a, order, KIT, status="ready_for_collection")
    other_practice = _staff_move(client, world.admin_b, order, KIT, status="collected")
    patient = _staff_move(client, world.patient_a, order, KIT, status="collected")
    finance = _staff_move(client, world.finance_a, order, KIT, status="collected")

    assert repeated.status_code == 200
    assert [e["action"] for e in repeated.json()["audit_trail"]].count("fulfilment.preparing") == 1
    assert backwards_digital.status_code == 409
    assert backwards_digital.json()["code"] == "invalid_fulfilment_transition"
    assert tracking_on_kit.status_code == 409
    assert collected.status_code == 200
    assert line_named(collected.json(), KIT)["fulfilment_status"] == "collected"
    assert (backwards.status_code, backwards.json()["code"]) == (
        409,
        "invalid_fulfilment_transition",
    )
    assert other_practice.status_code == 404
    assert (patient.status_code, finance.status_code) == (403, 403)


def test_staff_cannot_mark_a_drop_ship_line_accepted_by_the_supplier(
    client: TestClient, world: World, shop: Shop
) -> None:
    """Only the supplier network accepts a shipment (a line never submitted stays pending)."""
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])

    response = _staff_move(client, world.admin_a, order, BRUSH, status="sent_to_supplier")

    assert (response.status_code, response.json()["code"]) == (
        409,
        "invalid_fulfilment_transition",
    )
    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert line["fulfilment_status"] == "pending"


def test_the_collection_list_shows_in_clinic_lines_being_prepared_or_ready(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    first = place_order(client, world.patient_a, [(shop.kit, 1)])
    second = place_order(client, world.patient_a2, [(shop.kit, 2), (shop.toothbrush, 1)])
    _staff_move(client, world.staff_a, second, KIT, status="ready_for_collection")

    page = client.get("/v1/fulfilment/collections", headers=world.clinician_a.headers).json()
    page_of_one = client.get(
        "/v1/fulfilment/collections", headers=world.clinician_a.headers, params={"limit": 1}
    ).json()

    assert [(i["order_id"], i["fulfilment_status"]) for i in page["items"]] == [
        (first["order_id"], "preparing"),
        (second["order_id"], "ready_for_collection"),
    ]
    assert len(page_of_one["items"]) == 1
    rest = client.get(
        "/v1/fulfilment/collections",
        headers=world.clinician_a.headers,
        params={"cursor": page_of_one["next_cursor"]},
    ).json()
    assert [i["order_id"] for i in rest["items"]] == [second["order_id"]]
    with Session(database.engine) as session:
        states = sorted(session.scalars(select(OrderLine.fulfilment_status)).all())
    assert states == ["pending", "preparing", "ready_for_collection"]


@pytest.mark.parametrize(
    "body",
    [
        {"status": "dispatched"},  # tracking by hand needs carrier and number
        {"status": "dispatched", "carrier": "DPD"},
        {"status": "collected", "carrier": "DPD", "tracking_number": "1"},
        {"status": "ready_for_collection", "reason": "lost"},
        {"status": "exception", "reason": "misplaced"},
        {
            "status": "dispatched",
            "carrier": "DPD",
            "tracking_number": "1",
            "tracking_url": "ftp://x",
        },
        {"status": "collected", "note": "handed over\x00"},
    ],
)
def test_a_staff_move_with_fields_its_status_does_not_take_is_a_422_and_changes_nothing(
    client: TestClient, world: World, shop: Shop, body: dict[str, Any]
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1)])

    response = _staff_move(client, world.staff_a, order, KIT, **body)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert line["fulfilment_status"] == "preparing"


# ---- races and repeats found in review ----------------------------------------------------------


def _update(line_item_id: str, **fields: Any) -> Any:
    from product_shop.fulfilment.shipments import parse_update

    return parse_update({"shipment_id": "shp_x", "reference": f"{line_item_id}:1", **fields})


def _apply(context: AppContext, event_id: str, update_: Any) -> str:
    result: str = context.database.run(
        lambda session: context.supplier_updates.apply(session, event_id, update_)
    )
    return result


def test_the_relays_late_acceptance_never_undoes_a_supplier_exception(
    client: TestClient, context: AppContext, world: World, shop: Shop, database: Database
) -> None:
    from product_shop.events.delivery import PendingEvent
    from product_shop.fulfilment.shipments import ShipmentFollowUp
    from product_shop.integrations.suppliers import Shipment, ShipmentStatus

    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    line_item_id = order["lines"][0]["line_item_id"]
    # The supplier's exception callback commits before the relay records the submit's answer.
    assert (
        _apply(
            context,
            "evt_exc",
            _update(line_item_id, status="exception", sequence=2, exception_reason="out_of_stock"),
        )
        == "applied"
    )
    (request,) = events_of(database, "fulfilment.shipment_requested")
    event = PendingEvent(
        0,
        "supplier_network",
        request.position,
        request.event_id,
        request.event_type,
        request.source,
        request.subject,
        request.aggregate_type,
        request.aggregate_id,
        request.occurred_at,
        request.data,
        0,
    )
    follow_up = ShipmentFollowUp(context.fulfilment._lines)
    with context.database.unit_of_work() as session:
        follow_up.delivered(
            session, event, Shipment("shp_x", f"{line_item_id}:1", ShipmentStatus.ACCEPTED, 1)
        )

    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert (line["fulfilment_status"], line["exception_reason"]) == ("exception", "out_of_stock")
    queue = client.get("/v1/fulfilment/exceptions", headers=world.admin_a.headers).json()
    assert [i["line_item_id"] for i in queue["items"]] == [line_item_id]


def test_a_second_resend_sends_nothing_and_a_resend_that_fails_again_is_back_in_the_queue(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    httpx.post(
        f"{suppliers_url}/_simulator/refusals", json={"code": "out_of_stock", "times": 2}
    ).raise_for_status()
    context.relay.run_once()  # refused: an exception

    first = _staff_move(client, world.admin_a, order, BRUSH, status="sent_to_supplier")
    second = _staff_move(client, world.staff_a, order, BRUSH, status="sent_to_supplier")
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(events_of(database, "fulfilment.shipment_requested")) == 2  # one resend only
    assert (
        client.get("/v1/fulfilment/exceptions", headers=world.admin_a.headers).json()["items"] == []
    )

    context.relay.run_once()  # refused again

    queue = client.get("/v1/fulfilment/exceptions", headers=world.admin_a.headers).json()
    assert [i["line_item_id"] for i in queue["items"]] == [order["lines"][0]["line_item_id"]]
    trail = [
        e["action"] for e in read_order(client, world.admin_a, order["order_id"])["audit_trail"]
    ]
    assert trail.count("fulfilment.exception") == 2
    notifications = _notifications(database, order["lines"][0]["line_item_id"])
    assert notifications.count("delivery_exception") == 2


def test_an_update_about_a_replaced_shipment_is_unknown_after_a_resend(
    client: TestClient, context: AppContext, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    line_item_id = order["lines"][0]["line_item_id"]
    _apply(
        context,
        "e1",
        _update(line_item_id, status="exception", sequence=2, exception_reason="lost"),
    )
    assert _staff_move(client, world.admin_a, order, BRUSH, status="sent_to_supplier").is_success

    late = _apply(
        context,
        "e2",
        _update(line_item_id, status="exception", sequence=3, exception_reason="damaged"),
    )

    assert late == "unknown_shipment"
    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert line["exception_reason"] == "lost"


def test_staff_cannot_move_a_drop_ship_line_the_supplier_has_not_answered_for(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])

    response = _staff_move(client, world.admin_a, order, BRUSH, status="delivered")

    assert (response.status_code, response.json()["code"]) == (
        409,
        "invalid_fulfilment_transition",
    )
    assert (
        read_order(client, world.admin_a, order["order_id"])["lines"][0]["fulfilment_status"]
        == "pending"
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"shipment_id": "s" * 200},
        {"sequence": 2**40},
        {"sequence": 0},
        {"tracking_url": "javascript:alert(1)"},
        {"carrier": "c" * 200},
        {"sequence": True},  # a number is a number
        {"carrier": "DPD\u0000\u001b[31m"},  # control characters are never a carrier's name
        {"tracking_number": "T\nX"},
    ],
)
def test_a_signed_but_malformed_supplier_update_is_a_400_not_a_500(
    client: TestClient, world: World, shop: Shop, fields: dict[str, Any]
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    data = {
        "shipment_id": "shp_x",
        "reference": f"{order['lines'][0]['line_item_id']}:1",
        "status": "dispatched",
        "sequence": 2,
        **fields,
    }

    response = _supplier_webhook(client, data)

    assert (response.status_code, response.json()["code"]) == (400, "malformed_webhook")


def test_a_webhook_id_longer_than_the_inbox_keeps_is_a_400(client: TestClient) -> None:
    data = {"shipment_id": "shp_x", "reference": "x:1", "status": "accepted", "sequence": 1}

    response = _supplier_webhook(client, data, event_id="e" * 121)

    assert (response.status_code, response.json()["code"]) == (400, "malformed_webhook")


def test_a_dispatched_line_never_goes_back_to_sent_to_supplier_after_an_exception(
    client: TestClient, context: AppContext, world: World, shop: Shop
) -> None:
    """README: never moving a line back. "Accepted" again for a shipment already dispatched is
    stale; the exception's way back to the supplier is a staff resend (a new shipment)."""
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    line_item_id = order["lines"][0]["line_item_id"]
    steps = [
        (
            "evt_d",
            {"status": "dispatched", "sequence": 2, "carrier": "DPD", "tracking_number": "T1"},
        ),
        ("evt_e", {"status": "exception", "sequence": 3, "exception_reason": "lost"}),
        ("evt_a", {"status": "accepted", "sequence": 4}),
    ]
    outcomes = [
        _apply(context, event_id, _update(line_item_id, **fields)) for event_id, fields in steps
    ]

    assert outcomes == ["applied", "applied", "stale"]
    line = read_order(client, world.admin_a, order["order_id"])["lines"][0]
    assert (line["fulfilment_status"], line["exception_reason"]) == ("exception", "lost")
