"""The outbox relay delivers after commit, retries on failure, parks, and keeps per-aggregate order.
Its first sink gives Integrated Payments the order id as the payment's commerce order reference."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock
from product_shop.db.engine import Database
from product_shop.events.relay import RETRY_SCHEDULE, OutboxRelay, PendingEvent
from product_shop.events.tables import OutboxEvent
from product_shop.events.types import ORDER_CREATED, PAYMENT_ORDER_REFERENCE
from tests.conftest import World
from tests.integration.checkout_support import Shop, paid_checkout, simulator_intent


def _order(
    client: TestClient, world: World, shop: Shop
) -> tuple[dict[str, object], dict[str, object]]:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()
    return checkout, order


def _reference_event(database: Database) -> OutboxEvent:
    with Session(database.engine) as session:
        return session.scalars(
            select(OutboxEvent).where(OutboxEvent.event_type == PAYMENT_ORDER_REFERENCE.name)
        ).one()


def test_the_order_id_reaches_integrated_payments_as_the_commerce_order_reference(
    client: TestClient, world: World, shop: Shop, context: AppContext, payments_url: str
) -> None:
    checkout, order = _order(client, world, shop)
    intent_id = checkout["payment"]["intent_id"]  # type: ignore[index]
    assert (
        simulator_intent(payments_url, intent_id)["order_reference"] is None
    )  # not before commit+relay

    delivered = context.relay.run_once()

    assert delivered == 1
    assert simulator_intent(payments_url, intent_id)["order_reference"] == order["order_id"]
    event = _reference_event(context.database)
    assert (event.status, event.attempts) == ("delivered", 1)
    assert context.relay.run_once() == 0  # delivered once, not again


def test_a_failed_delivery_is_retried_later_and_never_lost(
    client: TestClient, world: World, shop: Shop, context: AppContext, payments_url: str
) -> None:
    checkout, order = _order(client, world, shop)
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "set_order_reference", "mode": "error", "status": 503, "times": 3},
    )
    clock = FrozenClock(context.clock.now())
    relay = OutboxRelay(context.database, {PAYMENT_ORDER_REFERENCE.name: _sink(context)}, clock)

    assert relay.run_once() == 0
    event = _reference_event(context.database)
    assert (event.status, event.attempts) == ("pending", 1)
    assert event.last_error is not None
    assert relay.run_once() == 0  # not due yet
    clock.advance(RETRY_SCHEDULE[0] + timedelta(seconds=1))
    assert relay.run_once() == 1
    intent_id = checkout["payment"]["intent_id"]  # type: ignore[index]
    assert simulator_intent(payments_url, intent_id)["order_reference"] == order["order_id"]


def test_an_event_is_parked_after_the_last_try_and_can_be_redelivered(
    client: TestClient, world: World, shop: Shop, context: AppContext
) -> None:
    _order(client, world, shop)
    clock = FrozenClock(context.clock.now())
    failures = {"left": len(RETRY_SCHEDULE) + 1}

    def flaky(event: PendingEvent) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("module down")

    relay = OutboxRelay(context.database, {PAYMENT_ORDER_REFERENCE.name: flaky}, clock)
    for _ in range(len(RETRY_SCHEDULE) + 1):
        relay.run_once()
        clock.advance(timedelta(hours=7))
    assert _reference_event(context.database).status == "parked"

    assert relay.redeliver_parked() == 1
    assert relay.run_once() == 1
    assert _reference_event(context.database).status == "delivered"


def test_events_of_one_aggregate_are_delivered_in_order(
    context: AppContext, database: Database
) -> None:
    aggregate = uuid.uuid4()
    with database.unit_of_work() as session:
        for n in range(3):
            context.outbox.emit(
                session,
                PAYMENT_ORDER_REFERENCE,
                aggregate_id=aggregate,
                data={"order_id": str(aggregate), "intent_id": f"pi_{n}", "payment_ref": "x"},
            )
    seen: list[str] = []
    fail_first = {"left": 1}

    def sink(event: PendingEvent) -> None:
        if fail_first["left"]:
            fail_first["left"] -= 1
            raise ConnectionError("down")
        seen.append(event.data["intent_id"])

    clock = FrozenClock(context.clock.now())
    relay = OutboxRelay(database, {PAYMENT_ORDER_REFERENCE.name: sink}, clock)
    assert relay.run_once() == 0  # the first failed; the later two must wait behind it
    assert seen == []
    clock.advance(timedelta(minutes=1))
    relay.run_once()
    assert seen == ["pi_0", "pi_1", "pi_2"]


def test_a_parked_event_does_not_hold_back_its_aggregates_next_event(
    context: AppContext, database: Database
) -> None:
    """A parked event is given up on (until redelivered by command): the next event of its
    aggregate (say, a shipment resent by staff after a refusal) still goes out."""
    from product_shop.events.relay import PermanentDeliveryError

    aggregate = uuid.uuid4()
    with database.unit_of_work() as session:
        for n in range(2):
            context.outbox.emit(
                session,
                PAYMENT_ORDER_REFERENCE,
                aggregate_id=aggregate,
                data={"order_id": str(aggregate), "intent_id": f"pi_{n}", "payment_ref": "x"},
            )
    seen: list[str] = []

    def sink(event: PendingEvent) -> None:
        if event.data["intent_id"] == "pi_0":
            raise PermanentDeliveryError("refused for good")
        seen.append(event.data["intent_id"])

    relay = OutboxRelay(database, {PAYMENT_ORDER_REFERENCE.name: sink}, context.clock)
    relay.run_once()

    assert seen == ["pi_1"]
    with Session(database.engine) as session:
        statuses = session.scalars(select(OutboxEvent.status).order_by(OutboxEvent.position)).all()
    assert statuses == ["parked", "delivered"]


def _sink(context: AppContext):  # type: ignore[no-untyped-def]
    from product_shop.integrations.sinks import payments_sinks

    return payments_sinks(context.payments)[PAYMENT_ORDER_REFERENCE.name]


def test_events_of_different_aggregates_are_sent_concurrently_and_recorded_each(
    context: AppContext, database: Database
) -> None:
    """A batch holds one event per aggregate, so its deliveries overlap: a sink that only
    returns once two deliveries are in flight at the same time succeeds, and each outcome is
    recorded on its own event."""
    with database.unit_of_work() as session:
        for n in range(4):
            context.outbox.emit(
                session,
                PAYMENT_ORDER_REFERENCE,
                aggregate_id=uuid.uuid4(),
                data={"order_id": str(uuid.uuid4()), "intent_id": f"pi_{n}", "payment_ref": "x"},
            )
    together = threading.Barrier(2, timeout=5)

    def sink(event: PendingEvent) -> None:
        together.wait()  # BrokenBarrierError (a failed delivery) unless sends overlap
        if event.data["intent_id"] == "pi_3":
            raise ConnectionError("down")

    relay = OutboxRelay(database, {PAYMENT_ORDER_REFERENCE.name: sink}, context.clock)
    try:
        assert relay.run_once() == 3
    finally:
        relay.close()
    with Session(database.engine) as session:
        events = session.scalars(select(OutboxEvent).order_by(OutboxEvent.position)).all()
        assert [e.status for e in events] == ["delivered", "delivered", "delivered", "pending"]
        assert events[3].attempts == 1
        assert "down" in (events[3].last_error or "")


def test_events_of_types_without_a_sink_are_left_alone(
    context: AppContext, database: Database
) -> None:
    aggregate = uuid.uuid4()
    with database.unit_of_work() as session:
        context.outbox.emit(
            session,
            ORDER_CREATED,
            aggregate_id=aggregate,
            data={"order_id": str(aggregate)},
        )
        context.outbox.emit(
            session,
            PAYMENT_ORDER_REFERENCE,
            aggregate_id=aggregate,
            data={"order_id": str(aggregate), "intent_id": "pi_1", "payment_ref": "x"},
        )
    sent: list[str] = []
    relay = OutboxRelay(
        database, {PAYMENT_ORDER_REFERENCE.name: lambda e: sent.append(e.event_type)}, context.clock
    )
    # The order.created event has no sink: it neither blocks the reference nor gets sent.
    assert relay.run_once() == 1
    assert sent == [PAYMENT_ORDER_REFERENCE.name]
    with Session(database.engine) as session:
        statuses = dict(session.execute(select(OutboxEvent.event_type, OutboxEvent.status)).all())
        assert statuses[ORDER_CREATED.name] == "pending"
