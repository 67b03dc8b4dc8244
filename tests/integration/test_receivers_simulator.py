"""The receiving modules simulator against our real `WebhookSink`, over real HTTP on a local port:
signed CloudEvents recorded once per webhook id, refusals, and the faults a test sets per
destination (fail, hang, slow, down).

One simulator for the module (the demo secrets of every feed destination); after each test its
faults are cleared and what it received is forgotten. Every event is built here as a
`PendingEvent`, as the relay would claim it, with an id of its own.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from product_shop.core.signing import demo_destination_secret, sign
from product_shop.events.delivery import DeliveryFailed, PendingEvent
from product_shop.events.routing import FEED_DESTINATIONS
from product_shop.events.types import EVENT_SOURCE, PREFIX
from product_shop.integrations.event_webhooks import WebhookSink
from product_shop.simulators.receivers import ReceiversSimulatorConfig, create_receivers_simulator
from product_shop.simulators.server import BackgroundServer, serve_in_background

HUB = "communication_hub"
FINANCE = "finance"
ORDER_CREATED = PREFIX + "order.created.v1"
STAGE_CHANGED = PREFIX + "fulfilment.stage_changed.v1"
READ_TIMEOUT = 0.3  # the impatient sinks' read timeout; a hang or a slow answer outlasts it
PATIENT_READ_TIMEOUT = 10.0  # every other sink's: a loaded CI machine never times it out
HANG_SECONDS = 1.5
DEADLINE_SECONDS = 5.0


def event(
    destination: str = HUB,
    *,
    event_type: str = ORDER_CREATED,
    subject: str | None = None,
    data: dict[str, Any] | None = None,
) -> PendingEvent:
    aggregate = subject or str(uuid.uuid4())
    return PendingEvent(
        delivery_id=1,
        destination=destination,
        position=1,
        event_id=uuid.uuid4(),
        event_type=event_type,
        source=EVENT_SOURCE,
        subject=aggregate,
        aggregate_type="order",
        aggregate_id=aggregate,
        occurred_at=datetime.now(UTC),
        data=data if data is not None else {"order_id": aggregate},
        attempts=0,
    )


@pytest.fixture(scope="module")
def receivers() -> Iterator[BackgroundServer]:
    server = serve_in_background(create_receivers_simulator(ReceiversSimulatorConfig()))
    yield server
    server.stop()


@dataclass
class Receivers:
    url: str
    http: httpx.Client
    sinks: list[WebhookSink]

    def sink(
        self,
        destination: str,
        secret: str | None = None,
        *,
        read_timeout: float = PATIENT_READ_TIMEOUT,
    ) -> WebhookSink:
        made = WebhookSink(
            f"{self.url}/{destination}",
            secret or demo_destination_secret(destination),
            connect_timeout_seconds=5.0,
            read_timeout_seconds=read_timeout,
        )
        self.sinks.append(made)
        return made

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        response = self.http.request(method, f"{self.url}/_simulator{path}", json=body)
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    def fault(self, destination: str, **fault: Any) -> None:
        self.call("POST", f"/{destination}/faults", fault)

    def received(self, destination: str, **filters: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get(
            f"{self.url}/_simulator/{destination}/received", params=filters
        ).json()
        return answer


@pytest.fixture
def sim(receivers: BackgroundServer) -> Iterator[Receivers]:
    with httpx.Client(timeout=5.0) as http:
        controls = Receivers(receivers.url, http, [])
        try:
            yield controls
        finally:
            for destination in FEED_DESTINATIONS:
                controls.call("DELETE", f"/{destination.value}/faults", expect=204)
            controls.call("DELETE", "/received", expect=204)
            for made in controls.sinks:
                made.close()


def test_a_signed_event_is_recorded_once(sim: Receivers) -> None:
    sent = event(HUB, data={"order_id": "o-1", "total_minor": 5999})
    receipt = sim.sink(HUB)(sent)
    assert receipt.status_code == 200
    found = sim.received(HUB)
    assert [e["webhook_id"] for e in found["events"]] == [str(sent.event_id)]
    recorded = found["events"][0]
    assert recorded["destination"] == HUB
    assert recorded["type"] == ORDER_CREATED
    assert recorded["subject"] == sent.subject
    assert recorded["data"] == {"order_id": "o-1", "total_minor": 5999}
    assert recorded["time"] == sent.occurred_at.isoformat()
    assert recorded["sequence"] == 1
    assert recorded["received_at"]
    assert (found["duplicates"], found["refused"], found["failed"]) == (0, 0, 0)
    assert sim.received(FINANCE)["events"] == []
    counts = sim.call("GET", "/received")["destinations"]
    assert counts[HUB]["events"] == 1
    assert set(counts) == {d.value for d in FEED_DESTINATIONS}


def test_the_same_event_twice_is_recorded_once_and_counted_as_a_duplicate(sim: Receivers) -> None:
    sink, sent = sim.sink(HUB), event(HUB)
    assert sink(sent).status_code == 200
    assert sink(sent).status_code == 200
    following = event(HUB)
    sink(following)
    found = sim.received(HUB)
    assert [e["webhook_id"] for e in found["events"]] == [
        str(sent.event_id),
        str(following.event_id),
    ]
    assert [e["sequence"] for e in found["events"]] == [1, 2]
    assert found["duplicates"] == 1


def test_a_wrong_secret_is_refused_with_401_and_nothing_recorded(sim: Receivers) -> None:
    sink = sim.sink(HUB, secret=demo_destination_secret(FINANCE))
    with pytest.raises(DeliveryFailed) as failed:
        sink(event(HUB))
    assert failed.value.status_code == 401
    found = sim.received(HUB)
    assert found["events"] == []
    assert found["refused"] == 1


def test_a_fail_fault_answers_its_status_count_times_then_the_event_is_recorded(
    sim: Receivers,
) -> None:
    sim.fault(HUB, mode="fail", status=503, count=2)
    sink, sent = sim.sink(HUB), event(HUB)
    for _ in range(2):
        with pytest.raises(DeliveryFailed) as failed:
            sink(sent)
        assert failed.value.status_code == 503
        assert sim.received(HUB)["events"] == []
    assert sink(sent).status_code == 200
    found = sim.received(HUB)
    assert [e["webhook_id"] for e in found["events"]] == [str(sent.event_id)]
    assert (found["failed"], found["duplicates"]) == (2, 0)
    assert sim.call("GET", f"/{HUB}/faults")["fault"] is None


def test_a_hang_times_the_sink_out_records_nothing_and_holds_up_no_other_destination(
    sim: Receivers,
) -> None:
    sim.fault(HUB, mode="hang", seconds=HANG_SECONDS, count=1)
    outcome: list[BaseException] = []

    def deliver_to_the_hung_receiver() -> None:
        try:
            sim.sink(HUB, read_timeout=READ_TIMEOUT)(event(HUB))
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)

    hung = threading.Thread(target=deliver_to_the_hung_receiver, daemon=True)
    hung.start()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while sim.call("GET", f"/{HUB}/faults")["fault"] is not None:  # taken: the delivery hangs
        assert time.monotonic() < deadline, "the hung delivery never arrived"
        time.sleep(0.01)
    started = time.monotonic()
    other = event(FINANCE, event_type=PREFIX + "finance.order_recorded.v1")
    assert sim.sink(FINANCE)(other).status_code == 200  # the hung one holds up no other
    assert time.monotonic() - started < HANG_SECONDS / 2
    assert [e["webhook_id"] for e in sim.received(FINANCE)["events"]] == [str(other.event_id)]
    hung.join(timeout=DEADLINE_SECONDS)
    assert not hung.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], DeliveryFailed)
    assert outcome[0].status_code is None  # no answer: the read timed out
    assert "Timeout" in str(outcome[0])
    found = sim.received(HUB)
    assert found["events"] == []
    assert found["failed"] == 1


def test_a_slow_receiver_records_the_event_though_the_sink_timed_out(sim: Receivers) -> None:
    """The sender's retry of an event the receiver took late is a duplicate (at least once)."""
    sim.fault(HUB, mode="slow", seconds=READ_TIMEOUT * 3, count=1)
    sent = event(HUB)
    with pytest.raises(DeliveryFailed) as failed:
        sim.sink(HUB, read_timeout=READ_TIMEOUT)(sent)
    assert failed.value.status_code is None
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not sim.received(HUB)["events"]:
        assert time.monotonic() < deadline, "the slow receiver never recorded the event"
        time.sleep(0.02)
    assert sim.sink(HUB)(sent).status_code == 200
    found = sim.received(HUB)
    assert len(found["events"]) == 1
    assert found["duplicates"] == 1


def test_a_down_receiver_answers_503_until_cleared(sim: Receivers) -> None:
    sim.fault(HUB, mode="down")
    sink, sent = sim.sink(HUB), event(HUB)
    for _ in range(3):
        with pytest.raises(DeliveryFailed) as failed:
            sink(sent)
        assert failed.value.status_code == 503
    sim.call("DELETE", f"/{HUB}/faults", expect=204)
    assert sink(sent).status_code == 200
    found = sim.received(HUB)
    assert (len(found["events"]), found["failed"]) == (1, 3)


def test_received_filters_by_order_type_and_subject(sim: Receivers) -> None:
    order, other_order = str(uuid.uuid4()), str(uuid.uuid4())
    sink = sim.sink(HUB)
    created = event(HUB, subject=order)
    shipped = event(
        HUB, event_type=STAGE_CHANGED, subject="line-1", data={"order_id": order, "stage": "x"}
    )
    elsewhere = event(HUB, subject=other_order)
    for sent in (created, shipped, elsewhere):
        sink(sent)

    def ids(**filters: str) -> list[str]:
        return [e["webhook_id"] for e in sim.received(HUB, **filters)["events"]]

    assert ids(order_id=order) == [str(created.event_id), str(shipped.event_id)]
    assert ids(order_id=other_order) == [str(elsewhere.event_id)]
    assert ids(type="fulfilment.stage_changed.v1") == [str(shipped.event_id)]
    assert ids(type=ORDER_CREATED) == [str(created.event_id), str(elsewhere.event_id)]
    assert ids(type="order.created.v1", order_id=order) == [str(created.event_id)]
    assert ids(subject="line-1") == [str(shipped.event_id)]
    assert ids(order_id="no-such-order") == []


def test_a_webhook_id_that_is_not_the_cloudevents_id_is_400(sim: Receivers) -> None:
    sent = event(HUB)
    document = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),  # not the webhook-id it is signed under
        "source": EVENT_SOURCE,
        "type": ORDER_CREATED,
        "subject": sent.subject,
        "datacontenttype": "application/json",
        "data": sent.data,
    }
    body = json.dumps(document).encode()
    headers = sign(demo_destination_secret(HUB), str(sent.event_id), int(time.time()), body)
    response = sim.http.post(
        f"{sim.url}/{HUB}",
        content=body,
        headers={"content-type": "application/cloudevents+json", **headers.as_dict()},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "webhook_id_mismatch"
    found = sim.received(HUB)
    assert (found["events"], found["refused"]) == ([], 1)
    assert sim.sink(HUB)(sent).status_code == 200  # the id was not remembered


def test_unknown_destinations_and_bad_fault_bodies_are_problems(sim: Receivers) -> None:
    response = sim.http.post(f"{sim.url}/nobody", content=b"{}")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_destination"
    assert sim.call("GET", "/nobody/received", expect=404)["code"] == "unknown_destination"
    bad = sim.call("POST", f"/{HUB}/faults", {"mode": "explode"}, expect=422)
    assert bad["code"] == "invalid_fault"
    assert sim.call("POST", f"/{HUB}/faults", {"mode": "hang"}, expect=422)["code"] == (
        "invalid_fault"
    )
    assert sim.call("GET", f"/{HUB}/faults")["fault"] is None
