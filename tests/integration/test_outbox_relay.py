"""The outbox relay routes each committed event to every destination and delivers per destination:
after commit, retried on a backoff schedule, parked after the horizon, in order per aggregate and
destination, each try recorded. Its first port sink gives Integrated Payments the order id as the
payment's commerce order reference."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock
from product_shop.db.engine import Database
from product_shop.events.delivery import (
    DeliveryFailed,
    PendingEvent,
    PermanentDeliveryError,
    RetryPolicy,
    Sink,
)
from product_shop.events.relay import OutboxRelay
from product_shop.events.routing import Destination, Routing
from product_shop.events.types import ORDER_CREATED, PAYMENT_ORDER_REFERENCE
from tests.conftest import World
from tests.integration.checkout_support import Shop, paid_checkout, simulator_intent
from tests.integration.delivery_support import attempts, deliveries, delivery, outbox_statuses

IP = Destination.INTEGRATED_PAYMENTS.value
CH = Destination.COMMUNICATION_HUB.value
FIN = Destination.FINANCE.value
# No jitter: each wait is the longest the schedule allows.
STEADY = RetryPolicy(jitter=lambda: 0.999999)


def _order(
    client: TestClient, world: World, shop: Shop
) -> tuple[dict[str, object], dict[str, object]]:
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    order = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    ).json()
    return checkout, order


def _reference(database: Database):  # type: ignore[no-untyped-def]
    return delivery(database, destination=IP, event_type=PAYMENT_ORDER_REFERENCE.name)


def _emit_references(context: AppContext, aggregate: uuid.UUID, count: int) -> None:
    with context.database.unit_of_work() as session:
        for n in range(count):
            context.outbox.emit(
                session,
                PAYMENT_ORDER_REFERENCE,
                aggregate_id=aggregate,
                data={"order_id": str(aggregate), "intent_id": f"pi_{n}", "payment_ref": "x"},
            )


def _ip_sink(context: AppContext) -> Sink:
    from product_shop.integrations.sinks import payments_sinks

    return payments_sinks(context.payments)[PAYMENT_ORDER_REFERENCE.name]


def test_the_order_id_reaches_integrated_payments_as_the_commerce_order_reference(
    client: TestClient, world: World, shop: Shop, context: AppContext, payments_url: str
) -> None:
    checkout, order = _order(client, world, shop)
    intent_id = checkout["payment"]["intent_id"]  # type: ignore[index]
    assert (
        simulator_intent(payments_url, intent_id)["order_reference"] is None
    )  # not before commit+relay

    delivered = context.relay.run_once()

    assert delivered == 1  # the feeds (Communication Hub, Finance...) are off in these tests
    assert simulator_intent(payments_url, intent_id)["order_reference"] == order["order_id"]
    reference = _reference(context.database)
    assert (reference.status, reference.attempts) == ("delivered", 1)
    (attempt,) = attempts(context.database, reference.delivery_id)
    assert (attempt.outcome, attempt.error) == ("delivered", None)
    assert attempt.latency_ms >= 0
    assert context.relay.run_once() == 0  # delivered once, not again


def test_every_event_is_routed_to_each_of_its_destinations_and_waits_where_no_sink_is_set(
    context: AppContext, database: Database
) -> None:
    aggregate = uuid.uuid4()
    with database.unit_of_work() as session:
        context.outbox.emit(session, ORDER_CREATED, aggregate_id=aggregate, data={})
    relay = OutboxRelay(database, {IP: lambda e: None}, context.clock)

    assert relay.run_once() == 0
    assert outbox_statuses(database) == [(ORDER_CREATED.name, "routed")]
    (routed,) = deliveries(database)
    assert (routed.destination, routed.status) == (CH, "pending")  # queued, never dropped
    assert attempts(database, routed.delivery_id) == []


def test_a_failed_delivery_is_retried_with_backoff_and_never_lost(
    client: TestClient, world: World, shop: Shop, context: AppContext, payments_url: str
) -> None:
    checkout, order = _order(client, world, shop)
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "set_order_reference", "mode": "error", "status": 503, "times": 3},
    )
    clock = FrozenClock(context.clock.now())
    relay = OutboxRelay(context.database, {IP: _ip_sink(context)}, clock, policy=STEADY)

    assert relay.run_once() == 0
    reference = _reference(context.database)
    assert (reference.status, reference.attempts) == ("pending", 1)
    assert reference.last_error is not None
    assert STEADY.base / 2 <= reference.next_attempt_at - clock.now() <= STEADY.base
    assert relay.run_once() == 0  # not due yet
    clock.advance(STEADY.longest_wait(1))
    assert relay.run_once() == 1
    intent_id = checkout["payment"]["intent_id"]  # type: ignore[index]
    assert simulator_intent(payments_url, intent_id)["order_reference"] == order["order_id"]
    tries = attempts(context.database, reference.delivery_id)
    assert [t.outcome for t in tries] == ["failed", "delivered"]
    assert "503" in (tries[0].error or "") or "Unavailable" in (tries[0].error or "")


def test_a_delivery_failing_past_the_horizon_is_parked_and_can_be_redelivered(
    client: TestClient, world: World, shop: Shop, context: AppContext
) -> None:
    _order(client, world, shop)
    clock = FrozenClock(context.clock.now())
    failing = {"on": True}

    def flaky(event: PendingEvent) -> None:
        if failing["on"]:
            raise DeliveryFailed("module down", status_code=503)

    policy = RetryPolicy(
        base=timedelta(minutes=1), cap=timedelta(hours=6), horizon=timedelta(days=3)
    )
    relay = OutboxRelay(context.database, {IP: flaky}, clock, policy=policy)
    relay.route()
    tries = 0
    while _reference(context.database).status == "pending":
        relay.run_once()
        tries += 1
        clock.advance(timedelta(hours=6))
        assert tries < 40
    parked = _reference(context.database)
    assert parked.status == "parked"
    assert parked.parked_at is not None
    assert parked.parked_at - parked.queued_at <= timedelta(days=3)
    recorded = attempts(context.database, parked.delivery_id)
    assert len(recorded) == parked.attempts == tries
    assert {a.status_code for a in recorded} == {503}
    assert recorded[-1].outcome == "parked"

    failing["on"] = False
    assert relay.redeliver(destination=FIN) == 0  # another destination's: none
    assert relay.redeliver(destination=IP) == 1
    assert relay.run_once() == 1
    assert _reference(context.database).status == "delivered"


def test_redeliver_takes_the_events_since_a_time(context: AppContext, database: Database) -> None:
    clock = FrozenClock(context.clock.now())
    relay = OutboxRelay(
        database, {IP: lambda e: (_ for _ in ()).throw(PermanentDeliveryError("no"))}, clock
    )
    for day in range(3):
        with database.unit_of_work() as session:
            context.outbox.emit(
                session,
                PAYMENT_ORDER_REFERENCE,
                aggregate_id=uuid.uuid4(),
                data={"order_id": str(uuid.uuid4()), "intent_id": "pi", "payment_ref": "x"},
                at=clock.now() + timedelta(days=day),
            )
    relay.run_once()
    assert [d.status for d in deliveries(database)] == ["parked"] * 3

    assert relay.redeliver(since=clock.now() + timedelta(days=1)) == 2
    assert [d.status for d in deliveries(database)] == ["parked", "pending", "pending"]


def test_events_of_one_aggregate_are_delivered_in_order(
    context: AppContext, database: Database
) -> None:
    aggregate = uuid.uuid4()
    _emit_references(context, aggregate, 3)
    seen: list[str] = []
    fail_first = {"left": 1}

    def sink(event: PendingEvent) -> None:
        if fail_first["left"]:
            fail_first["left"] -= 1
            raise ConnectionError("down")
        seen.append(event.data["intent_id"])

    clock = FrozenClock(context.clock.now())
    relay = OutboxRelay(database, {IP: sink}, clock, policy=STEADY)
    assert relay.run_once() == 0  # the first failed; the later two must wait behind it
    assert seen == []
    clock.advance(STEADY.longest_wait(1))
    relay.run_once()
    assert seen == ["pi_0", "pi_1", "pi_2"]


def test_a_failing_destination_does_not_hold_back_another_destinations_events(
    context: AppContext, database: Database
) -> None:
    """Order is per aggregate *and destination*: Communication Hub failing on an order's
    first event holds back its next events for Communication Hub only."""
    aggregate = uuid.uuid4()
    with database.unit_of_work() as session:
        for n in range(3):
            context.outbox.emit(session, ORDER_CREATED, aggregate_id=aggregate, data={"n": n})
    routing = Routing(overrides={ORDER_CREATED.name: [CH, FIN]})
    to_finance: list[int] = []

    def down(event: PendingEvent) -> None:
        raise DeliveryFailed("hub down", status_code=503)

    relay = OutboxRelay(
        database,
        {CH: down, FIN: lambda e: to_finance.append(e.data["n"])},
        context.clock,
        routing=routing,
    )
    relay.run_once()

    assert to_finance == [0, 1, 2]
    hub = deliveries(database, destination=CH)
    assert [(d.status, d.attempts) for d in hub] == [("pending", 1), ("pending", 0), ("pending", 0)]


def test_a_parked_event_does_not_hold_back_its_aggregates_next_event(
    context: AppContext, database: Database
) -> None:
    """A parked event is given up on (until redelivered by command): the next event of its
    aggregate (say, a shipment resent by staff after a refusal) still goes out."""
    aggregate = uuid.uuid4()
    _emit_references(context, aggregate, 2)
    seen: list[str] = []

    def sink(event: PendingEvent) -> None:
        if event.data["intent_id"] == "pi_0":
            raise PermanentDeliveryError("refused for good", status_code=422)
        seen.append(event.data["intent_id"])

    relay = OutboxRelay(database, {IP: sink}, context.clock)
    relay.run_once()

    assert seen == ["pi_1"]
    assert [d.status for d in deliveries(database)] == ["parked", "delivered"]
    (refused,) = attempts(database, deliveries(database)[0].delivery_id)
    assert (refused.outcome, refused.status_code) == ("parked", 422)


def test_events_of_different_aggregates_are_sent_concurrently_and_recorded_each(
    context: AppContext, database: Database
) -> None:
    """A batch holds one event per aggregate, so its deliveries overlap: a sink that only
    returns once two deliveries are in flight at the same time succeeds, and each outcome is
    recorded on its own delivery."""
    for _ in range(4):
        _emit_references(context, uuid.uuid4(), 1)
    together = threading.Barrier(2, timeout=5)

    def sink(event: PendingEvent) -> None:
        together.wait()  # BrokenBarrierError (a failed delivery) unless sends overlap
        if event.position == max(d.event_position for d in deliveries(database)):
            raise ConnectionError("down")

    relay = OutboxRelay(database, {IP: sink}, context.clock)
    try:
        assert relay.run_once() == 3
    finally:
        relay.close()
    found = deliveries(database)
    assert [d.status for d in found] == ["delivered", "delivered", "delivered", "pending"]
    assert found[3].attempts == 1
    assert "down" in (found[3].last_error or "")


def test_a_claimed_delivery_is_not_sent_by_another_relay_until_its_lease_runs_out(
    context: AppContext, database: Database
) -> None:
    """A relay that dies between sending and recording leaves its lease: the event goes once
    more after the lease (at least once; the receiver deduplicates by event id), never twice at
    the same time."""
    _emit_references(context, uuid.uuid4(), 1)
    clock = FrozenClock(context.clock.now())
    sent: list[uuid.UUID] = []

    class Killed(BaseException):
        """The process dies: nothing after the send runs."""

    def dies_after_sending(event: PendingEvent) -> None:
        sent.append(event.event_id)
        raise Killed

    lease = timedelta(seconds=60)
    first = OutboxRelay(database, {IP: dies_after_sending}, clock, lease=lease, concurrency=1)
    with pytest.raises(Killed):
        first.run_once()
    second = OutboxRelay(database, {IP: lambda e: sent.append(e.event_id)}, clock, lease=lease)
    assert second.run_once() == 0  # leased to the first relay
    clock.advance(lease + timedelta(seconds=1))
    assert second.run_once() == 1

    assert sent == [sent[0], sent[0]]  # one duplicate, same event id
    (done,) = deliveries(database)
    assert (done.status, done.claims) == ("delivered", 2)


def test_a_relay_whose_lease_ran_out_does_not_overwrite_the_new_owners_outcome(
    context: AppContext, database: Database
) -> None:
    _emit_references(context, uuid.uuid4(), 1)
    clock = FrozenClock(context.clock.now())
    lease = timedelta(seconds=60)
    slow_started, finish_slow = threading.Event(), threading.Event()

    def slow_failure(event: PendingEvent) -> None:
        slow_started.set()
        finish_slow.wait(5)
        raise DeliveryFailed("late answer", status_code=504)

    slow = OutboxRelay(database, {IP: slow_failure}, clock, lease=lease)
    worker = threading.Thread(target=slow.run_once)
    worker.start()
    assert slow_started.wait(5)
    clock.advance(lease + timedelta(seconds=1))
    fast = OutboxRelay(database, {IP: lambda e: None}, clock, lease=lease)
    assert fast.run_once() == 1
    finish_slow.set()
    worker.join(5)

    (done,) = deliveries(database)
    assert done.status == "delivered"  # the late failure did not turn it back
    outcomes = sorted(a.outcome for a in attempts(database, done.delivery_id))
    assert outcomes == ["delivered", "failed"]  # both tries recorded


class _FollowUpWritingThenFailing:
    """A follow-up that writes (an event of its own) and then fails while `fail` is set."""

    def __init__(self, context: AppContext) -> None:
        self._context = context
        self.fail = True
        self.delivered_calls = 0

    def delivered(self, session: Session, event: PendingEvent, result: object) -> None:
        self.delivered_calls += 1
        self._context.outbox.emit(
            session,
            ORDER_CREATED,
            aggregate_id=uuid.uuid4(),
            data={"written_by": "follow-up"},
        )
        if self.fail:
            raise RuntimeError("follow-up failed")

    def parked(self, session: Session, event: PendingEvent, error: Exception) -> None:
        raise AssertionError("not parked here")


def test_a_failing_follow_up_rolls_back_its_writes_and_the_delivery_is_tried_again(
    context: AppContext, database: Database
) -> None:
    _emit_references(context, uuid.uuid4(), 1)
    events_before = len(outbox_statuses(database))
    clock = FrozenClock(context.clock.now())
    follow_up = _FollowUpWritingThenFailing(context)
    relay = OutboxRelay(
        database,
        {IP: lambda e: None},
        clock,
        policy=STEADY,
        follow_ups={(IP, PAYMENT_ORDER_REFERENCE.name): follow_up},
    )

    assert relay.run_once() == 0
    reference = _reference(database)
    assert (reference.status, reference.attempts) == ("pending", 1)
    assert "RuntimeError: follow-up failed" in (reference.last_error or "")
    assert len(outbox_statuses(database)) == events_before  # its write was rolled back
    (tried,) = attempts(database, reference.delivery_id)
    assert (tried.outcome, tried.error) == ("failed", "RuntimeError: follow-up failed")

    follow_up.fail = False
    clock.advance(STEADY.longest_wait(1))
    assert relay.run_once() == 1
    assert _reference(database).status == "delivered"
    assert len(outbox_statuses(database)) == events_before + 1  # written once, when it held
    assert [t.outcome for t in attempts(database, reference.delivery_id)] == [
        "failed",
        "delivered",
    ]
    assert follow_up.delivered_calls == 2


def test_a_follow_up_never_runs_for_a_delivery_whose_lease_ran_out(
    context: AppContext, database: Database
) -> None:
    _emit_references(context, uuid.uuid4(), 1)
    clock = FrozenClock(context.clock.now())
    lease = timedelta(seconds=60)
    follow_up = _FollowUpWritingThenFailing(context)
    follow_up.fail = False
    slow_started, finish_slow = threading.Event(), threading.Event()

    def slow_success(event: PendingEvent) -> None:
        slow_started.set()
        finish_slow.wait(5)

    follow_ups = {(IP, PAYMENT_ORDER_REFERENCE.name): follow_up}
    slow = OutboxRelay(database, {IP: slow_success}, clock, lease=lease, follow_ups=follow_ups)
    worker = threading.Thread(target=slow.run_once)
    worker.start()
    assert slow_started.wait(5)
    clock.advance(lease + timedelta(seconds=1))
    fast = OutboxRelay(database, {IP: lambda e: None}, clock, lease=lease, follow_ups=follow_ups)
    assert fast.run_once() == 1
    finish_slow.set()
    worker.join(5)

    assert follow_up.delivered_calls == 1  # the new owner's; the late success found it not its own
    reference = _reference(database)
    assert reference.status == "delivered"
    assert [t.outcome for t in attempts(database, reference.delivery_id)] == [
        "delivered",
        "delivered",
    ]
