"""The supplier network HTTP adapter against its simulator, over real HTTP on local ports.

The simulator is the session's (`suppliers_url`: auto-advance off, no duplicates, faults and the
callback URL reset after each test). Its signed callbacks are captured by a small stdlib receiver
on 127.0.0.1 (port 0) that each test starts and stops; waits poll against a deadline.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from standardwebhooks import Webhook

from product_shop.integrations.suppliers import (
    ExceptionReason,
    Shipment,
    ShipmentItem,
    ShipmentRequest,
    ShipmentStatus,
    SupplierRejected,
    SupplierUnavailable,
)
from product_shop.integrations.suppliers_http import HttpSupplierNetwork
from product_shop.simulators.server import serve_in_background
from product_shop.simulators.suppliers import SupplierSimulatorConfig, create_suppliers_simulator
from tests.conftest import SUPPLIER_WEBHOOK_SECRET, SUPPLIERS_API_KEY

DEADLINE_SECONDS = 5.0
MAX_CAPTURED = 200  # the receiver keeps no more than this
POLL_SECONDS = 0.02  # how soon a local server notices it is asked to stop
ADDRESS = {
    "recipient_name": "Penny Patient",
    "line1": "1 Harbour Street",
    "line2": None,
    "city": "Bristol",
    "postcode": "BS1 4DJ",
    "country": "GB",
}


def wait_for(check: Callable[[], Any], what: str) -> Any:
    """Poll `check` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---- the simulator's controls ----------------------------------------------------------------


@dataclass
class Controls:
    url: str
    http: httpx.Client

    def post(self, path: str, body: Any = None, expect: int = 200) -> Any:
        response = self.http.post(f"{self.url}/_simulator{path}", json=body)
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        response = self.http.get(f"{self.url}/_simulator{path}")
        assert response.status_code == 200, response.text
        return response.json()

    def add_fault(self, **fault: Any) -> None:
        self.post("/faults", fault, expect=204)

    def refuse(self, **refusal: Any) -> None:
        self.post("/refusals", refusal, expect=204)

    def inspect(self, shipment_id: str) -> dict[str, Any]:
        document: dict[str, Any] = self.get(f"/shipments/{shipment_id}")
        return document

    def advance(self, shipment_id: str) -> dict[str, Any]:
        document: dict[str, Any] = self.post(f"/shipments/{shipment_id}/advance")
        return document

    def send_callbacks_to(self, url: str | None) -> None:
        self.post("/config", {"callback_url": url})


@pytest.fixture
def sim(suppliers_url: str) -> Iterator[Controls]:
    """The session's simulator; every fault and refusal a test queues must be used by its end."""
    with httpx.Client(timeout=5.0) as http:
        controls = Controls(suppliers_url, http)
        yield controls
        assert controls.get("/faults") == {"faults": {}, "refusals": []}


@pytest.fixture
def suppliers(sim: Controls) -> Iterator[HttpSupplierNetwork]:
    adapter = HttpSupplierNetwork(sim.url, api_key=SUPPLIERS_API_KEY, timeout_seconds=2.0)
    yield adapter
    adapter.close()


@pytest.fixture
def impatient_suppliers(sim: Controls) -> Iterator[HttpSupplierNetwork]:
    adapter = HttpSupplierNetwork(sim.url, api_key=SUPPLIERS_API_KEY, timeout_seconds=0.5)
    yield adapter
    adapter.close()


def shipment_request(reference: str | None = None, **address: Any) -> ShipmentRequest:
    return ShipmentRequest(
        reference=reference or str(uuid.uuid4()),
        order_id=str(uuid.uuid4()),
        practice_id=str(uuid.uuid4()),
        items=(ShipmentItem(product_id=str(uuid.uuid4()), name="Sonic toothbrush", quantity=2),),
        delivery_address={**ADDRESS, **address},
    )


def submit(suppliers: HttpSupplierNetwork, request: ShipmentRequest | None = None) -> Shipment:
    return suppliers.submit_shipment(
        request or shipment_request(), idempotency_key=str(uuid.uuid4())
    )


# ---- a callback receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    deliveries: list[Delivery] = field(default_factory=list)
    # Answer statuses to give, in turn, before answering 204 to everything.
    script: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/suppliers"

    def take(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            if len(self.deliveries) < MAX_CAPTURED:
                self.deliveries.append(Delivery(headers, body))
            return self.script.pop(0) if self.script else 204

    def wait(self, count: int) -> list[Delivery]:
        def enough() -> list[Delivery] | None:
            with self.lock:
                return list(self.deliveries) if len(self.deliveries) >= count else None

        found: list[Delivery] = wait_for(enough, f"{count} callbacks")
        return found


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5.0  # an idle keep-alive connection does not hold a handler thread for ever
    server: _ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(length, 1_000_000))
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.server.receiver.take(headers, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


@pytest.fixture
def receiver(sim: Controls) -> Iterator[Receiver]:
    """A local receiver the simulator's callbacks go to, for this test only."""
    server = _ReceiverServer(("127.0.0.1", 0), _Handler)
    receiver = Receiver(server=server)
    server.receiver = receiver
    thread = threading.Thread(
        target=server.serve_forever, args=(POLL_SECONDS,), name="callback-receiver", daemon=True
    )
    thread.start()
    sim.send_callbacks_to(receiver.url)
    yield receiver
    sim.send_callbacks_to(None)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def verified(delivery: Delivery) -> dict[str, Any]:
    """The callback's event after checking its Standard Webhooks signature with the shared secret
    (raises if it is not authentic)."""
    signed = {k: v for k, v in delivery.headers.items() if k.startswith("webhook-")}
    event: dict[str, Any] = Webhook(SUPPLIER_WEBHOOK_SECRET).verify(delivery.body, signed)
    assert signed["webhook-id"] == event["id"]
    return event


# ---- submission and idempotency --------------------------------------------------------------


def test_a_submitted_shipment_is_accepted_for_its_line(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()

    shipment = submit(suppliers, request)

    assert shipment.shipment_id.startswith("shp_")
    assert (shipment.reference, shipment.status, shipment.sequence) == (
        request.reference,
        ShipmentStatus.ACCEPTED,
        1,
    )
    assert (shipment.carrier, shipment.tracking_number, shipment.tracking_url) == (None,) * 3
    assert (shipment.dispatched_at, shipment.delivered_at, shipment.exception_reason) == (None,) * 3
    inspected = sim.inspect(shipment.shipment_id)
    assert inspected["order_id"] == request.order_id
    assert inspected["items"] == [
        {"product_id": request.items[0].product_id, "name": "Sonic toothbrush", "quantity": 2}
    ]
    assert inspected["delivery_address"]["postcode"] == "BS1 4DJ"
    assert suppliers.get_shipment(shipment.shipment_id) == shipment


def test_repeating_a_submission_with_its_key_returns_the_same_shipment(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    key = str(uuid.uuid4())

    first = suppliers.submit_shipment(request, idempotency_key=key)
    again = suppliers.submit_shipment(request, idempotency_key=key)

    assert again == first
    inspected = sim.inspect(first.shipment_id)
    assert (inspected["submissions"], inspected["requests"]) == (1, 2)


def test_the_same_key_with_another_shipment_is_refused_and_makes_nothing(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    key = str(uuid.uuid4())
    first = suppliers.submit_shipment(request, idempotency_key=key)

    with pytest.raises(SupplierRejected) as raised:
        suppliers.submit_shipment(shipment_request(request.reference), idempotency_key=key)

    assert raised.value.code == "idempotency_key_reused"
    assert sim.inspect(first.shipment_id)["submissions"] == 1


def test_a_lost_submission_answer_is_resent_and_makes_one_shipment(
    sim: Controls, impatient_suppliers: HttpSupplierNetwork
) -> None:
    # given the network accepts the shipment but its answer comes after the adapter's timeout
    sim.add_fault(operation="submit", mode="delay_after", seconds=1.0, times=1)
    request = shipment_request()
    # when the adapter submits
    shipment = submit(impatient_suppliers, request)
    # then its resend (same Idempotency-Key) got the first shipment back: one was made
    inspected = sim.inspect(shipment.shipment_id)
    assert (inspected["submissions"], inspected["requests"]) == (1, 2)
    assert sim.get(f"/shipments?reference={request.reference}")["shipments"] == [inspected]


# ---- refusals and failures -------------------------------------------------------------------


def test_an_undeliverable_postcode_is_refused_as_an_address_problem(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request(postcode="xx0 0xx")

    with pytest.raises(SupplierRejected) as raised:
        submit(suppliers, request)

    assert raised.value.code == "address_problem"
    assert raised.value.message
    assert sim.get(f"/shipments?reference={request.reference}")["shipments"] == []


@pytest.mark.parametrize("code", ["out_of_stock", "address_problem", "invalid_shipment"])
def test_a_refusal_the_network_is_told_to_give_is_rejected_with_its_code(
    sim: Controls, suppliers: HttpSupplierNetwork, code: str
) -> None:
    request = shipment_request()
    key = str(uuid.uuid4())
    sim.refuse(code=code, reference=request.reference)

    with pytest.raises(SupplierRejected) as raised:
        suppliers.submit_shipment(request, idempotency_key=key)

    assert raised.value.code == code
    # a refusal is not kept under the key: the same submission later goes through
    shipment = suppliers.submit_shipment(request, idempotency_key=key)
    assert sim.inspect(shipment.shipment_id)["submissions"] == 1


def test_a_shipment_without_a_delivery_address_is_an_invalid_shipment(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    broken = ShipmentRequest(
        reference=request.reference,
        order_id=request.order_id,
        practice_id=request.practice_id,
        items=request.items,
        delivery_address={"recipient_name": "Penny Patient"},
    )

    with pytest.raises(SupplierRejected) as raised:
        submit(suppliers, broken)

    assert raised.value.code == "invalid_shipment"
    assert "delivery_address" in raised.value.message


def test_a_single_5xx_is_retried_transparently(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    sim.add_fault(operation="submit", mode="error", status=503, times=1)

    shipment = submit(suppliers)

    assert sim.inspect(shipment.shipment_id)["submissions"] == 1


def test_three_503_answers_are_supplier_unavailable(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    sim.add_fault(operation="submit", mode="error", status=503, times=3)

    with pytest.raises(SupplierUnavailable, match="HTTP 503"):
        submit(suppliers, request)
    # (the `sim` fixture checks all three faulty answers were used: three sends, no more)
    assert sim.get(f"/shipments?reference={request.reference}")["shipments"] == []


def test_reads_slower_than_the_timeout_are_supplier_unavailable(
    sim: Controls, impatient_suppliers: HttpSupplierNetwork
) -> None:
    shipment = submit(impatient_suppliers)
    sim.add_fault(operation="get", mode="delay", seconds=1.0, times=3)

    with pytest.raises(SupplierUnavailable, match="Timeout"):
        impatient_suppliers.get_shipment(shipment.shipment_id)


def test_no_network_at_all_is_supplier_unavailable() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as closed:
        port = closed.server_address[1]  # bound then closed: nothing listens there
    adapter = HttpSupplierNetwork(f"http://127.0.0.1:{port}", api_key="k", timeout_seconds=0.5)
    try:
        with pytest.raises(SupplierUnavailable, match="did not answer"):
            submit(adapter)
    finally:
        adapter.close()


def test_a_wrong_api_key_is_rejected(sim: Controls) -> None:
    wrong = HttpSupplierNetwork(sim.url, api_key="not-the-key", timeout_seconds=2.0)
    try:
        with pytest.raises(SupplierRejected) as raised:
            submit(wrong)
    finally:
        wrong.close()
    assert raised.value.code == "unauthorised"


def test_an_unknown_shipment_is_rejected_as_not_found(suppliers: HttpSupplierNetwork) -> None:
    with pytest.raises(SupplierRejected) as raised:
        suppliers.get_shipment("shp_does_not_exist")
    assert raised.value.code == "shipment_not_found"


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'["a", "list"]',
        b'{"shipment_id": "shp_1"}',
        b'{"shipment_id": "shp_1", "reference": "r", "status": "teleported", "sequence": 1}',
        b'{"shipment_id": "shp_1", "reference": "r", "status": "accepted", "sequence": "1"}',
        b'{"shipment_id": "shp_1", "reference": "r", "status": "delivered", "sequence": 4,'
        b' "delivered_at": "2025-01-01T10:00:00"}',
    ],
)
def test_an_answer_that_is_not_a_shipment_is_supplier_unavailable(answer: bytes) -> None:
    class Garbage(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(POLL_SECONDS,), daemon=True)
    thread.start()
    adapter = HttpSupplierNetwork(
        f"http://127.0.0.1:{server.server_address[1]}", api_key="k", timeout_seconds=1.0
    )
    try:
        with pytest.raises(SupplierUnavailable, match="unexpected shipment answer"):
            adapter.get_shipment("shp_1")
    finally:
        adapter.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---- the shipment's progress -----------------------------------------------------------------


def test_an_advanced_shipment_shows_dispatch_with_carrier_and_tracking_then_delivery(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    shipment = submit(suppliers)

    update = sim.advance(shipment.shipment_id)
    dispatched = suppliers.get_shipment(shipment.shipment_id)

    assert (dispatched.status, dispatched.sequence) == (ShipmentStatus.DISPATCHED, 2)
    assert dispatched.carrier in {"Royal Mail", "DPD", "Evri"}
    assert dispatched.tracking_number
    assert dispatched.tracking_url == (
        f"https://track.example-carrier.test/parcel/"
        f"{dispatched.carrier.lower().replace(' ', '-')}/{dispatched.tracking_number}"
    )
    assert dispatched.dispatched_at is not None
    assert dispatched.dispatched_at.utcoffset() is not None
    assert update["tracking_number"] == dispatched.tracking_number
    assert update["sequence"] == 2

    sim.advance(shipment.shipment_id)
    assert suppliers.get_shipment(shipment.shipment_id).status is ShipmentStatus.IN_TRANSIT
    sim.advance(shipment.shipment_id)
    delivered = suppliers.get_shipment(shipment.shipment_id)
    assert (delivered.status, delivered.sequence) == (ShipmentStatus.DELIVERED, 4)
    assert delivered.delivered_at is not None
    assert delivered.dispatched_at == dispatched.dispatched_at
    assert delivered.tracking_number == dispatched.tracking_number
    # delivered is final
    response = sim.http.post(f"{sim.url}/_simulator/shipments/{shipment.shipment_id}/advance")
    assert (response.status_code, response.json()["code"]) == (409, "shipment_final")


def test_an_exception_stops_the_shipment_with_its_reason(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    shipment = submit(suppliers)
    sim.advance(shipment.shipment_id)

    update = sim.post(f"/shipments/{shipment.shipment_id}/exception", {"reason": "lost"})

    assert (update["status"], update["exception_reason"], update["sequence"]) == (
        "exception",
        "lost",
        3,
    )
    stopped = suppliers.get_shipment(shipment.shipment_id)
    assert (stopped.status, stopped.exception_reason) == (
        ShipmentStatus.EXCEPTION,
        ExceptionReason.LOST,
    )
    assert stopped.tracking_number is not None  # what was known stays known
    response = sim.http.post(f"{sim.url}/_simulator/shipments/{shipment.shipment_id}/advance")
    assert response.status_code == 409


@contextmanager
def auto_advancing(
    dispatch: float, in_transit: float, deliver: float
) -> Iterator[tuple[FastAPI, HttpSupplierNetwork]]:
    """A network of its own that moves shipments on by itself after these delays, and an
    adapter to it."""
    app = create_suppliers_simulator(
        SupplierSimulatorConfig(
            api_key=SUPPLIERS_API_KEY,
            dispatch_after_seconds=dispatch,
            in_transit_after_seconds=in_transit,
            deliver_after_seconds=deliver,
            auto_advance=True,
        )
    )
    server = serve_in_background(app)
    adapter = HttpSupplierNetwork(server.url, api_key=SUPPLIERS_API_KEY, timeout_seconds=2.0)
    try:
        yield app, adapter
    finally:
        adapter.close()
        server.stop()


def test_with_auto_advance_a_shipment_is_dispatched_and_delivered_by_itself() -> None:
    with auto_advancing(0.05, 0.1, 0.15) as (_app, adapter):
        shipment = submit(adapter)

        def delivered_yet() -> Shipment | None:
            now = adapter.get_shipment(shipment.shipment_id)
            return now if now.status is ShipmentStatus.DELIVERED else None

        delivered = wait_for(delivered_yet, "the delivery")

        assert delivered.sequence == 4
        assert delivered.carrier in {"Royal Mail", "DPD", "Evri"}
        assert delivered.tracking_number
        assert delivered.tracking_url
        assert delivered.dispatched_at is not None
        assert delivered.delivered_at is not None
        assert delivered.dispatched_at <= delivered.delivered_at


def test_auto_advance_keeps_no_thread_per_shipment_waiting_for_its_steps() -> None:
    """Thousands of accepted shipments each have three steps ahead of them: one timeline thread
    waits for all of them, not a sleeping timer thread per step."""
    with auto_advancing(600, 1200, 1800) as (app, adapter):
        submit(adapter)  # the first one starts the timeline's thread
        threads = threading.active_count()
        for _ in range(30):
            submit(adapter)
        assert threading.active_count() <= threads
        waiting = [s for s in app.state.sim.shipments.values() if s.status == "accepted"]
        assert len(waiting) == 31
        assert app.state.sim.timeline.pending() == 31 * 3


# ---- signed callbacks ------------------------------------------------------------------------


def test_every_change_sends_a_signed_callback_in_order(
    sim: Controls, suppliers: HttpSupplierNetwork, receiver: Receiver
) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)
    for _ in range(3):
        sim.advance(shipment.shipment_id)

    events = [verified(delivery) for delivery in receiver.wait(4)]

    assert [e["type"] for e in events] == [
        "shipment.accepted",
        "shipment.dispatched",
        "shipment.in_transit",
        "shipment.delivered",
    ]
    assert [e["data"]["sequence"] for e in events] == [1, 2, 3, 4]
    assert len({e["id"] for e in events}) == 4
    assert all(e["id"].startswith("evt_") for e in events)
    assert all(set(e) == {"id", "type", "created_at", "data"} for e in events)
    assert all(e["created_at"] == e["data"]["occurred_at"] for e in events)
    assert all(e["data"]["shipment_id"] == shipment.shipment_id for e in events)
    assert all(e["data"]["reference"] == request.reference for e in events)
    last = suppliers.get_shipment(shipment.shipment_id)
    delivered = events[-1]["data"]
    assert (delivered["status"], delivered["tracking_number"], delivered["carrier"]) == (
        "delivered",
        last.tracking_number,
        last.carrier,
    )
    assert delivered["delivered_at"] is not None
    assert events[1]["data"]["tracking_url"] == last.tracking_url
    assert events[0]["data"]["tracking_number"] is None
    wait_for(lambda: sim.inspect(shipment.shipment_id)["callbacks_sent"] == 4, "the count")


def test_an_exception_sends_its_callback_with_the_reason(
    sim: Controls, suppliers: HttpSupplierNetwork, receiver: Receiver
) -> None:
    shipment = submit(suppliers)
    sim.post(f"/shipments/{shipment.shipment_id}/exception", {"reason": "out_of_stock"})

    events = [verified(delivery) for delivery in receiver.wait(2)]

    assert events[-1]["type"] == "shipment.exception"
    assert events[-1]["data"]["exception_reason"] == "out_of_stock"
    assert events[-1]["data"]["sequence"] == 2


def test_held_callbacks_are_released_reversed_and_twice(
    sim: Controls, suppliers: HttpSupplierNetwork, receiver: Receiver
) -> None:
    sim.post("/callbacks/hold", expect=204)
    shipment = submit(suppliers)
    sim.advance(shipment.shipment_id)
    sim.advance(shipment.shipment_id)
    assert sim.inspect(shipment.shipment_id)["callbacks_sent"] == 0

    released = sim.post("/callbacks/release", {"order": "reverse", "duplicate": True})

    assert released == {"released": 6}
    events = [verified(delivery) for delivery in receiver.wait(6)]
    assert [e["data"]["sequence"] for e in events] == [3, 2, 1, 3, 2, 1]
    assert [e["id"] for e in events[:3]] == [e["id"] for e in events[3:]]
    assert len({e["id"] for e in events}) == 3


def test_a_callback_the_receiver_fails_is_sent_again_with_the_same_id(
    sim: Controls, suppliers: HttpSupplierNetwork, receiver: Receiver
) -> None:
    receiver.script.extend([503, 500])

    shipment = submit(suppliers)

    first, second, third = receiver.wait(3)
    assert verified(first)["id"] == verified(second)["id"] == verified(third)["id"]
    assert first.body == third.body
    wait_for(lambda: sim.inspect(shipment.shipment_id)["callbacks_sent"] == 1, "the count")


# ---- cancellation ----------------------------------------------------------------------------


def cancel(suppliers: HttpSupplierNetwork, reference: str, key: str | None = None) -> Shipment:
    return suppliers.cancel_shipment(reference, idempotency_key=key or str(uuid.uuid4()))


def events_of(receiver: Receiver, shipment_id: str, count: int) -> list[dict[str, Any]]:
    """The verified callbacks about one shipment, once `count` callbacks (any) have arrived."""
    return [
        event
        for event in (verified(delivery) for delivery in receiver.wait(count))
        if event["data"]["shipment_id"] == shipment_id
    ]


def test_cancelling_an_accepted_shipment_answers_it_cancelled_with_a_signed_callback(
    sim: Controls, suppliers: HttpSupplierNetwork, receiver: Receiver
) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)

    cancelled = cancel(suppliers, request.reference)

    assert (cancelled.shipment_id, cancelled.reference) == (shipment.shipment_id, request.reference)
    assert (cancelled.status, cancelled.sequence) == (ShipmentStatus.CANCELLED, 2)
    assert (cancelled.carrier, cancelled.tracking_number, cancelled.dispatched_at) == (None,) * 3
    assert suppliers.get_shipment(shipment.shipment_id) == cancelled
    events = [verified(delivery) for delivery in receiver.wait(2)]
    assert [e["type"] for e in events] == ["shipment.accepted", "shipment.cancelled"]
    last = events[-1]
    assert (last["data"]["status"], last["data"]["sequence"]) == ("cancelled", 2)
    assert (last["data"]["shipment_id"], last["data"]["reference"]) == (
        shipment.shipment_id,
        request.reference,
    )
    assert last["created_at"] == last["data"]["occurred_at"]
    assert events[0]["id"] != last["id"]


def test_cancelling_twice_answers_the_same_and_moves_the_sequence_once(
    sim: Controls, suppliers: HttpSupplierNetwork, receiver: Receiver
) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)
    key = str(uuid.uuid4())

    first = cancel(suppliers, request.reference, key)
    replayed = cancel(suppliers, request.reference, key)  # a resend under its key
    again = cancel(suppliers, request.reference)  # a new request, another key

    assert replayed == first
    assert again == first
    assert (first.status, first.sequence) == (ShipmentStatus.CANCELLED, 2)
    assert sim.inspect(shipment.shipment_id)["cancellations"] == 3
    # callbacks leave in order: once a later shipment's is in, every earlier one has arrived
    marker = submit(suppliers)
    wait_for(
        lambda: any(
            verified(d)["data"]["shipment_id"] == marker.shipment_id for d in receiver.wait(1)
        ),
        "the later shipment's callback",
    )
    events = events_of(receiver, shipment.shipment_id, 3)
    assert [(e["type"], e["data"]["sequence"]) for e in events] == [
        ("shipment.accepted", 1),
        ("shipment.cancelled", 2),
    ]


@pytest.mark.parametrize(
    ("steps", "status"), [(1, "dispatched"), (2, "in_transit"), (3, "delivered")]
)
def test_a_shipment_that_left_the_warehouse_cannot_be_cancelled(
    sim: Controls, suppliers: HttpSupplierNetwork, steps: int, status: str
) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)
    for _ in range(steps):
        sim.advance(shipment.shipment_id)

    with pytest.raises(SupplierRejected) as raised:
        cancel(suppliers, request.reference)

    assert raised.value.code == "already_dispatched"
    assert raised.value.message
    now = suppliers.get_shipment(shipment.shipment_id)
    assert (now.status.value, now.sequence) == (status, 1 + steps)


def test_an_exception_before_dispatch_may_be_cancelled_but_not_one_after(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    before = shipment_request()
    stuck = submit(suppliers, before)
    sim.post(f"/shipments/{stuck.shipment_id}/exception", {"reason": "out_of_stock"})
    after = shipment_request()
    lost = submit(suppliers, after)
    sim.advance(lost.shipment_id)
    sim.post(f"/shipments/{lost.shipment_id}/exception", {"reason": "lost"})

    cancelled = cancel(suppliers, before.reference)
    with pytest.raises(SupplierRejected) as raised:
        cancel(suppliers, after.reference)

    assert (cancelled.status, cancelled.sequence) == (ShipmentStatus.CANCELLED, 3)
    assert cancelled.exception_reason is ExceptionReason.OUT_OF_STOCK  # what was known stays
    assert raised.value.code == "already_dispatched"
    assert suppliers.get_shipment(lost.shipment_id).status is ShipmentStatus.EXCEPTION


def test_cancelling_an_unknown_reference_is_shipment_not_found(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    with pytest.raises(SupplierRejected) as raised:
        cancel(suppliers, f"{uuid.uuid4()}:1")
    assert raised.value.code == "shipment_not_found"


def test_a_cancelled_shipment_moves_no_more(sim: Controls, suppliers: HttpSupplierNetwork) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)
    cancel(suppliers, request.reference)

    for path, body in (("advance", None), ("exception", {"reason": "lost"})):
        response = sim.http.post(
            f"{sim.url}/_simulator/shipments/{shipment.shipment_id}/{path}", json=body
        )
        assert (response.status_code, response.json()["code"]) == (409, "shipment_final")

    now = suppliers.get_shipment(shipment.shipment_id)
    assert (now.status, now.sequence, now.exception_reason) == (ShipmentStatus.CANCELLED, 2, None)


def test_with_auto_advance_a_cancelled_shipment_is_never_dispatched() -> None:
    with auto_advancing(1.0, 1.05, 1.1) as (_app, adapter):
        request = shipment_request()
        shipment = submit(adapter, request)
        cancel(adapter, request.reference)
        # a shipment submitted later, left alone: once it is delivered, the cancelled one's
        # steps (the same delays, scheduled earlier) have all run
        control = submit(adapter)

        def delivered_yet() -> bool:
            return adapter.get_shipment(control.shipment_id).status is ShipmentStatus.DELIVERED

        wait_for(delivered_yet, "the other shipment's delivery")

        now = adapter.get_shipment(shipment.shipment_id)
        assert (now.status, now.sequence) == (ShipmentStatus.CANCELLED, 2)
        assert (now.carrier, now.dispatched_at, now.delivered_at) == (None, None, None)


def test_the_same_key_with_another_cancellation_is_refused_and_cancels_nothing(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    first, second = shipment_request(), shipment_request()
    submitted_key = str(uuid.uuid4())
    suppliers.submit_shipment(first, idempotency_key=submitted_key)
    other = submit(suppliers, second)
    key = str(uuid.uuid4())
    cancel(suppliers, first.reference, key)

    for reused in (key, submitted_key):  # a cancellation's key, a submission's key
        with pytest.raises(SupplierRejected) as raised:
            cancel(suppliers, second.reference, reused)
        assert raised.value.code == "idempotency_key_reused"

    now = suppliers.get_shipment(other.shipment_id)
    assert (now.status, now.sequence) == (ShipmentStatus.ACCEPTED, 1)


def test_a_refused_cancellation_is_not_kept_under_its_key(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    key = str(uuid.uuid4())
    with pytest.raises(SupplierRejected):
        cancel(suppliers, request.reference, key)  # nothing submitted yet

    submit(suppliers, request)
    assert cancel(suppliers, request.reference, key).status is ShipmentStatus.CANCELLED


def test_a_single_5xx_on_cancellation_is_retried_transparently(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)
    sim.add_fault(operation="cancel", mode="error", status=503, times=1)

    cancelled = cancel(suppliers, request.reference)

    assert (cancelled.status, cancelled.sequence) == (ShipmentStatus.CANCELLED, 2)
    assert sim.inspect(shipment.shipment_id)["cancellations"] == 1


def test_three_503_answers_to_a_cancellation_are_supplier_unavailable(
    sim: Controls, suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)
    sim.add_fault(operation="cancel", mode="error", status=503, times=3)

    with pytest.raises(SupplierUnavailable, match="HTTP 503"):
        cancel(suppliers, request.reference)
    # (the `sim` fixture checks all three faulty answers were used: three sends, no more)
    now = suppliers.get_shipment(shipment.shipment_id)
    assert (now.status, now.sequence) == (ShipmentStatus.ACCEPTED, 1)


def test_a_lost_cancellation_answer_is_resent_and_cancels_once(
    sim: Controls, impatient_suppliers: HttpSupplierNetwork
) -> None:
    # given the network cancels but its answer comes after the adapter's timeout
    request = shipment_request()
    shipment = submit(impatient_suppliers, request)
    sim.add_fault(operation="cancel", mode="delay_after", seconds=1.0, times=1)

    cancelled = cancel(impatient_suppliers, request.reference)

    # the resend (same Idempotency-Key) got the cancelled shipment back: one step, one change
    assert (cancelled.status, cancelled.sequence) == (ShipmentStatus.CANCELLED, 2)
    assert sim.inspect(shipment.shipment_id)["cancellations"] == 2


def test_cancellations_slower_than_the_timeout_are_supplier_unavailable(
    sim: Controls, impatient_suppliers: HttpSupplierNetwork
) -> None:
    request = shipment_request()
    submit(impatient_suppliers, request)
    sim.add_fault(operation="cancel", mode="delay", seconds=1.0, times=3)

    with pytest.raises(SupplierUnavailable, match="Timeout"):
        cancel(impatient_suppliers, request.reference)


def test_a_wrong_api_key_cannot_cancel(sim: Controls, suppliers: HttpSupplierNetwork) -> None:
    request = shipment_request()
    shipment = submit(suppliers, request)
    wrong = HttpSupplierNetwork(sim.url, api_key="not-the-key", timeout_seconds=2.0)
    try:
        with pytest.raises(SupplierRejected) as raised:
            cancel(wrong, request.reference)
    finally:
        wrong.close()

    assert raised.value.code == "unauthorised"
    assert suppliers.get_shipment(shipment.shipment_id).status is ShipmentStatus.ACCEPTED


def test_a_cancellation_needs_a_key_and_a_reference(sim: Controls) -> None:
    url = f"{sim.url}/v1/shipments/cancellations"
    auth = {"Authorization": f"Bearer {SUPPLIERS_API_KEY}"}

    no_key = sim.http.post(url, json={"reference": "r:1"}, headers=auth)
    bad_body = sim.http.post(
        url, json={"reference": ""}, headers={**auth, "Idempotency-Key": "k-bad-body"}
    )
    not_json = sim.http.post(
        url, content=b"nope", headers={**auth, "Idempotency-Key": "k-not-json"}
    )

    assert (no_key.status_code, no_key.json()["code"]) == (400, "idempotency_key_required")
    assert (bad_body.status_code, bad_body.json()["code"]) == (422, "invalid_cancellation")
    assert (not_json.status_code, not_json.json()["code"]) == (422, "invalid_cancellation")


@pytest.mark.parametrize(
    "answer",
    [
        b'{"shipment_id": "shp_1", "reference": "line:1", "status": "accepted", "sequence": 1}',
        b'{"shipment_id": "shp_1", "reference": "other:1", "status": "cancelled", "sequence": 2}',
        b'{"shipment_id": "shp_1", "reference": "line:1", "status": "cancelled"}',
    ],
)
def test_a_cancellation_answer_that_is_not_the_cancelled_shipment_is_supplier_unavailable(
    answer: bytes,
) -> None:
    class Answering(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(POLL_SECONDS,), daemon=True)
    thread.start()
    adapter = HttpSupplierNetwork(
        f"http://127.0.0.1:{server.server_address[1]}", api_key="k", timeout_seconds=1.0
    )
    try:
        with pytest.raises(SupplierUnavailable, match="cancellation"):
            cancel(adapter, "line:1")
    finally:
        adapter.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
