"""The JetStream sink against the NATS server at 127.0.0.1:4222 (JetStream on): what a plain
nats-py consumer finds in the stream after the sink published. Each test has its own stream and
subject prefix, deleted at the end. Without a server these tests skip, except in CI (CI=true)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import pytest

from product_shop.events.delivery import DeliveryFailed, PendingEvent
from product_shop.events.outbox import to_cloudevent
from product_shop.integrations.event_nats import JetStreamReceipt, JetStreamSink, subject_for
from product_shop.simulators.server import free_port
from tests.conftest import IN_CI

HOST, PORT = "127.0.0.1", 4222
NATS_URL = f"nats://{HOST}:{PORT}"
ORDER_CREATED = "com.primoro.productshop.order.created.v1"


@dataclass(frozen=True)
class Names:
    stream: str
    prefix: str


@dataclass(frozen=True)
class Stored:
    subject: str
    headers: dict[str, str]
    body: dict[str, Any]


def event(event_type: str = ORDER_CREATED, **data: Any) -> PendingEvent:
    order_id = str(uuid.uuid4())
    return PendingEvent(
        delivery_id=1,
        destination="event-feed",
        position=1,
        event_id=uuid.uuid4(),
        event_type=event_type,
        source="/primoro/product-shop",
        subject=order_id,
        aggregate_type="order",
        aggregate_id=order_id,
        occurred_at=datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
        data={"order_id": order_id, "note": "Zahnbürste ✓", **data},
        attempts=0,
    )


async def _read_all(names: Names) -> list[Stored]:
    """Every message the stream holds, through an ephemeral pull consumer."""
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        expected = (await js.stream_info(names.stream)).state.messages
        sub = await js.pull_subscribe(f"{names.prefix}.>", stream=names.stream)
        stored: list[Stored] = []
        while len(stored) < expected:
            for msg in await sub.fetch(min(100, expected - len(stored)), timeout=5):
                body = json.loads(msg.data)  # the body parses as JSON
                stored.append(Stored(msg.subject, dict(msg.headers or {}), body))
                await msg.ack()
        return stored
    finally:
        await nc.close()


async def _message_count(names: Names) -> int:
    nc = await nats.connect(NATS_URL)
    try:
        return (await nc.jetstream().stream_info(names.stream)).state.messages
    finally:
        await nc.close()


async def _delete_stream(stream: str) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def _reachable() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def names() -> Iterator[Names]:
    if not _reachable():
        message = f"no NATS server at {NATS_URL}"
        if IN_CI:
            pytest.fail(message + " (CI requires the JetStream tests to run)")
        pytest.skip(message)
    tag = uuid.uuid4().hex[:12]
    created = Names(stream=f"TEST_EVENTS_{tag}", prefix=f"test.{tag}")
    yield created
    with contextlib.suppress(nats.errors.Error):  # never created if the test failed early
        asyncio.run(_delete_stream(created.stream))


@pytest.fixture
def sink(names: Names) -> Iterator[JetStreamSink]:
    sink = JetStreamSink(NATS_URL, stream=names.stream, subject_prefix=names.prefix)
    yield sink
    sink.close()


def test_published_events_arrive_on_their_subject_as_cloudevents(
    sink: JetStreamSink, names: Names
) -> None:
    events = [event(n=n) for n in range(3)]

    receipts = [sink(e) for e in events]

    assert [r.sequence for r in receipts] == [1, 2, 3]
    assert all(r == JetStreamReceipt(names.stream, r.sequence, False) for r in receipts)
    stored = asyncio.run(_read_all(names))
    assert len(stored) == len(events)
    for sent, got in zip(events, stored, strict=True):
        assert got.subject == f"{names.prefix}.order.created.v1"
        assert got.subject == subject_for(sent.event_type, names.prefix)
        assert got.body == to_cloudevent(sent)
        assert got.headers["Nats-Msg-Id"] == str(sent.event_id)
        assert got.headers["content-type"] == "application/cloudevents+json"
        assert got.headers["ce-destination"] == "event-feed"


def test_the_same_event_published_twice_is_stored_once(sink: JetStreamSink, names: Names) -> None:
    once = event()

    first = sink(once)
    second = sink(once)

    assert first.duplicate is False
    assert second.duplicate is True
    assert second.sequence == first.sequence
    assert asyncio.run(_message_count(names)) == 1


def test_no_server_fails_the_try_within_the_timeout() -> None:
    sink = JetStreamSink(f"nats://127.0.0.1:{free_port()}", timeout_seconds=2)
    outcome: list[BaseException] = []

    def publish() -> None:
        try:
            sink(event())
        except BaseException as exc:
            outcome.append(exc)

    try:
        worker = threading.Thread(target=publish, daemon=True)
        worker.start()
        worker.join(timeout=15)
        assert not worker.is_alive(), "the sink hung without a server"
        assert len(outcome) == 1
        assert isinstance(outcome[0], DeliveryFailed)
        assert "NATS" in str(outcome[0])
    finally:
        sink.close()
    sink.close()  # idempotent
    with pytest.raises(DeliveryFailed, match="closed"):
        sink(event())


def test_event_types_land_on_their_own_subjects_of_one_stream(
    sink: JetStreamSink, names: Names
) -> None:
    types = [
        ORDER_CREATED,
        "com.primoro.productshop.product.created.v1",
        "com.primoro.productshop.practice_product.settings_changed.v1",
    ]

    receipts = [sink(event(t)) for t in types]

    assert {r.stream for r in receipts} == {names.stream}
    stored = asyncio.run(_read_all(names))
    assert [s.subject for s in stored] == [
        f"{names.prefix}.order.created.v1",
        f"{names.prefix}.product.created.v1",
        f"{names.prefix}.practice_product.settings_changed.v1",
    ]
    assert [s.body["type"] for s in stored] == types


def test_eight_threads_publishing_store_every_event_exactly_once(
    sink: JetStreamSink, names: Names
) -> None:
    events = [event(n=n) for n in range(200)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        receipts = list(pool.map(sink, events))

    assert not any(r.duplicate for r in receipts)
    assert sorted(r.sequence for r in receipts) == list(range(1, 201))
    stored = asyncio.run(_read_all(names))
    assert sorted(s.headers["Nats-Msg-Id"] for s in stored) == sorted(
        str(e.event_id) for e in events
    )
    assert asyncio.run(_message_count(names)) == 200


def test_the_relay_delivers_a_destination_configured_for_nats_and_a_resend_is_dropped(
    names: Names, context: Any, database: Any, settings: Any
) -> None:
    """Finance set to `nats` in settings: the relay publishes its events to the stream, each
    once; a delivery sent again (a relay that died before recording it) is dropped by the
    broker, whose message id is the event id."""
    from product_shop.config import EventSinkSettings
    from product_shop.context import AppContext
    from product_shop.events.types import FINANCE_ORDER_RECORDED
    from tests.integration.delivery_support import deliveries

    configured = settings.model_copy(
        update={
            "event_sinks": {**settings.event_sinks, "finance": EventSinkSettings(kind="nats")},
            "nats_url": NATS_URL,
            "nats_stream": names.stream,
            "nats_subject_prefix": names.prefix,
        }
    )
    app = AppContext.build(configured, database=database)
    try:
        orders = [str(uuid.uuid4()) for _ in range(3)]
        with database.unit_of_work() as session:
            for order_id in orders:
                app.outbox.emit(
                    session, FINANCE_ORDER_RECORDED, aggregate_id=order_id, data={"o": order_id}
                )
        assert app.relay.run_once() == 3
        assert app.feeds.kinds["finance"] == "nats"
        stored = asyncio.run(_read_all(names))
        assert sorted(s.body["subject"] for s in stored) == sorted(orders)
        assert {s.subject for s in stored} == {f"{names.prefix}.finance.order_recorded.v1"}
        ids = {s.headers["Nats-Msg-Id"] for s in stored}
        assert ids == {s.body["id"] for s in stored}

        # Sent again, as after a crash between sending and recording: the broker drops it.
        (first, *_) = deliveries(database, destination="finance")
        with database.unit_of_work() as session:
            from sqlalchemy import update

            from product_shop.events.tables import EventDelivery

            session.execute(
                update(EventDelivery)
                .where(EventDelivery.delivery_id == first.delivery_id)
                .values(status="pending", delivered_at=None, next_attempt_at=first.queued_at)
            )
        assert app.relay.run_once() == 1
        assert asyncio.run(_message_count(names)) == 3
    finally:
        app.close()
