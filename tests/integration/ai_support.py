"""Shared steps for the AI suggestion tests: a practice catalogue for a periodontal appointment
(with products an engine must never be offered), Appointment Manager's signed `appointment.ended`
event, the staff list of suggestions, and what the database holds."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.core.signing import sign
from product_shop.db.engine import Database
from product_shop.recommendations.tables import AiSuggestion, AppointmentContext
from tests.conftest import APPOINTMENTS_WEBHOOK_SECRET, Person, World
from tests.integration.conftest import count_rows

WEBHOOK_URL = "/v1/webhooks/appointments"
PERIO_CODES = ["PERIO-SRP"]
PERIO_REASON = "Periodontal maintenance: bleeding gums and plaque between the teeth"
FRAMING = "Recommended by your care team"


@dataclass(frozen=True)
class PerioCatalogue:
    """Practice A's catalogue for a periodontal appointment. Only `brushes` and `mouthwash` are
    what a patient of practice A could buy now and suit the appointment; every other relevant
    product is one the engine must never be given. The not-purchasable ones share more words
    with the appointment than the purchasable ones, so they would rank first if they leaked."""

    brushes: uuid.UUID  # (a) offered, visible, available, relevant
    mouthwash: uuid.UUID  # (a) offered, visible, available, relevant
    whitening: uuid.UUID  # offered and purchasable, but nothing to do with gums
    hidden: uuid.UUID  # (b) relevant, offered with visible=False
    unavailable: uuid.UUID  # (c) relevant, offered, availability 'unavailable'
    only_b: uuid.UUID  # (d) relevant, offered by practice B only
    never_offered: uuid.UUID  # (e) relevant, offered by no practice
    deprecated: uuid.UUID  # relevant, offered, then deprecated

    @property
    def purchasable(self) -> set[str]:
        return {str(self.brushes), str(self.mouthwash), str(self.whitening)}

    @property
    def relevant_and_purchasable(self) -> set[str]:
        return {str(self.brushes), str(self.mouthwash)}

    @property
    def never_suggested(self) -> set[str]:
        return {
            str(p)
            for p in (
                self.hidden,
                self.unavailable,
                self.only_b,
                self.never_offered,
                self.deprecated,
            )
        }


def set_availability(client: TestClient, world: World, product: uuid.UUID, status: str) -> None:
    """The catalogue team's PATCH, as test_recommendations does it."""
    response = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": status},
    )
    assert response.status_code == 200, response.text


def perio_catalogue(
    client: TestClient,
    world: World,
    make_product: Callable[..., uuid.UUID],
    offer: Callable[..., None],
) -> PerioCatalogue:
    brushes = make_product(
        name="TePe Interdental Brushes",
        description="Cleans between the teeth and along the gum line.",
        category="Interdental cleaning",
    )
    mouthwash = make_product(
        name="Corsodyl Daily Mouthwash",
        description="Alcohol-free mouthwash for gum health.",
        category="Mouthwash",
    )
    whitening = make_product(
        name="Home Whitening Kit",
        description="Carbamide peroxide whitening trays.",
        category="Whitening",
    )
    leaky = "Periodontal gum brush for bleeding gums, plaque and periodontal pockets."
    hidden = make_product(
        name="Periodontal Gum Brush (hidden)", description=leaky, category="Interdental cleaning"
    )
    unavailable = make_product(
        name="Periodontal Gum Floss (unavailable)",
        description=leaky,
        category="Interdental cleaning",
    )
    only_b = make_product(
        name="Periodontal Gum Rinse (practice B)", description=leaky, category="Mouthwash"
    )
    never_offered = make_product(
        name="Periodontal Gum Picks (not offered)",
        description=leaky,
        category="Interdental cleaning",
    )
    deprecated = make_product(
        name="Periodontal Gum Tape (deprecated)", description=leaky, category="Interdental cleaning"
    )
    for product in (brushes, mouthwash, whitening, unavailable, deprecated):
        offer(world.admin_a, product, 1299)
    offer(world.admin_a, hidden, 1299, visible=False)
    offer(world.admin_b, only_b, 1299)
    offer(world.admin_b, brushes, 1499)
    set_availability(client, world, unavailable, "unavailable")
    set_availability(client, world, deprecated, "deprecated")
    return PerioCatalogue(
        brushes=brushes,
        mouthwash=mouthwash,
        whitening=whitening,
        hidden=hidden,
        unavailable=unavailable,
        only_b=only_b,
        never_offered=never_offered,
        deprecated=deprecated,
    )


def appointment_event(
    world: World,
    patient: Person,
    *,
    appointment_id: str | None = None,
    practice_id: uuid.UUID | None = None,
    codes: list[str] | None = None,
    reason: str | None = PERIO_REASON,
    event_type: str = "appointment.ended",
) -> dict[str, Any]:
    """Appointment Manager's body (integrations/appointments.py)."""
    now = datetime.now(UTC).isoformat()
    return {
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "type": event_type,
        "created_at": now,
        "data": {
            "appointment_id": appointment_id or f"appt-{uuid.uuid4().hex[:12]}",
            "practice_id": str(practice_id or patient.actor.practice_id),
            "patient_id": patient.actor.actor_id,
            "clinician_id": world.clinician_a.actor.actor_id,
            "clinician_name": "Dr Clare",
            "treatment_codes": PERIO_CODES if codes is None else codes,
            "reason": reason,
            "ended_at": now,
        },
    }


def send_event(
    client: TestClient,
    event: dict[str, Any] | bytes,
    *,
    message_id: str | None = None,
    secret: str = APPOINTMENTS_WEBHOOK_SECRET,
) -> httpx2.Response:
    """Sign the body as Appointment Manager does (Standard Webhooks) and post it."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    message_id = message_id or f"msg_{uuid.uuid4().hex[:20]}"
    headers = sign(secret, message_id, int(time.time()), body).as_dict()
    response: httpx2.Response = client.post(
        WEBHOOK_URL, content=body, headers={**headers, "Content-Type": "application/json"}
    )
    return response


def suggestions_of(client: TestClient, who: Person, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/ai-suggestions", headers=who.headers, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def suggest(
    client: TestClient, world: World, patient: Person, **event: Any
) -> list[dict[str, Any]]:
    """An appointment of `patient` ended; the pending suggestions it produced (staff view)."""
    sent = appointment_event(world, patient, **event)
    response = send_event(client, sent)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "recorded", response.text
    appointment = sent["data"]["appointment_id"]
    made = [
        item
        for item in suggestions_of(client, world.staff_a, status="pending", limit=200)
        if item["appointment"]["appointment_id"] == appointment
    ]
    assert len(made) == response.json()["suggestions"]
    return made


def mine(client: TestClient, patient: Person) -> list[dict[str, Any]]:
    response = client.get("/v1/me/recommendations", headers=patient.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def audit_entries(database: Database, stream_type: str, action: str) -> list[AuditEntry]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.stream_type == stream_type, AuditEntry.action == action)
                .order_by(AuditEntry.position)
            )
        )


def ai_rows(database: Database) -> tuple[int, int, int]:
    """Appointment contexts, AI suggestions and audit entries stored."""
    return (
        count_rows(database, AppointmentContext),
        count_rows(database, AiSuggestion),
        count_rows(database, AuditEntry),
    )
