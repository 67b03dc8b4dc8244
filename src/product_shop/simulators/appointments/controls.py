"""Test controls under /_simulator (no key: tests and the demo only), and the only routes there are:
Appointment Manager offers Product Shop no API, it sends events.

- POST /appointments/end: make the `appointment.ended` event of an appointment and send it (1 or
  2 copies at the duplicate rate), waiting for the deliveries: {event_id, event, deliveries}.
  The same appointment ended again with the same facts is the same event (its bytes as first
  sent; `ended_at` left out takes the first one's); with other facts, 409
  `appointment_already_ended`. A body the contract would refuse is a 422 naming the field.
- POST /events/{event_id}/resend {copies?}: the identical event again (404 `event_not_found`).
- POST /events {type, data, id?}: a correctly signed event of any type and data, sent once as
  given (other event types, contract-breaking data) and kept for resending; its id is derived
  from the type and data unless given (an id given again with other type or data replaces it).
- POST /forged (optionally the /appointments/end body): an `appointment.ended` event signed with
  a secret that is not the configured one; the receiver should refuse it (401). Not kept.
- GET /sent (?event_id=): every copy sent, oldest first: its outcome and each try's, the event.
- GET, POST /config: callback_url, duplicate_rate, callback_attempts, retry_pause_seconds.
- POST /reset: events and the log gone, deliveries under way stopped, configuration as at start.

Plain functions (run on the thread pool): they wait for their deliveries. Without a callback URL
an event is made and kept but sent nowhere (`deliveries` is empty): resend it once one is set.
"""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr, StringConstraints

from product_shop.core.signing import new_secret
from product_shop.integrations.appointments import (
    APPOINTMENT_ENDED,
    MAX_CODE_LENGTH,
    MAX_CODES,
    MAX_ID_LENGTH,
    MAX_REASON_LENGTH,
    MalformedAppointmentEvent,
    parse_event,
)
from product_shop.simulators.appointments import delivery
from product_shop.simulators.appointments.common import Sim
from product_shop.simulators.appointments.delivery import deliver, make_event
from product_shop.simulators.appointments.state import EventRecord
from product_shop.simulators.faults import problem

router = APIRouter(prefix="/_simulator")

Id = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Code = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_CODE_LENGTH)]


class EndIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    appointment_id: Id | None = None  # default: a new one (APT-...)
    practice_id: uuid.UUID
    patient_id: uuid.UUID
    clinician_id: Id
    clinician_name: Annotated[StrictStr, StringConstraints(max_length=200)] | None = None
    treatment_codes: Annotated[list[Code], Field(max_length=MAX_CODES)]
    reason: Annotated[StrictStr, StringConstraints(max_length=MAX_REASON_LENGTH)] | None = None
    ended_at: AwareDatetime | None = None  # default: now


class ResendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    copies: int = Field(default=1, ge=1, le=10)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
    data: Any = None
    id: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)] | None = None


class ConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    callback_url: str | None = None
    duplicate_rate: float | None = Field(default=None, ge=0, le=1)
    callback_attempts: int | None = Field(default=None, ge=1, le=20)
    retry_pause_seconds: float | None = Field(default=None, ge=0, le=10)


def _event_not_found() -> JSONResponse:
    return problem(404, "event_not_found", "No such event.")


def _data(body: EndIn, appointment_id: str, ended_at: str) -> dict[str, Any]:
    """The event's `data`, in the contract's order and form (`integrations.appointments`)."""
    return {
        "appointment_id": appointment_id,
        "practice_id": str(body.practice_id),
        "patient_id": str(body.patient_id),
        "clinician_id": body.clinician_id,
        "clinician_name": body.clinician_name,
        "treatment_codes": list(body.treatment_codes),
        "reason": body.reason,
        "ended_at": ended_at,
    }


def _checked(event: EventRecord) -> JSONResponse | None:
    """A 422 naming the field when the contract's own parser refuses the event."""
    try:
        parse_event(json.loads(event.body))
    except MalformedAppointmentEvent as exc:
        return problem(422, "invalid_appointment", f"{exc}: not the contract's.")
    return None


def _answer(event: EventRecord, deliveries: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(
        {"event_id": event.event_id, "event": json.loads(event.body), "deliveries": deliveries}
    )


def _ended_at(body: EndIn) -> str:
    return (body.ended_at or datetime.now(UTC)).isoformat()


@router.post("/appointments/end")
def end_appointment(body: EndIn, state: Sim) -> JSONResponse:
    appointment_id = body.appointment_id or f"APT-{secrets.token_hex(6).upper()}"
    identifier = delivery.event_id(appointment_id, APPOINTMENT_ENDED)
    with state.lock:
        event = state.events.get(identifier)
        if event is not None:
            ended_at = _ended_at(body) if body.ended_at else event.data["ended_at"]
            if _data(body, appointment_id, ended_at) != event.data:
                return problem(
                    409,
                    "appointment_already_ended",
                    f"Appointment {appointment_id} ended with other facts (event {identifier}).",
                )
        else:
            event = make_event(
                identifier, APPOINTMENT_ENDED, _data(body, appointment_id, _ended_at(body))
            )
            refused = _checked(event)
            if refused is not None:
                return refused
            state.events[identifier] = event
    return _answer(event, deliver(state, event, state.copies()))


@router.post("/events/{event_id}/resend")
def resend(event_id: str, state: Sim, body: ResendIn | None = None) -> JSONResponse:
    body = body or ResendIn()
    with state.lock:
        event = state.events.get(event_id)
    if event is None:
        return _event_not_found()
    return _answer(event, deliver(state, event, body.copies))


@router.post("/events")
def send_event(body: EventIn, state: Sim) -> JSONResponse:
    """Any event, signed correctly and sent once (then resendable): for the receiver's handling
    of other types and of data the contract refuses."""
    digest = json.dumps({"type": body.type, "data": body.data}, sort_keys=True)
    identifier = body.id or delivery.event_id(digest, body.type)
    with state.lock:
        event = state.events.get(identifier)
        if event is None or (event.type, event.data) != (body.type, body.data):
            event = make_event(identifier, body.type, body.data)
            state.events[identifier] = event
    return _answer(event, deliver(state, event, 1))


@router.post("/forged")
def forged(state: Sim, body: EndIn | None = None) -> JSONResponse:
    """An `appointment.ended` event (the body's, or a made-up one) signed with another secret."""
    body = body or EndIn(
        appointment_id=f"APT-FORGED-{secrets.token_hex(4).upper()}",
        practice_id=uuid.uuid4(),
        patient_id=uuid.uuid4(),
        clinician_id="clinician-forged",
        treatment_codes=["SIM-FORGED"],
        reason="Forged by the simulator.",
    )
    appointment_id = body.appointment_id or f"APT-{secrets.token_hex(6).upper()}"
    event = make_event(
        delivery.event_id(appointment_id, APPOINTMENT_ENDED),
        APPOINTMENT_ENDED,
        _data(body, appointment_id, _ended_at(body)),
    )
    refused = _checked(event)
    if refused is not None:
        return refused
    return _answer(event, deliver(state, event, 1, secret=new_secret()))


@router.get("/sent")
def sent(state: Sim, event_id: str | None = None) -> JSONResponse:
    with state.lock:
        found = [s for s in state.sent if event_id is None or s["event_id"] == event_id]
        return JSONResponse({"deliveries": state.deliveries, "sent": found})


@router.get("/config")
def get_config(state: Sim) -> JSONResponse:
    return JSONResponse(state.public_config())


@router.post("/config")
def set_config(body: ConfigIn, state: Sim) -> JSONResponse:
    """Change only the fields given (`"callback_url": null` stops deliveries)."""
    with state.lock:
        for name in body.model_fields_set:
            value = getattr(body, name)
            if value is None and name != "callback_url":
                continue
            setattr(state.config, name, value)
    return JSONResponse(state.public_config())


@router.post("/reset", status_code=204)
def reset(state: Sim) -> None:
    state.reset()
