"""Appointment Manager simulator: it tells Product Shop that appointments ended (spec §11.1).

Appointment Manager offers us no API; it sends signed webhooks (Standard Webhooks, signed by
`core.signing.sign` with `webhook_secret`, a `whsec_` secret) to `callback_url`, Product Shop's
`POST /v1/webhooks/appointments`. The body is exactly `integrations.appointments`' contract:

    {"id": "evt_...", "type": "appointment.ended", "created_at": "<ISO 8601>",
     "data": {"appointment_id", "practice_id", "patient_id", "clinician_id", "clinician_name",
              "treatment_codes", "reason", "ended_at"}}

The event id derives from the appointment id (`delivery.event_id`) and the body is fixed when
the event is made, so every copy of an event is the same bytes under the same `webhook-id`, as
the inbox's dedupe expects. Each event is delivered twice at `duplicate_rate`; a copy is retried
on a 5xx, a 409 or no answer (`callback_attempts` in all, a short pause between), as Rewards
Manager's callbacks are.

Test controls under /_simulator (`controls`): end an appointment, resend an event, send any
event, send a forged one (another secret), list what was sent, configuration, reset.

Layout: `state` (configuration, events, delivery log), `delivery` (making, signing, sending),
`controls` (/_simulator). Routes reach the state through `common.Sim` (the app's `state.sim`).
"""

from __future__ import annotations

from fastapi import FastAPI

from product_shop.core.signing import decode_secret
from product_shop.simulators.appointments import controls
from product_shop.simulators.appointments.delivery import event_id
from product_shop.simulators.appointments.state import (
    AppointmentsSimulatorConfig,
    EventRecord,
    State,
)

__all__ = [
    "AppointmentsSimulatorConfig",
    "EventRecord",
    "State",
    "create_appointments_simulator",
    "event_id",
]


def create_appointments_simulator(config: AppointmentsSimulatorConfig | None = None) -> FastAPI:
    config = config or AppointmentsSimulatorConfig()
    decode_secret(config.webhook_secret)  # ValueError now rather than at the first delivery
    if not 0 <= config.duplicate_rate <= 1:
        raise ValueError("duplicate_rate must be between 0 and 1")
    if config.callback_attempts < 1:
        raise ValueError("callback_attempts must be at least 1")
    if config.retry_pause_seconds < 0:
        raise ValueError("retry_pause_seconds may not be negative")
    if config.callback_timeout_seconds <= 0:
        raise ValueError("callback_timeout_seconds must be positive")
    app = FastAPI(title="Appointment Manager simulator", docs_url=None, redoc_url=None)
    app.state.sim = State(config=config)
    app.include_router(controls.router)
    return app
