"""The Appointment Manager simulator: the `appointment.ended` events it sends are the contract's
(`integrations.appointments.parse_event` reads them) and correctly signed (`core.signing.verify`
accepts them), every copy of an event is the same bytes under the same id, a forged one fails
the check, and a delivery answered 503 is retried.

A tiny receiving app, served on a local port beside the simulator, checks each delivery as
Product Shop's webhook endpoint would and records what it got; it can be told to answer 503 to
the next few. Both are the module's; each test resets them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from product_shop.cli import _parser
from product_shop.core.signing import DEMO_APPOINTMENTS_WEBHOOK_SECRET, SignatureError, verify
from product_shop.integrations.appointments import APPOINTMENT_ENDED, parse_event
from product_shop.simulators.appointments import (
    AppointmentsSimulatorConfig,
    create_appointments_simulator,
    event_id,
)
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background

SECRET = "whsec_dGVzdC1hcHBvaW50bWVudHMtd2ViaG9vay1zZWNyZXQtMzI="  # 32 bytes, the test's own
PRACTICE_ID = str(uuid.UUID("11111111-1111-4111-8111-111111111111"))
PATIENT_ID = str(uuid.UUID("22222222-2222-4222-8222-222222222222"))


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int


@dataclass
class Receiver:
    """What the receiving app got, and how many of the next deliveries it answers 503."""

    deliveries: list[Delivery] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.deliveries.clear()
            self.fail_next = 0


def receiving_app(receiver: Receiver) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/webhooks/appointments")
    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        headers = dict(request.headers)
        try:
            verify(SECRET, headers, body, now=int(time.time()))
            verified = True
        except SignatureError:
            verified = False
        with receiver.lock:
            if not verified:
                status = 401
            elif receiver.fail_next > 0:
                receiver.fail_next -= 1
                status = 503
            else:
                status = 200
            receiver.deliveries.append(Delivery(headers, body, verified, status))
        return JSONResponse({"status": "ok" if status == 200 else "refused"}, status_code=status)

    return app


@pytest.fixture(scope="module")
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture(scope="module")
def receiving_server(receiver: Receiver) -> Iterator[BackgroundServer]:
    server = serve_in_background(receiving_app(receiver))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def simulator(receiving_server: BackgroundServer) -> Iterator[BackgroundServer]:
    config = AppointmentsSimulatorConfig(
        webhook_secret=SECRET,
        callback_url=f"{receiving_server.url}/v1/webhooks/appointments",
        duplicate_rate=0.0,
        callback_attempts=4,
        callback_timeout_seconds=2.0,
        retry_pause_seconds=0.01,
        seed=7,
    )
    server = serve_in_background(create_appointments_simulator(config))
    yield server
    server.stop()


@pytest.fixture
def controls(simulator: BackgroundServer, receiver: Receiver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{simulator.url}/_simulator", timeout=10) as http:
        yield http
        http.post("/reset").raise_for_status()
        receiver.clear()


def end(controls: httpx.Client, expect: int = 200, **fields: Any) -> dict[str, Any]:
    body = {
        "practice_id": PRACTICE_ID,
        "patient_id": PATIENT_ID,
        "clinician_id": "clin-7",
        "clinician_name": "Dr A. Patel",
        "treatment_codes": ["whiten", "SCALE-POLISH"],
        "reason": "Whitening; mentioned sensitivity",
        **fields,
    }
    answer = controls.post("/appointments/end", json=body)
    assert answer.status_code == expect, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_an_ended_appointment_is_a_signed_event_of_the_contract(
    controls: httpx.Client, receiver: Receiver
) -> None:
    answer = end(controls, appointment_id="APT-1001", ended_at="2025-03-04T10:30:00+00:00")

    assert answer["event_id"] == event_id("APT-1001", APPOINTMENT_ENDED)
    assert answer["deliveries"] == [{"status_code": 200, "attempts": 1}]
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert delivery.headers["webhook-id"] == answer["event_id"]
    assert delivery.headers["content-type"] == "application/json"
    event = json.loads(delivery.body)
    assert event == answer["event"]
    assert event["id"] == answer["event_id"]
    event_type, parsed = parse_event(event)
    assert event_type == APPOINTMENT_ENDED
    assert parsed is not None
    assert parsed.appointment_id == "APT-1001"
    assert str(parsed.practice_id) == PRACTICE_ID
    assert str(parsed.patient_id) == PATIENT_ID
    assert (parsed.clinician_id, parsed.clinician_name) == ("clin-7", "Dr A. Patel")
    assert parsed.treatment_codes == ("WHITEN", "SCALE-POLISH")
    assert parsed.reason == "Whitening; mentioned sensitivity"
    assert parsed.ended_at.isoformat() == "2025-03-04T10:30:00+00:00"
    assert list(event) == ["id", "type", "created_at", "data"]
    assert list(event["data"]) == [
        "appointment_id",
        "practice_id",
        "patient_id",
        "clinician_id",
        "clinician_name",
        "treatment_codes",
        "reason",
        "ended_at",
    ]


def test_defaults_a_new_appointment_id_and_the_end_time(
    controls: httpx.Client, receiver: Receiver
) -> None:
    first = end(controls, clinician_name=None, reason=None, treatment_codes=[])
    second = end(controls, clinician_name=None, reason=None, treatment_codes=[])
    assert first["event_id"] != second["event_id"]
    for delivery in receiver.deliveries:
        _, parsed = parse_event(json.loads(delivery.body))
        assert parsed is not None
        assert parsed.appointment_id.startswith("APT-")
        assert (parsed.clinician_name, parsed.reason, parsed.treatment_codes) == (None, None, ())
        assert parsed.ended_at.tzinfo is not None


def test_duplicates_are_the_same_bytes_under_the_same_id(
    controls: httpx.Client, receiver: Receiver
) -> None:
    controls.post("/config", json={"duplicate_rate": 1.0}).raise_for_status()
    answer = end(controls, appointment_id="APT-DUP")
    assert len(answer["deliveries"]) == 2

    resent = controls.post(f"/events/{answer['event_id']}/resend")
    assert resent.status_code == 200
    assert resent.json()["deliveries"] == [{"status_code": 200, "attempts": 1}]
    # Ended again with the same facts: the same event once more (not a new one).
    again = end(controls, appointment_id="APT-DUP")
    assert again["event_id"] == answer["event_id"]

    assert len(receiver.deliveries) == 5
    assert all(d.verified for d in receiver.deliveries)
    assert {d.headers["webhook-id"] for d in receiver.deliveries} == {answer["event_id"]}
    assert {d.body for d in receiver.deliveries} == {receiver.deliveries[0].body}
    sent = controls.get("/sent", params={"event_id": answer["event_id"]}).json()["sent"]
    assert [s["copy"] for s in sent] == [1, 2, 1, 1, 2]


def test_the_same_appointment_with_other_facts_is_refused(controls: httpx.Client) -> None:
    end(controls, appointment_id="APT-2002")
    answer = end(controls, expect=409, appointment_id="APT-2002", reason="Something else")
    assert answer["code"] == "appointment_already_ended"


def test_a_forged_event_fails_verification(controls: httpx.Client, receiver: Receiver) -> None:
    answer = controls.post("/forged")
    assert answer.status_code == 200
    assert answer.json()["deliveries"] == [{"status_code": 401, "attempts": 1}]  # not retried
    [delivery] = receiver.deliveries
    assert not delivery.verified
    with pytest.raises(SignatureError):
        verify(SECRET, delivery.headers, delivery.body, now=int(time.time()))
    # It is the contract's body all the same: only the signature is wrong.
    assert parse_event(json.loads(delivery.body))[1] is not None
    [logged] = controls.get("/sent").json()["sent"]
    assert logged["forged"] is True


def test_a_503_is_retried(controls: httpx.Client, receiver: Receiver) -> None:
    receiver.fail_next = 2
    answer = end(controls, appointment_id="APT-RETRY")
    assert answer["deliveries"] == [{"status_code": 200, "attempts": 3}]
    assert [d.status for d in receiver.deliveries] == [503, 503, 200]
    assert {d.body for d in receiver.deliveries} == {receiver.deliveries[0].body}
    assert {d.headers["webhook-id"] for d in receiver.deliveries} == {answer["event_id"]}
    [logged] = controls.get("/sent").json()["sent"]
    assert logged["tries"] == [{"status_code": 503}, {"status_code": 503}, {"status_code": 200}]


def test_gives_up_after_the_attempts(controls: httpx.Client, receiver: Receiver) -> None:
    receiver.fail_next = 10
    answer = end(controls, appointment_id="APT-DOWN")
    assert answer["deliveries"] == [{"status_code": 503, "attempts": 4}]

    controls.post("/config", json={"callback_url": f"http://127.0.0.1:{free_port()}/"})
    answer = end(controls, appointment_id="APT-NOBODY")
    [delivery] = answer["deliveries"]
    assert delivery["attempts"] == 4
    assert delivery["error"]


def test_any_event_type_can_be_sent_signed(controls: httpx.Client, receiver: Receiver) -> None:
    answer = controls.post(
        "/events", json={"type": "appointment.rescheduled", "data": {"appointment_id": "A-1"}}
    )
    assert answer.status_code == 200
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert parse_event(json.loads(delivery.body)) == ("appointment.rescheduled", None)


@pytest.mark.parametrize(
    "fields",
    [
        {"practice_id": "not-a-uuid"},
        {"treatment_codes": ["C"] * 21},
        {"treatment_codes": ["C" * 33]},
        {"treatment_codes": ["   "]},
        {"reason": "x" * 501},
        {"ended_at": "2025-03-04T10:30:00"},
        {"patient_name": "Amelia"},
    ],
)
def test_a_body_the_contract_refuses_is_422(
    fields: dict[str, Any], controls: httpx.Client, receiver: Receiver
) -> None:
    end(controls, expect=422, **fields)
    assert receiver.deliveries == []


def test_unknown_event_and_reset(controls: httpx.Client) -> None:
    assert controls.post("/events/evt_unknown/resend").status_code == 404
    answer = end(controls, appointment_id="APT-RESET")
    controls.post("/reset").raise_for_status()
    assert controls.post(f"/events/{answer['event_id']}/resend").status_code == 404
    assert controls.get("/sent").json() == {"deliveries": 0, "sent": []}


def test_a_secret_not_in_the_format_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        create_appointments_simulator(AppointmentsSimulatorConfig(webhook_secret="plain"))


def test_simulate_appointments_command_defaults() -> None:
    args = _parser().parse_args(["simulate", "appointments"])
    assert args.webhook_secret == DEMO_APPOINTMENTS_WEBHOOK_SECRET
    assert args.callback_url == "http://127.0.0.1:8000/v1/webhooks/appointments"
    assert (args.host, args.port, args.duplicate_rate, args.attempts) == (
        "127.0.0.1",
        8106,
        0.3,
        4,
    )
