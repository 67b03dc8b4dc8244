"""Events reach the receiving modules over signed webhooks and lose nothing: a receiver that is
down gets everything afterwards in order, a relay that dies mid-delivery causes one duplicate the
receiver absorbs, two relays never send one delivery at the same time, and a stuck destination
holds back only itself (issue 13's "done when")."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import httpx
import pytest

from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock, SystemClock
from product_shop.core.signing import demo_destination_secret
from product_shop.db.engine import Database
from product_shop.events.delivery import PendingEvent, RetryPolicy
from product_shop.events.relay import OutboxRelay
from product_shop.events.relay_thread import RelayThread
from product_shop.events.routing import Destination
from product_shop.events.types import (
    FINANCE_ORDER_RECORDED,
    ORDER_CANCELLATION_REQUESTED,
    ORDER_CREATED,
    PAYMENT_RECEIPT,
    REFUND_ISSUED,
    EventType,
)
from product_shop.integrations.event_webhooks import WebhookSink
from tests.integration.delivery_support import attempts, deliveries

CH = Destination.COMMUNICATION_HUB.value
FIN = Destination.FINANCE.value
# Each order's life as Communication Hub hears it, in order.
LIFE = (ORDER_CREATED, PAYMENT_RECEIPT, REFUND_ISSUED, ORDER_CANCELLATION_REQUESTED)


def _webhook(receivers_url: str, destination: str, **timeouts: float) -> WebhookSink:
    # Signed with the wall clock (the receiver checks a 5-minute window), while the relay's
    # own clock is driven.
    return WebhookSink(
        f"{receivers_url}/{destination}",
        demo_destination_secret(destination),
        clock=SystemClock(),
        **timeouts,
    )


def _emit(context: AppContext, aggregates: int, types: tuple[EventType, ...]) -> list[str]:
    """`types` for each of `aggregates` orders, interleaved as a busy shop commits them."""
    orders = [str(uuid.uuid4()) for _ in range(aggregates)]
    for step, event_type in enumerate(types):
        with context.database.unit_of_work() as session:
            for order_id in orders:
                context.outbox.emit(
                    session,
                    event_type,
                    aggregate_id=order_id,
                    data={"order_id": order_id, "step": step},
                )
    return orders


def _received(receivers_url: str, destination: str) -> dict[str, Any]:
    answer = httpx.get(f"{receivers_url}/_simulator/{destination}/received")
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def _steps_per_order(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = defaultdict(list)
    for event in events:
        steps[event["subject"]].append(event["data"]["step"])
    return steps


def test_a_receiver_that_was_down_gets_every_event_afterwards_in_order_per_aggregate(
    context: AppContext, database: Database, receivers_url: str
) -> None:
    orders = _emit(context, 6, LIFE)
    clock = FrozenClock(context.clock.now())
    relay = OutboxRelay(database, {CH: _webhook(receivers_url, CH)}, clock)
    httpx.post(f"{receivers_url}/_simulator/{CH}/faults", json={"mode": "down"})

    # Down for a stretch of driven clock: two hours of tries, each refused.
    for _ in range(12):
        assert relay.run_once() == 0
        clock.advance(timedelta(minutes=10))
    assert _received(receivers_url, CH)["events"] == []
    waiting = deliveries(database, destination=CH)
    assert {d.status for d in waiting} == {"pending"}  # queued, not dropped
    tried = [d for d in waiting if d.attempts]
    assert len(tried) == len(orders)  # only each order's first event was tried
    assert all(a.status_code == 503 for d in tried for a in attempts(database, d.delivery_id))

    httpx.delete(f"{receivers_url}/_simulator/{CH}/faults")  # it recovers
    clock.advance(RetryPolicy().cap)
    relay.run_once()

    got = _received(receivers_url, CH)
    assert len(got["events"]) == len(orders) * len(LIFE)  # none lost
    assert got["duplicates"] == 0
    steps = _steps_per_order(got["events"])
    assert steps == {order_id: list(range(len(LIFE))) for order_id in orders}  # in order
    assert {d.status for d in deliveries(database, destination=CH)} == {"delivered"}


def test_a_relay_killed_between_sending_and_marking_causes_one_duplicate_the_receiver_absorbs(
    context: AppContext, database: Database, receivers_url: str
) -> None:
    (order_id,) = _emit(context, 1, (ORDER_CREATED,))
    clock = FrozenClock(context.clock.now())
    webhook = _webhook(receivers_url, CH)

    class Killed(BaseException):
        """The relay's process dies: nothing after the send runs."""

    def sends_then_dies(event: PendingEvent) -> object:
        webhook(event)
        raise Killed

    with pytest.raises(Killed):
        OutboxRelay(database, {CH: sends_then_dies}, clock, concurrency=1).run_once()
    assert deliveries(database, destination=CH)[0].status == "pending"  # never marked

    clock.advance(timedelta(minutes=2))  # the lease runs out
    assert OutboxRelay(database, {CH: webhook}, clock).run_once() == 1

    got = _received(receivers_url, CH)
    assert [e["subject"] for e in got["events"]] == [order_id]  # recorded once
    assert got["duplicates"] == 1  # the second send, absorbed by its webhook-id
    assert deliveries(database, destination=CH)[0].status == "delivered"


@pytest.mark.postgres_only
def test_two_relays_never_deliver_one_row_twice_at_the_same_time(
    context: AppContext, database: Database
) -> None:
    orders = _emit(context, 40, LIFE)
    lock = threading.Lock()
    in_flight: set[uuid.UUID] = set()
    overlaps: list[uuid.UUID] = []
    sent: list[tuple[str, int]] = []

    def sink(event: PendingEvent) -> None:
        with lock:
            if event.event_id in in_flight:
                overlaps.append(event.event_id)
            in_flight.add(event.event_id)
        time.sleep(0.002)  # a receiver's answer takes a moment: the relays overlap
        with lock:
            in_flight.discard(event.event_id)
            sent.append((event.aggregate_id, event.data["step"]))

    relays = [OutboxRelay(database, {CH: sink}, context.clock) for _ in range(2)]
    barrier = threading.Barrier(2)

    def drain(relay: OutboxRelay) -> None:
        barrier.wait()
        for _ in range(20):
            relay.run_once()

    threads = [threading.Thread(target=drain, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for relay in relays:
        relay.close()

    assert overlaps == []
    assert len(sent) == len(orders) * len(LIFE)  # each delivery made exactly once
    assert len(set(sent)) == len(sent)
    per_order: dict[str, list[int]] = defaultdict(list)
    for order_id, step in sent:
        per_order[order_id].append(step)
    assert per_order == {order_id: list(range(len(LIFE))) for order_id in orders}
    assert {d.claims for d in deliveries(database)} == {1}


def test_a_stuck_destination_does_not_delay_another_destinations_events(
    context: AppContext, database: Database, receivers_url: str
) -> None:
    """Finance hangs (every answer takes longer than the sink waits); the background relay
    still delivers Communication Hub's events at once, each destination in its own loop."""
    communication = _emit(context, 3, (ORDER_CREATED,))
    _emit(context, 3, (FINANCE_ORDER_RECORDED,))
    httpx.post(
        f"{receivers_url}/_simulator/{FIN}/faults", json={"mode": "hang", "seconds": 3}
    ).raise_for_status()
    relay = OutboxRelay(
        database,
        {
            CH: _webhook(receivers_url, CH),
            FIN: _webhook(receivers_url, FIN, read_timeout_seconds=2.0),
        },
        context.clock,
    )
    background = RelayThread(relay, interval_seconds=0.05)
    background.start()
    try:
        deadline = time.monotonic() + 10
        while len(_received(receivers_url, CH)["events"]) < len(communication):
            assert time.monotonic() < deadline, "Communication Hub waited behind Finance"
            time.sleep(0.05)
        finance = deliveries(database, destination=FIN)
        assert [d.status for d in finance] == ["pending"] * 3  # still stuck
        assert _received(receivers_url, FIN)["events"] == []
    finally:
        background.stop()
        relay.close()
