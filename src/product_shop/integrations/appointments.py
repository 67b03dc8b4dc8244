"""Appointment Manager's contract with Product Shop (spec §11.1): it tells us, by a signed webhook
(Standard Webhooks, `POST /v1/webhooks/appointments`), that an appointment ended. We read nothing
from it and write nothing to it, and no PMS or clinical record is touched: the event is kept as
context for the practice's staff and may prompt AI suggestions for them.

Body (JSON):

    {"id": "evt_...", "type": "appointment.ended", "created_at": "<ISO 8601>",
     "data": {"appointment_id": "<their id, 1-64 characters>",
              "practice_id": "<uuid>", "patient_id": "<uuid>",
              "clinician_id": "<their id, 1-64 characters>",
              "clinician_name": "<display name>" | null,
              "treatment_codes": ["<code, 1-32 characters>", ...] (at most 20),
              "reason": "<free text, at most 500 characters>" | null,
              "ended_at": "<ISO 8601 with offset>"}}

`webhook-id` is the message id (the inbox dedupes on it); every copy of one event has the same
id. Other `type`s are acknowledged and ignored (`status: "ignored"`), so Appointment Manager can
add event types without breaking us.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from product_shop.core.moments import parse_timestamp
from product_shop.core.text import has_control_characters

APPOINTMENT_ENDED = "appointment.ended"
MAX_CODES = 20
MAX_CODE_LENGTH = 32
MAX_REASON_LENGTH = 500
MAX_ID_LENGTH = 64


class MalformedAppointmentEvent(ValueError):
    """The body is not the contract's (names the first field that is wrong)."""


@dataclass(frozen=True, slots=True)
class AppointmentEnded:
    appointment_id: str
    practice_id: uuid.UUID
    patient_id: uuid.UUID
    clinician_id: str
    clinician_name: str | None
    treatment_codes: tuple[str, ...]
    reason: str | None
    ended_at: datetime


def parse_event(event: Any) -> tuple[str, AppointmentEnded | None]:
    """(type, the parsed event) for `appointment.ended`, (type, None) for another type."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedAppointmentEvent("type")
    if event["type"] != APPOINTMENT_ENDED:
        return event["type"], None
    data = event.get("data")
    if not isinstance(data, dict):
        raise MalformedAppointmentEvent("data")
    codes = data.get("treatment_codes", [])
    if (
        not isinstance(codes, list)
        or len(codes) > MAX_CODES
        or not all(
            isinstance(c, str) and 0 < len(c.strip()) <= MAX_CODE_LENGTH and not _controls(c)
            for c in codes
        )
    ):
        raise MalformedAppointmentEvent("data.treatment_codes")
    reason = data.get("reason")
    if reason is not None and (
        not isinstance(reason, str)
        or len(reason) > MAX_REASON_LENGTH
        or has_control_characters(reason, multiline=True)
    ):
        raise MalformedAppointmentEvent("data.reason")
    name = data.get("clinician_name")
    if name is not None and (not isinstance(name, str) or len(name) > 200 or _controls(name)):
        raise MalformedAppointmentEvent("data.clinician_name")
    return APPOINTMENT_ENDED, AppointmentEnded(
        appointment_id=_short_text(data, "appointment_id"),
        practice_id=_uuid(data, "practice_id"),
        patient_id=_uuid(data, "patient_id"),
        clinician_id=_short_text(data, "clinician_id"),
        clinician_name=name or None,
        treatment_codes=tuple(dict.fromkeys(c.strip().upper() for c in codes)),
        reason=(reason or "").strip() or None,
        ended_at=_aware(data, "ended_at"),
    )


def _short_text(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH or _controls(value):
        raise MalformedAppointmentEvent(f"data.{field}")
    return value


def _controls(text: str) -> bool:
    """Control characters (or line breaks) in a one-line field: never meant (core/text.py)."""
    return has_control_characters(text)


def _uuid(data: dict[str, Any], field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(data[field]))
    except (KeyError, ValueError) as exc:
        raise MalformedAppointmentEvent(f"data.{field}") from exc


def _aware(data: dict[str, Any], field: str) -> datetime:
    try:
        return parse_timestamp(str(data[field]))  # aware, in range, as UTC
    except (KeyError, ValueError) as exc:
        raise MalformedAppointmentEvent(f"data.{field}") from exc
