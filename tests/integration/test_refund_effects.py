"""What a refund does beyond the money (spec §5.3, §3.3, §6, §16): refunded lines stop where they
can (an in-clinic collection withdrawn, a drop-ship parcel cancelled at the supplier network or,
once it has left, a task for staff, digital vouchers voided); captures that made no order are
refunded through the same staff-only path; the patient's right to cancel makes a task, never a
refund; and a replayed Idempotency-Key never refunds twice."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.delivery import PendingEvent
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import BY_NAME
from product_shop.fulfilment.lines import LineFulfilment
from product_shop.fulfilment.shipments import CancellationFollowUp, SupplierUpdates, parse_update
from product_shop.integrations.suppliers import Shipment, ShipmentStatus
from product_shop.orders.tables import Order, OrderLine
from product_shop.refunds.tables import CancellationRequest, Refund
from product_shop.simulators.server import BackgroundServer
from tests.conftest import Person, World
from tests.integration.checkout_support import Shop, key, paid_checkout, simulator_intent
from tests.integration.delivery_support import delivery_of
from tests.integration.fulfilment_support import (
    advance,
    events_of,
    line_named,
    place_order,
    read_order,
    wait_for,
)
from tests.integration.refund_support import refund, simulator_refunds

BRUSH, KIT, VOUCHER = "Oral-B Pro 3", "Home Whitening Kit", "Hygienist voucher"
WHOLE = {"reason_code": "customer_request"}
NEXT_STEPS = "Your request has been sent to the practice."
SOME_NOT_COVERED = "Some items cannot be cancelled this way; each line says why."


# ---- helpers -------------------------------------------------------------------------------------


def refund_exception(
    client: TestClient,
    headers: dict[str, str],
    exception_id: str,
    *,
    idempotency_key: str | None = None,
) -> httpx.Response:
    idempotency = {"Idempotency-Key": idempotency_key} if idempotency_key else key()
    return client.post(
        f"/v1/payment-exceptions/{exception_id}/refund",
        headers={**headers, **idempotency},
        json=WHOLE,
    )


def supplier_shipment(suppliers_url: str, shipment_id: str) -> dict[str, Any]:
    response = httpx.get(f"{suppliers_url}/_simulator/shipments/{shipment_id}")
    assert response.status_code == 200, response.text
    shipment: dict[str, Any] = response.json()
    return shipment


def redeem(client: TestClient, person: Person, code: str) -> httpx.Response:
    return client.post("/v1/vouchers/redemptions", headers=person.headers, json={"code": code})


def voucher_codes(client: TestClient, patient: Person, order_id: str) -> list[str]:
    """The full codes, as only the owning patient's own order view shows them (by unit_no)."""
    line = line_named(read_order(client, patient, order_id), VOUCHER)
    return [v["code"] for v in sorted(line["vouchers"], key=lambda v: v["unit_no"])]


def ask_to_cancel(
    client: TestClient,
    person: Person,
    order_id: str,
    body: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
) -> httpx.Response:
    idempotency = {"Idempotency-Key": idempotency_key} if idempotency_key else key()
    return client.post(
        f"/v1/orders/{order_id}/cancellation-requests",
        headers={**person.headers, **idempotency},
        json=body if body is not None else {},
    )


def orphaned_capture(
    client: TestClient, world: World, shop: Shop, payments_url: str
) -> dict[str, Any]:
    """A capture of the wrong amount (100 for a 6000 voucher): no order, a payment exception.
    Returns the simulator's intent (its `transaction_ref` is the exception's payment_ref)."""
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent_id = checkout["payment"]["intent_id"]
    httpx.patch(
        f"{payments_url}/_simulator/intents/{intent_id}", json={"amount_minor": 100}
    ).raise_for_status()
    completed = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )
    assert completed.status_code == 409, completed.text
    assert completed.json()["code"] == "payment_mismatch"
    return simulator_intent(payments_url, intent_id)


def payment_exceptions(client: TestClient, person: Person, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/payment-exceptions", headers=person.headers, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def events_for(database: Database, event_type: str, line_item_id: str) -> list[OutboxEvent]:
    return [e for e in events_of(database, event_type) if e.data["line_item_id"] == line_item_id]


def staff_tasks(database: Database, line_item_id: str) -> list[str]:
    return [e.data["task"] for e in events_for(database, "fulfilment.staff_task", line_item_id)]


def notifications(database: Database, line_item_id: str) -> list[str]:
    return [
        e.data["notification"]
        for e in events_for(database, "fulfilment.stage_changed", line_item_id)
    ]


def trail(order: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [entry for entry in order["audit_trail"] if entry["action"] == action]


def valid(event: OutboxEvent) -> None:
    jsonschema.validate(
        event.data, BY_NAME[event.event_type].schema(), format_checker=jsonschema.FormatChecker()
    )


def count(database: Database, table: Any, *where: Any) -> int:
    with Session(database.engine) as session:
        statement = select(func.count()).select_from(table)
        for condition in where:
            statement = statement.where(condition)
        return int(session.scalar(statement) or 0)


def poke_line(database: Database, line_item_id: str, **values: Any) -> None:
    """Set a line's state directly (the clock cannot be turned back through the API)."""
    with Session(database.engine) as session, session.begin():
        session.execute(
            update(OrderLine)
            .where(OrderLine.line_item_id == uuid.UUID(line_item_id))
            .values(**values)
        )


def submitted(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    suppliers_url: str,
    *,
    hold_callbacks: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A paid toothbrush order whose shipment the supplier network has accepted. Its callbacks
    are held while the relay records the acceptance (never two writers of the line at once; that
    race has its own test), then delivered and awaited, unless `hold_callbacks` keeps them (and
    every later one) held until the test releases them."""
    httpx.post(f"{suppliers_url}/_simulator/callbacks/hold").raise_for_status()
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    context.relay.run_once()
    line = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)
    assert (line["fulfilment_status"], line["fulfilment_ref"][:4]) == ("sent_to_supplier", "shp_")
    if not hold_callbacks:
        release_supplier_callbacks(suppliers_url, expected=1)
        wait_for(
            lambda: supplier_shipment(suppliers_url, line["fulfilment_ref"]),
            lambda s: s["callbacks_sent"] + s["callbacks_failed"] >= 1,
        )
    return order, line


def release_supplier_callbacks(suppliers_url: str, *, expected: int) -> None:
    released = httpx.post(f"{suppliers_url}/_simulator/callbacks/release")
    assert released.status_code == 200, released.text
    assert released.json() == {"released": expected}


# ---- 1. an in-clinic line stops: its collection is withdrawn -------------------------------------


@pytest.mark.parametrize("stage", ["preparing", "ready_for_collection"])
def test_a_fully_refunded_kit_not_yet_collected_is_cancelled_and_its_collection_withdrawn(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    with_mfa: Callable[..., dict[str, str]],
    stage: str,
) -> None:
    # given a paid kit, being prepared or ready for collection
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    order_id, kit = order["order_id"], line_named(order, KIT)["line_item_id"]
    if stage == "ready_for_collection":
        moved = client.post(
            f"/v1/orders/{order_id}/lines/{kit}/fulfilment",
            headers=world.staff_a.headers,
            json={"status": stage},
        )
        assert moved.status_code == 200, moved.text

    # when finance refunds the whole order
    response = refund(client, with_mfa(world.finance_a), order_id, WHOLE)

    # then the kit is cancelled, by the refunding staff member, and the collection withdrawn
    assert response.status_code == 201, response.text
    after = read_order(client, world.admin_a, order_id)
    line = line_named(after, KIT)
    assert (line["fulfilment_status"], line["refunded_quantity"]) == ("cancelled", 1)
    assert (after["status"], after["fulfilment_status"], after["refund_status"]) == (
        "Refunded",
        "Completed",
        "full",
    )
    (cancelled,) = trail(after, "fulfilment.cancelled")
    assert (cancelled["actor_id"], cancelled["actor_name"], cancelled["actor_role"]) == (
        world.finance_a.actor.actor_id,
        "Fin Ance",
        "finance",
    )
    assert cancelled["after"]["line_item_id"] == kit
    # the stage records that a note came with it, never its text (the log is never rewritten)
    assert cancelled["after"]["has_note"] is True
    assert "note" not in cancelled["after"]
    assert staff_tasks(database, kit) == ["prepare_for_collection", "collection_withdrawn"]
    assert notifications(database, kit)[-1] == "cancelled"
    assert notifications(database, kit).count("cancelled") == 1
    (withdrawn,) = [
        e
        for e in events_for(database, "fulfilment.staff_task", kit)
        if e.data["task"] == "collection_withdrawn"
    ]
    (stage_changed,) = [
        e
        for e in events_for(database, "fulfilment.stage_changed", kit)
        if e.data["notification"] == "cancelled"
    ]
    assert (withdrawn.data["order_id"], withdrawn.data["product_name"]) == (order_id, KIT)
    assert stage_changed.data["status"] == "cancelled"
    valid(withdrawn)
    valid(stage_changed)
    # and the kit has left the clinic's collection list
    collections = client.get("/v1/fulfilment/collections", headers=world.staff_a.headers)
    assert collections.json()["items"] == []


def test_refunding_one_of_two_kits_leaves_the_line_going(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given a paid order of two kits, being prepared
    order = place_order(client, world.patient_a, [(shop.kit, 2)])
    order_id, kit = order["order_id"], line_named(order, KIT)["line_item_id"]
    before = read_order(client, world.admin_a, order_id)
    assert before["fulfilment_status"] == "Fulfilment-In-Progress"

    # when one of the two is refunded, by lines
    response = refund(
        client,
        with_mfa(world.admin_a),
        order_id,
        {"reason_code": "damaged_item", "lines": [{"line_item_id": kit, "quantity": 1}]},
    )

    # then the line still goes to the patient (one kit), showing the unit refunded
    assert response.status_code == 201, response.text
    assert response.json()["amount_minor"] == 24900
    after = read_order(client, world.admin_a, order_id)
    line = line_named(after, KIT)
    assert (line["fulfilment_status"], line["refunded_quantity"]) == ("preparing", 1)
    assert (after["status"], after["fulfilment_status"], after["refund_status"]) == (
        "Refunded",
        "Fulfilment-In-Progress",
        "partial",
    )
    assert trail(after, "fulfilment.cancelled") == []
    assert staff_tasks(database, kit) == ["prepare_for_collection"]
    assert "cancelled" not in notifications(database, kit)


def test_a_kit_already_collected_stays_collected_when_refunded(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given a kit the patient has collected
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    order_id, kit = order["order_id"], line_named(order, KIT)["line_item_id"]
    collected = client.post(
        f"/v1/orders/{order_id}/lines/{kit}/fulfilment",
        headers=world.clinician_a.headers,
        json={"status": "collected"},
    )
    assert collected.status_code == 200, collected.text

    # when it is refunded in full
    response = refund(client, with_mfa(world.finance_a), order_id, WHOLE)

    # then goods handed over cannot be stopped: the line keeps its state, showing the refund
    assert response.status_code == 201, response.text
    after = read_order(client, world.admin_a, order_id)
    line = line_named(after, KIT)
    assert (line["fulfilment_status"], line["refunded_quantity"]) == ("collected", 1)
    assert after["status"] == "Refunded"
    assert trail(after, "fulfilment.cancelled") == []
    assert "collection_withdrawn" not in staff_tasks(database, kit)


# ---- 2. a drop-ship line stops at the supplier network -------------------------------------------


def test_a_refund_before_dispatch_cancels_the_shipment_at_the_supplier(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
    live_api: BackgroundServer,
) -> None:
    # given a toothbrush the supplier network has accepted, not dispatched (its callbacks held
    # back, to arrive after the relay's follow-up: the race is the next test's)
    order, line = submitted(client, context, world, shop, suppliers_url, hold_callbacks=True)
    order_id, brush, shipment_id = order["order_id"], line["line_item_id"], line["fulfilment_ref"]

    # when finance refunds the whole order
    response = refund(client, with_mfa(world.finance_a), order_id, WHOLE)

    # then the line waits for the supplier to cancel: requested, with the event for the relay
    assert response.status_code == 201, response.text
    requested = read_order(client, world.admin_a, order_id)
    assert (
        line_named(requested, BRUSH)["fulfilment_status"],
        line_named(requested, BRUSH)["cancellation"],
    ) == ("sent_to_supplier", "requested")
    (asked,) = trail(requested, "fulfilment.cancellation_requested")
    assert (asked["actor_name"], asked["after"]["line_item_id"]) == ("Fin Ance", brush)
    (event,) = events_of(database, "fulfilment.shipment_cancellation_requested")
    assert (event.data["line_item_id"], event.data["shipment_id"]) == (brush, shipment_id)
    assert (event.data["reference"], event.data["attempt"]) == (f"{brush}:1", 1)
    valid(event)

    # when the relay delivers the cancellation
    context.relay.run_once()

    # then the supplier cancelled the shipment, and the line is cancelled
    shipment = supplier_shipment(suppliers_url, shipment_id)
    assert (shipment["status"], shipment["cancellations"]) == ("cancelled", 1)
    done = read_order(client, world.admin_a, order_id)
    assert (
        line_named(done, BRUSH)["fulfilment_status"],
        line_named(done, BRUSH)["cancellation"],
        line_named(done, BRUSH)["refunded_quantity"],
    ) == ("cancelled", None, 1)
    assert (done["status"], done["fulfilment_status"]) == ("Refunded", "Completed")
    (cancellation,) = events_of(database, "fulfilment.shipment_cancellation_requested")
    assert delivery_of(database, cancellation.event_id).status == "delivered"
    assert notifications(database, brush) == ["sent_to_supplier", "cancelled"]

    # when the supplier's callbacks arrive after all (accepted, then cancelled)
    release_supplier_callbacks(suppliers_url, expected=2)
    wait_for(
        lambda: supplier_shipment(suppliers_url, shipment_id),
        lambda s: s["callbacks_sent"] + s["callbacks_failed"] >= 2,
    )

    # then they change nothing: cancelled once, never an exception
    assert supplier_shipment(suppliers_url, shipment_id)["callbacks_failed"] == 0
    settled = read_order(client, world.admin_a, order_id)
    assert (
        line_named(settled, BRUSH)["fulfilment_status"],
        line_named(settled, BRUSH)["exception_reason"],
    ) == ("cancelled", None)
    assert notifications(database, brush) == ["sent_to_supplier", "cancelled"]
    assert len(trail(settled, "fulfilment.cancelled")) == 1
    assert trail(settled, "fulfilment.cancellation_refused") == []


def test_a_supplier_that_dispatches_before_the_cancellation_arrives_refuses_it(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
    live_api: BackgroundServer,
) -> None:
    # given a toothbrush refunded while with the supplier, its cancellation not yet sent
    order, line = submitted(client, context, world, shop, suppliers_url)
    order_id, brush, shipment_id = order["order_id"], line["line_item_id"], line["fulfilment_ref"]
    response = refund(client, with_mfa(world.finance_a), order_id, WHOLE)
    assert response.status_code == 201, response.text
    assert line_named(read_order(client, world.admin_a, order_id), BRUSH)["cancellation"] == (
        "requested"
    )
    # ... and the supplier dispatches it meanwhile (its callback arrives)
    advance(suppliers_url, shipment_id)
    wait_for(
        lambda: read_order(client, world.admin_a, order_id),
        lambda o: line_named(o, BRUSH)["fulfilment_status"] == "dispatched",
    )

    # when the relay delivers the cancellation
    context.relay.run_once()

    # then the supplier refused (already dispatched): the parcel goes on, marked refused
    shipment = supplier_shipment(suppliers_url, shipment_id)
    assert (shipment["status"], shipment["cancellations"]) == ("dispatched", 0)
    after = read_order(client, world.admin_a, order_id)
    assert (
        line_named(after, BRUSH)["fulfilment_status"],
        line_named(after, BRUSH)["cancellation"],
        line_named(after, BRUSH)["refunded_quantity"],
    ) == ("dispatched", "refused", 1)
    assert (after["status"], after["fulfilment_status"]) == ("Refunded", "Fulfilment-In-Progress")
    (refused,) = trail(after, "fulfilment.cancellation_refused")
    assert refused["actor_id"] == "supplier-network"
    assert refused["after"]["line_item_id"] == brush
    assert refused["after"]["reason"] == "The supplier network had already dispatched it."
    # and the practice's staff get a task for it
    assert staff_tasks(database, brush) == ["cancellation_refused"]
    (task,) = events_for(database, "fulfilment.staff_task", brush)
    valid(task)
    (cancellation,) = events_of(database, "fulfilment.shipment_cancellation_requested")
    assert delivery_of(database, cancellation.event_id).status == "parked"
    assert "cancelled" not in notifications(database, brush)


def test_a_refund_after_dispatch_asks_the_supplier_for_nothing(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
    live_api: BackgroundServer,
) -> None:
    # given a toothbrush the supplier has dispatched
    order, line = submitted(client, context, world, shop, suppliers_url)
    order_id, brush, shipment_id = order["order_id"], line["line_item_id"], line["fulfilment_ref"]
    advance(suppliers_url, shipment_id)
    wait_for(
        lambda: read_order(client, world.admin_a, order_id),
        lambda o: line_named(o, BRUSH)["fulfilment_status"] == "dispatched",
    )

    # when it is refunded in full
    response = refund(client, with_mfa(world.finance_a), order_id, WHOLE)

    # then a parcel on its way is not stopped: no cancellation is asked for at all
    assert response.status_code == 201, response.text
    after = read_order(client, world.admin_a, order_id)
    assert (
        line_named(after, BRUSH)["fulfilment_status"],
        line_named(after, BRUSH)["cancellation"],
        line_named(after, BRUSH)["refunded_quantity"],
    ) == ("dispatched", None, 1)
    assert after["status"] == "Refunded"
    assert events_of(database, "fulfilment.shipment_cancellation_requested") == []
    assert trail(after, "fulfilment.cancellation_requested") == []
    context.relay.run_once()
    assert supplier_shipment(suppliers_url, shipment_id)["status"] == "dispatched"
    assert staff_tasks(database, brush) == []


# ---- 2b. two writers of one line at once: the supplier's callback and our own change -----------
# The supplier network sends its callback as it answers us, so a callback may land between one
# of our writers reading a line (and its order) and writing it. Each test below lets the other
# transaction run inside that window: where row locks serialise the two (PostgreSQL's FOR
# UPDATE) it waits for our commit; without them it commits first, and the writer must not act
# on what it read before.


class ReadThenLetOtherRun(LineFulfilment):
    """Line moves whose first `lock`, once the line is read, starts `other` and gives it the
    time to finish (SQLite: nothing holds it back) or to queue on our row lock (PostgreSQL)."""

    def __init__(self, context: AppContext, other: threading.Thread) -> None:
        super().__init__(audit=context.audit, outbox=context.outbox, clock=context.clock)
        self._other = other
        self._sqlite = context.database.dialect == "sqlite"

    def lock(
        self, session: Session, line_item_id: uuid.UUID, *, order_id: uuid.UUID | None = None
    ) -> tuple[Order, OrderLine]:
        found = super().lock(session, line_item_id, order_id=order_id)
        if self._other.ident is None:  # the first lock only
            self._other.start()
            self._other.join(timeout=10 if self._sqlite else 0.3)
        return found


def pending_event(row: OutboxEvent) -> PendingEvent:
    return PendingEvent(
        0,
        "supplier_network",
        row.position,
        row.event_id,
        row.event_type,
        row.source,
        row.subject,
        row.aggregate_type,
        row.aggregate_id,
        row.occurred_at,
        row.data,
        0,
    )


def accepted_without_callbacks(
    client: TestClient, context: AppContext, world: World, shop: Shop, suppliers_url: str
) -> tuple[str, str, str]:
    """A toothbrush order the supplier network accepted, its callbacks held for good (the test
    plays the one it races): the order id, the line item id and the shipment id."""
    httpx.post(f"{suppliers_url}/_simulator/callbacks/hold").raise_for_status()
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    context.relay.run_once()
    line = line_named(read_order(client, world.admin_a, order["order_id"]), BRUSH)
    assert line["fulfilment_status"] == "sent_to_supplier"
    return order["order_id"], line["line_item_id"], line["fulfilment_ref"]


def test_the_suppliers_cancelled_callback_racing_the_relays_follow_up_cancels_the_line_once(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given a refunded toothbrush whose cancellation the supplier network has just confirmed
    order_id, brush, shipment_id = accepted_without_callbacks(
        client, context, world, shop, suppliers_url
    )
    assert refund(client, with_mfa(world.finance_a), order_id, WHOLE).status_code == 201
    (row,) = events_of(database, "fulfilment.shipment_cancellation_requested")
    reference = f"{brush}:1"
    callback = parse_update(
        {"shipment_id": shipment_id, "reference": reference, "status": "cancelled", "sequence": 2}
    )
    applied: list[str] = []
    supplier = threading.Thread(
        target=lambda: applied.append(
            context.database.run(
                lambda session: context.supplier_updates.apply(session, "evt_cancel", callback)
            )
        )
    )
    follow_up = CancellationFollowUp(
        ReadThenLetOtherRun(context, supplier), context.audit, context.clock
    )

    # when the relay's follow-up records the confirmation as the `shipment.cancelled` arrives
    with context.database.unit_of_work() as session:
        follow_up.delivered(
            session,
            pending_event(row),
            Shipment(shipment_id, reference, ShipmentStatus.CANCELLED, 2),
        )
    supplier.join(timeout=10)

    # then the line was cancelled exactly once: one audit entry, one notification to the patient
    assert not supplier.is_alive()
    assert applied in (["applied"], ["unchanged"])
    after = read_order(client, world.admin_a, order_id)
    assert (
        line_named(after, BRUSH)["fulfilment_status"],
        line_named(after, BRUSH)["cancellation"],
    ) == ("cancelled", None)
    assert notifications(database, brush) == ["sent_to_supplier", "cancelled"]
    assert len(trail(after, "fulfilment.cancelled")) == 1
    assert [
        (e["before"]["fulfilment_status"], e["after"]["fulfilment_status"])
        for e in trail(after, "order.status_changed")
    ] == [("Created", "Fulfilment-In-Progress"), ("Fulfilment-In-Progress", "Completed")]


def test_a_supplier_update_racing_a_refund_keeps_the_order_refunded(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
    live_api: BackgroundServer,
) -> None:
    # given an accepted toothbrush, refunded by staff just as the supplier reports it delivered
    order_id, brush, shipment_id = accepted_without_callbacks(
        client, context, world, shop, suppliers_url
    )
    refunded: list[httpx.Response] = []
    headers = with_mfa(world.finance_a)

    def staff_refunds() -> None:
        with httpx.Client(base_url=live_api.url, timeout=30) as api:
            refunded.append(refund(api, headers, order_id, WHOLE))

    staff = threading.Thread(target=staff_refunds)
    now = datetime.now(UTC)
    delivered = parse_update(
        {
            "shipment_id": shipment_id,
            "reference": f"{brush}:1",
            "status": "delivered",
            "sequence": 4,
            "carrier": "DPD",
            "tracking_number": "15501234567890",
            "tracking_url": "https://track.example/dpd/15501234567890",
            "dispatched_at": (now - timedelta(days=1)).isoformat(),
            "delivered_at": now.isoformat(),
        }
    )
    updates = SupplierUpdates(
        lines=ReadThenLetOtherRun(context, staff), audit=context.audit, clock=context.clock
    )

    # when the `shipment.delivered` callback is applied while the refund is recorded
    with context.database.unit_of_work() as session:
        assert updates.apply(session, "evt_delivered", delivered) == "applied"
    staff.join(timeout=30)

    # then both took effect: the parcel arrived (Completed), and the order is Refunded in full
    assert not staff.is_alive()
    (response,) = refunded
    assert response.status_code == 201, response.text
    after = read_order(client, world.admin_a, order_id)
    line = line_named(after, BRUSH)
    assert (line["fulfilment_status"], line["refunded_quantity"]) == ("delivered", 1)
    assert (after["refund_status"], after["refunds"]["refunded_minor"]) == ("full", 5999)
    assert (after["status"], after["fulfilment_status"]) == ("Refunded", "Completed")


# ---- 3. digital vouchers: a refund voids the unused ones -----------------------------------------


def test_after_a_refund_a_voided_voucher_is_void_a_used_one_used_and_elsewhere_unknown(
    client: TestClient,
    world: World,
    shop: Shop,
    person: Callable[..., Person],
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given two vouchers, one already used at the practice
    order = place_order(client, world.patient_a, [(shop.voucher, 2)])
    used, unused = voucher_codes(client, world.patient_a, order["order_id"])
    first = redeem(client, world.staff_a, used)
    assert first.status_code == 200, first.text

    # when the voucher line is refunded in full
    response = refund(client, with_mfa(world.finance_a), order["order_id"], WHOLE)
    assert response.status_code == 201, response.text

    # then the unused voucher is void, the used one stays used, and another practice knows neither
    void = redeem(client, world.staff_a, unused)
    again = redeem(client, world.staff_a, used)
    elsewhere = person("staff", world.practice_b, "Sam Staff")
    unknown = [redeem(client, elsewhere, code) for code in (unused, used)]
    assert (void.status_code, void.json()["code"]) == (409, "voucher_void")
    assert (again.status_code, again.json()["code"]) == (409, "voucher_used")
    assert [(r.status_code, r.json()["code"]) for r in unknown] == [(404, "voucher_not_found")] * 2
    # the full code is the patient's alone: staff see it masked
    staff_view = line_named(read_order(client, world.admin_a, order["order_id"]), VOUCHER)
    assert unused not in str(staff_view)


def test_refunding_one_of_three_vouchers_voids_exactly_one_and_the_rest_stay_usable(
    client: TestClient,
    world: World,
    shop: Shop,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given three unused vouchers
    order = place_order(client, world.patient_a, [(shop.voucher, 3)])
    codes = voucher_codes(client, world.patient_a, order["order_id"])
    line = line_named(order, VOUCHER)["line_item_id"]

    # when one of them is refunded, by lines
    response = refund(
        client,
        with_mfa(world.finance_a),
        order["order_id"],
        {"reason_code": "customer_request", "lines": [{"line_item_id": line, "quantity": 1}]},
    )

    # then exactly one is void (the last issued); the other two may still be used
    assert response.status_code == 201, response.text
    answers = [redeem(client, world.staff_a, code) for code in codes]
    assert [a.status_code for a in answers] == [200, 200, 409]
    assert answers[2].json()["code"] == "voucher_void"
    after = line_named(read_order(client, world.admin_a, order["order_id"]), VOUCHER)
    assert (after["fulfilment_status"], after["refunded_quantity"]) == ("delivered", 1)


# ---- 4. payment exceptions: captures that made no order ------------------------------------------


def test_an_orphaned_capture_is_listed_for_its_practice_only(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    # given a capture of the wrong amount (no order came of it)
    intent = orphaned_capture(client, world, shop, payments_url)

    # when finance and the practice admin of the practice, and practice B, list the exceptions
    finance = payment_exceptions(client, world.finance_a)
    admin = payment_exceptions(client, world.admin_a)
    other = payment_exceptions(client, world.admin_b)

    # then the practice's staff see it, open, for the amount captured; practice B sees nothing
    (item,) = finance
    assert admin == finance
    assert other == []
    assert (item["status"], item["reason"], item["payment_ref"]) == (
        "open",
        "amount_mismatch",
        intent["transaction_ref"],
    )
    assert (item["amount_minor"], item["expected_amount_minor"], item["refundable_minor"]) == (
        100,
        6000,
        100,
    )
    assert (item["intent_id"], item["refunded_minor"]) == (intent["intent_id"], 0)
    (orphan,) = events_of(database, "payment.orphaned_capture")
    assert orphan.data["payment_exception_id"] == item["exception_id"]
    valid(orphan)
    for outsider in (world.patient_a, world.clinician_a, world.staff_a):
        listed = client.get("/v1/payment-exceptions", headers=outsider.headers)
        assert listed.status_code == 403, outsider.actor.role
    read_by_b = client.get(
        f"/v1/payment-exceptions/{item['exception_id']}", headers=world.admin_b.headers
    )
    assert read_by_b.status_code == 404


def test_refunding_a_payment_exception_without_mfa_is_refused_and_refunds_nothing(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given an orphaned capture
    intent = orphaned_capture(client, world, shop, payments_url)
    (item,) = payment_exceptions(client, world.finance_a)

    # when finance asks to refund it without the MFA step-up
    response = refund_exception(client, with_mfa(world.finance_a, mfa=False), item["exception_id"])

    # then it is refused, and nothing at all was refunded
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "mfa_required"
    assert simulator_refunds(payments_url, intent["transaction_ref"]) == []
    assert count(database, Refund) == 0
    assert events_of(database, "payment.exception_refunded") == []
    (still,) = payment_exceptions(client, world.finance_a)
    assert (still["status"], still["refunded_minor"]) == ("open", 0)


def test_refunding_a_payment_exception_with_mfa_refunds_the_capture_once_and_closes_it(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given an orphaned capture of 100
    intent = orphaned_capture(client, world, shop, payments_url)
    (item,) = payment_exceptions(client, world.finance_a)
    exception_id = item["exception_id"]

    # when finance refunds it with fresh MFA
    response = refund_exception(client, with_mfa(world.finance_a), exception_id)

    # then one refund of the whole capture was made at Integrated Payments
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["payment_exception_id"], body["order_id"]) == (exception_id, None)
    assert (body["amount_minor"], body["status"], body["payment_ref"]) == (
        100,
        "succeeded",
        intent["transaction_ref"],
    )
    assert (body["initiated_by"], body["initiated_by_name"]) == (
        world.finance_a.actor.actor_id,
        "Fin Ance",
    )
    (made,) = simulator_refunds(payments_url, intent["transaction_ref"])
    assert (made["amount_minor"], made["merchant_reference"]) == (100, body["refund_id"])
    # the exception is refunded: out of the default list, shown when asked for
    assert payment_exceptions(client, world.finance_a) == []
    (closed,) = payment_exceptions(client, world.finance_a, include_refunded="true")
    assert (closed["exception_id"], closed["status"]) == (exception_id, "refunded")
    assert (closed["refunded_minor"], closed["refundable_minor"]) == (100, 0)
    one = client.get(f"/v1/payment-exceptions/{exception_id}", headers=world.admin_a.headers)
    assert one.json()["status"] == "refunded"
    # the refund list shows it against the exception, not an order
    (listed,) = client.get("/v1/refunds", headers=world.finance_a.headers).json()["items"]
    assert (listed["refund_id"], listed["payment_exception_id"], listed["order_id"]) == (
        body["refund_id"],
        exception_id,
        None,
    )
    # the events: refunded, pointing at the exception the orphaned capture named
    (refunded,) = events_of(database, "payment.exception_refunded")
    (orphan,) = events_of(database, "payment.orphaned_capture")
    assert refunded.data["payment_exception_id"] == orphan.data["payment_exception_id"]
    assert orphan.data["payment_exception_id"] == exception_id
    assert (refunded.data["refund_id"], refunded.data["amount_minor"]) == (body["refund_id"], 100)
    assert refunded.data["initiated_by"] == world.finance_a.actor.actor_id
    valid(refunded)
    valid(orphan)
    # and there is nothing left to refund
    more = refund_exception(client, with_mfa(world.admin_a), exception_id)
    assert (more.status_code, more.json()["code"]) == (409, "nothing_to_refund")
    assert len(simulator_refunds(payments_url, intent["transaction_ref"])) == 1


# ---- 5. the patient's right to cancel: a task for staff, never a refund by itself ---------------


def test_the_patient_asks_to_cancel_and_staff_get_a_task_but_nothing_is_refunded(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    # given a paid order of a toothbrush (not yet sent) and a kit (being prepared)
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.kit, 1)])
    order_id = order["order_id"]

    # when the patient asks to cancel it
    response = ask_to_cancel(client, world.patient_a, order_id, {"reason": "Changed my mind"})

    # then the request is open, each line covered and explained, with what happens next
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/cancellation-requests/{body['request_id']}"
    assert (body["status"], body["order_id"], body["reason"]) == (
        "open",
        order_id,
        "Changed my mind",
    )
    assert [
        (line["name"], line["quantity"], line["cancellable"], line["explanation"])
        for line in body["lines"]
    ] == [
        (BRUSH, 1, True, "Not dispatched yet: it can be cancelled at once."),
        (KIT, 1, True, "Not collected yet: it can be cancelled at once."),
    ]
    assert body["message"].startswith(NEXT_STEPS)
    assert SOME_NOT_COVERED not in body["message"]
    # an audit entry on the order's trail, by the patient
    staff_view = read_order(client, world.admin_a, order_id)
    (entry,) = trail(staff_view, "order.cancellation_requested")
    assert (entry["actor_id"], entry["after"]["request_id"]) == (
        world.patient_a.actor.actor_id,
        body["request_id"],
    )
    # a task for the practice's staff
    (event,) = events_of(database, "order.cancellation_requested")
    assert (event.data["task"], event.data["request_id"], event.data["order_id"]) == (
        "review_cancellation_request",
        body["request_id"],
        order_id,
    )
    assert [line["cancellable"] for line in event.data["lines"]] == [True, True]
    valid(event)
    # and nothing refunded: no refund row, nothing at the gateway, the order not Refunded
    assert count(database, Refund) == 0
    assert simulator_refunds(payments_url, order["payment"]["payment_ref"]) == []
    assert (staff_view["status"], staff_view["refund_status"]) == ("Created", "none")
    assert [line["fulfilment_status"] for line in staff_view["lines"]] == ["pending", "preparing"]


def test_a_second_request_while_one_is_open_is_a_409(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    # given an open cancellation request
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    first = ask_to_cancel(client, world.patient_a, order["order_id"])
    assert first.status_code == 201, first.text

    # when the patient asks again (a new request)
    second = ask_to_cancel(client, world.patient_a, order["order_id"], {"reason": "Again"})

    # then it is refused, naming the open request; still one request, one task
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "cancellation_already_requested"
    assert second.json()["request_id"] == first.json()["request_id"]
    assert count(database, CancellationRequest) == 1
    assert len(events_of(database, "order.cancellation_requested")) == 1


def test_only_the_patient_who_owns_the_order_may_ask_to_cancel_it(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    # given a patient's order
    order = place_order(client, world.patient_a, [(shop.kit, 1)])

    # when another patient, or the practice's staff, ask to cancel it
    other_patient = ask_to_cancel(client, world.patient_a2, order["order_id"])
    staff = ask_to_cancel(client, world.staff_a, order["order_id"])
    admin = ask_to_cancel(client, world.admin_a, order["order_id"])

    # then the other patient does not learn it exists, staff may not; nothing is stored
    assert other_patient.status_code == 404, other_patient.text
    assert (staff.status_code, staff.json()["code"]) == (403, "forbidden")
    assert admin.status_code == 403
    assert count(database, CancellationRequest) == 0
    assert events_of(database, "order.cancellation_requested") == []


def test_staff_see_open_requests_and_a_refund_resolves_the_request(
    client: TestClient,
    world: World,
    shop: Shop,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given the patient's open cancellation request
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    request_id = ask_to_cancel(client, world.patient_a, order["order_id"]).json()["request_id"]

    # then the practice's staff see it, open (the default), and practice B does not
    listed = client.get("/v1/cancellation-requests", headers=world.staff_a.headers)
    assert listed.status_code == 200, listed.text
    assert [(r["request_id"], r["status"]) for r in listed.json()["items"]] == [
        (request_id, "open")
    ]
    one = client.get(f"/v1/cancellation-requests/{request_id}", headers=world.finance_a.headers)
    assert (one.status_code, one.json()["status"], one.json()["refund_id"]) == (200, "open", None)
    assert (
        client.get("/v1/cancellation-requests", headers=world.admin_b.headers).json()["items"] == []
    )
    assert (
        client.get(
            f"/v1/cancellation-requests/{request_id}", headers=world.admin_b.headers
        ).status_code
        == 404
    )

    # when staff refund the order
    made = refund(client, with_mfa(world.admin_a), order["order_id"], WHOLE)
    assert made.status_code == 201, made.text

    # then the request is refunded, naming the refund, and leaves the open list
    resolved = client.get(f"/v1/cancellation-requests/{request_id}", headers=world.staff_a.headers)
    assert (resolved.json()["status"], resolved.json()["refund_id"]) == (
        "refunded",
        made.json()["refund_id"],
    )
    assert resolved.json()["resolved_at"]
    assert (
        client.get("/v1/cancellation-requests", headers=world.staff_a.headers).json()["items"] == []
    )
    refunded = client.get(
        "/v1/cancellation-requests", headers=world.staff_a.headers, params={"status": "refunded"}
    ).json()["items"]
    assert [r["request_id"] for r in refunded] == [request_id]
    # and the patient sees the outcome of their own request
    mine = client.get(f"/v1/cancellation-requests/{request_id}", headers=world.patient_a.headers)
    assert (mine.status_code, mine.json()["status"]) == (200, "refunded")


@pytest.mark.parametrize(
    ("days_ago", "cancellable", "explanation"),
    [
        (13, True, "Within the 14-day cancellation period."),
        (15, False, "The 14-day cancellation period has ended."),
    ],
)
def test_a_delivered_line_may_be_cancelled_within_14_days_of_delivery_only(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    days_ago: int,
    cancellable: bool,
    explanation: str,
) -> None:
    # given a toothbrush delivered `days_ago` days ago, and a kit not yet collected
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.kit, 1)])
    now = datetime.now(UTC)
    poke_line(
        database,
        line_named(order, BRUSH)["line_item_id"],
        fulfilment_status="delivered",
        dispatched_at=now - timedelta(days=days_ago + 1),
        delivered_at=now - timedelta(days=days_ago),
    )

    # when the patient asks to cancel
    response = ask_to_cancel(client, world.patient_a, order["order_id"])

    # then the brush is covered only within the period, and each line says why
    assert response.status_code == 201, response.text
    body = response.json()
    assert [(line["name"], line["cancellable"], line["explanation"]) for line in body["lines"]] == [
        (BRUSH, cancellable, explanation),
        (KIT, True, "Not collected yet: it can be cancelled at once."),
    ]
    assert body["message"].startswith(NEXT_STEPS)
    assert (SOME_NOT_COVERED in body["message"]) == (not cancellable)


def test_an_order_with_nothing_left_in_the_period_is_refused_and_nothing_is_stored(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    # given an order whose only line (vouchers) was delivered 15 days ago
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    poke_line(
        database,
        line_named(order, VOUCHER)["line_item_id"],
        delivered_at=datetime.now(UTC) - timedelta(days=15),
    )

    # when the patient asks to cancel
    response = ask_to_cancel(client, world.patient_a, order["order_id"])

    # then it is refused, each line saying why, and no request, audit entry or task exists
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "not_cancellable"
    (line,) = response.json()["lines"]
    assert (line["name"], line["cancellable"], line["explanation"]) == (
        VOUCHER,
        False,
        "The 14-day cancellation period has ended.",
    )
    assert count(database, CancellationRequest) == 0
    assert count(database, AuditEntry, AuditEntry.action == "order.cancellation_requested") == 0
    assert events_of(database, "order.cancellation_requested") == []


@pytest.mark.parametrize(
    ("vouchers", "used", "expected"),
    [
        (1, 1, (False, 1, "Digital vouchers already used are not refundable by this path.")),
        (
            2,
            1,
            (
                True,
                1,
                "1 voucher(s) already used are not refundable by this path; the 1 unused may "
                "be cancelled.",
            ),
        ),
    ],
)
def test_vouchers_already_used_are_not_cancellable_by_this_path(
    client: TestClient,
    world: World,
    shop: Shop,
    vouchers: int,
    used: int,
    expected: tuple[bool, int, str],
) -> None:
    # given vouchers, some redeemed at the practice, and a toothbrush not yet sent
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, vouchers)])
    for code in voucher_codes(client, world.patient_a, order["order_id"])[:used]:
        assert redeem(client, world.staff_a, code).status_code == 200

    # when the patient asks to cancel
    response = ask_to_cancel(client, world.patient_a, order["order_id"])

    # then the used vouchers are not covered, and the line says so
    assert response.status_code == 201, response.text
    voucher = line_named(response.json(), VOUCHER)
    assert (voucher["cancellable"], voucher["quantity"], voucher["explanation"]) == expected
    assert "already used are not refundable by this path" in voucher["explanation"]
    assert line_named(response.json(), BRUSH)["cancellable"] is True


# ---- 6. a replayed Idempotency-Key never refunds twice -------------------------------------------


def test_the_same_key_replays_the_first_refund_and_refunds_once(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given a refund of 1000 made under a key
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    headers, same = with_mfa(world.finance_a), str(uuid.uuid4())
    body = {"reason_code": "damaged_item", "amount_minor": 1000}
    first = refund(client, headers, order["order_id"], body, idempotency_key=same)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers

    # when the same request is sent again under the same key
    again = refund(client, headers, order["order_id"], body, idempotency_key=same)

    # then the first answer is replayed, and no second refund is made
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert again.json() == first.json()
    assert [
        r["amount_minor"] for r in simulator_refunds(payments_url, first.json()["payment_ref"])
    ] == [1000]
    assert count(database, Refund) == 1
    after = read_order(client, world.admin_a, order["order_id"])
    assert (after["refunds"]["refunded_minor"], after["refunds"]["refundable_minor"]) == (
        1000,
        4999,
    )


def test_the_same_key_replays_a_payment_exception_refund_and_refunds_once(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # given a payment exception refunded under a key
    intent = orphaned_capture(client, world, shop, payments_url)
    (item,) = payment_exceptions(client, world.finance_a)
    headers, same = with_mfa(world.finance_a), str(uuid.uuid4())
    first = refund_exception(client, headers, item["exception_id"], idempotency_key=same)
    assert first.status_code == 201, first.text

    # when the same request is sent again under the same key
    again = refund_exception(client, headers, item["exception_id"], idempotency_key=same)

    # then the first answer is replayed (not a 409 nothing_to_refund), with one refund made
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(simulator_refunds(payments_url, intent["transaction_ref"])) == 1
    assert count(database, Refund) == 1


def test_the_same_key_replays_the_cancellation_request_instead_of_a_409(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    # given a cancellation request made under a key
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    same = str(uuid.uuid4())
    first = ask_to_cancel(client, world.patient_a, order["order_id"], idempotency_key=same)
    assert first.status_code == 201, first.text

    # when the app sends it again under the same key (a retry after a lost answer)
    again = ask_to_cancel(client, world.patient_a, order["order_id"], idempotency_key=same)

    # then the first answer is replayed, and there is still one request and one task
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert count(database, CancellationRequest) == 1
    assert len(events_of(database, "order.cancellation_requested")) == 1


def test_staff_page_through_every_open_request_oldest_first(
    client: TestClient, world: World, shop: Shop
) -> None:
    # given five open requests from two patients
    asked = []
    for patient in (
        world.patient_a,
        world.patient_a2,
        world.patient_a,
        world.patient_a2,
        world.patient_a,
    ):
        order = place_order(client, patient, [(shop.kit, 1)])
        asked.append(ask_to_cancel(client, patient, order["order_id"]).json()["request_id"])

    # when staff read them two at a time
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/cancellation-requests", headers=world.staff_a.headers, params=params)
        assert page.status_code == 200, page.text
        seen += [r["request_id"] for r in page.json()["items"]]
        pages += 1
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break

    # then every request comes once, in the order asked, over three pages; a bad cursor is 400
    assert (seen, pages) == (asked, 3)
    bad = client.get(
        "/v1/cancellation-requests", headers=world.staff_a.headers, params={"cursor": "x"}
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")
