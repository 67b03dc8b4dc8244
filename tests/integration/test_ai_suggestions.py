"""AI suggestions behind the staff approval gate, through the HTTP API (spec §4.1, §7, §8, §11.1,
§15.2 rule 8, §15.6): Appointment Manager's signed `appointment.ended` event prompts pending
suggestions drawn only from the practice's purchasable catalogue; staff see them, a named
clinician or staff member approves (it becomes their recommendation, the only way it reaches the
patient) or rejects; everything is audited; AI summaries are for staff and state figures only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.recommendations.ai.http import HttpSuggestionEngine
from product_shop.recommendations.ai.port import (
    AppointmentFacts,
    CandidateProduct,
    EngineInfo,
    EngineSuggestion,
    SuggestionEngine,
    SuggestionEngineError,
)
from product_shop.recommendations.suggestion_schemas import STAFF_ONLY_NOTICE
from product_shop.recommendations.tables import AiSuggestion, AppointmentContext, Recommendation
from product_shop.simulators.ai import AiSimulatorConfig, create_ai_simulator
from product_shop.simulators.server import BackgroundServer, serve_in_background
from product_shop.web.app import create_app
from tests.conftest import Person, World
from tests.integration.ai_support import (
    FRAMING,
    PERIO_REASON,
    PerioCatalogue,
    ai_rows,
    appointment_event,
    audit_entries,
    mine,
    perio_catalogue,
    send_event,
    suggest,
    suggestions_of,
)
from tests.integration.checkout_support import ADDRESS, key, pay
from tests.integration.conftest import count_rows

NOTE = "Use these every evening, gently, before brushing."
AI_API_KEY = "test-ai-service-api-key"


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def catalogue(
    client: TestClient,
    world: World,
    make_product: Callable[..., uuid.UUID],
    offer: Callable[..., None],
) -> PerioCatalogue:
    return perio_catalogue(client, world, make_product, offer)


@pytest.fixture
def staff_b(person: Callable[..., Person], world: World) -> Person:
    return person("staff", world.practice_b, "Sam Staff-B")


@pytest.fixture
def clinician_b(person: Callable[..., Person], world: World) -> Person:
    return person("clinician", world.practice_b, "Dr Bryn")


AppWith = Callable[[SuggestionEngine], TestClient]


@pytest.fixture
def app_with(settings: Settings, database: Database) -> Iterator[AppWith]:
    """The API built around another suggestion engine (the same database)."""
    opened: list[tuple[AppContext, TestClient]] = []

    def build(engine: SuggestionEngine) -> TestClient:
        context = AppContext.build(settings, database=database, suggestion_engine=engine)
        client = TestClient(create_app(context=context), raise_server_exceptions=False)
        client.__enter__()
        opened.append((context, client))
        return client

    yield build
    for context, client in reversed(opened):
        client.__exit__(None, None, None)
        context.close()


class FailingEngine:
    """An engine that cannot answer (down, timed out)."""

    calls = 0

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="failing-engine", version="0")

    def suggest(
        self, facts: AppointmentFacts, candidates: Sequence[CandidateProduct], *, limit: int
    ) -> list[EngineSuggestion]:
        self.calls += 1
        raise SuggestionEngineError("the engine is down")


@dataclass
class ScriptedEngine:
    """An engine that answers what it is told to, whatever the candidates, and remembers what
    it was given."""

    answer: list[EngineSuggestion] = field(default_factory=list)
    given: list[tuple[AppointmentFacts, tuple[CandidateProduct, ...], int]] = field(
        default_factory=list
    )
    version: str = "7"

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="scripted-engine", version=self.version)

    def suggest(
        self, facts: AppointmentFacts, candidates: Sequence[CandidateProduct], *, limit: int
    ) -> list[EngineSuggestion]:
        self.given.append((facts, tuple(candidates), limit))
        return list(self.answer)


# ---- steps ------------------------------------------------------------------------------------


def _problem(response: httpx2.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


def _approve(
    client: TestClient, who: Person, suggestion_id: str, body: dict[str, Any] | None = None
) -> httpx2.Response:
    return client.post(
        f"/v1/ai-suggestions/{suggestion_id}/approve",
        headers=who.headers,
        json=body,
    )


def _reject(
    client: TestClient, who: Person, suggestion_id: str, body: dict[str, Any] | None = None
) -> httpx2.Response:
    return client.post(
        f"/v1/ai-suggestions/{suggestion_id}/reject",
        headers=who.headers,
        json=body,
    )


def _get(client: TestClient, who: Person, suggestion_id: str) -> httpx2.Response:
    return client.get(f"/v1/ai-suggestions/{suggestion_id}", headers=who.headers)


def _expire(database: Database, suggestion_id: str) -> None:
    """Its lifetime ends now (the lifetime setting is at least a minute: the row is moved)."""
    with Session(database.engine) as session, session.begin():
        row = session.get(AiSuggestion, uuid.UUID(suggestion_id))
        assert row is not None
        session.execute(
            update(AiSuggestion)
            .where(AiSuggestion.suggestion_id == row.suggestion_id)
            .values(expires_at=row.created_at - timedelta(seconds=1))
        )


def _patient_facing_text(client: TestClient, patient: Person) -> str:
    """Everything the patient's app can read about recommendations, products and orders."""
    texts = []
    for url in ("/v1/me/recommendations", "/v1/catalogue", "/v1/me/orders"):
        response = client.get(url, headers=patient.headers)
        assert response.status_code == 200, (url, response.text)
        texts.append(response.text)
    return "\n".join(texts)


def _refused_to_patient(client: TestClient, patient: Person, suggestion_id: str) -> None:
    """Every AI suggestion route is 403 to a patient."""
    for response in (
        client.get("/v1/ai-suggestions", headers=patient.headers),
        client.get("/v1/ai-suggestions", headers=patient.headers, params={"status": "approved"}),
        _get(client, patient, suggestion_id),
        _approve(client, patient, suggestion_id, {"note": "mine"}),
        _reject(client, patient, suggestion_id, {"reason": "no"}),
    ):
        _problem(response, 403, "forbidden")


def _context_row(database: Database, appointment_id: str) -> AppointmentContext:
    with Session(database.engine) as session:
        row = session.scalar(
            select(AppointmentContext).where(AppointmentContext.appointment_id == appointment_id)
        )
        assert row is not None
        session.expunge(row)
        return row


# ---- an appointment ended: pending suggestions from the purchasable catalogue ----------------


def test_a_perio_appointment_yields_pending_suggestions_from_the_purchasable_catalogue_only(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    event = appointment_event(world, world.patient_a, appointment_id="appt-perio-1")
    response = send_event(client, event)

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "recorded", "suggestions": 2}
    items = suggestions_of(client, world.staff_a, status="pending")
    assert {item["product"]["product_id"] for item in items} == catalogue.relevant_and_purchasable
    assert not {item["product"]["product_id"] for item in items} & catalogue.never_suggested
    for item in items:
        assert item["status"] == "pending"
        assert item["rationale"].strip()
        assert (item["engine"], item["engine_version"]) == ("local-tfidf", "1")
        assert 0 < item["score"] <= 1000
        assert item["practice_id"] == str(world.practice_a)
        assert item["patient_id"] == world.patient_a.actor.actor_id
        assert item["product"]["purchasable"] is True
        assert item["appointment"]["appointment_id"] == "appt-perio-1"
        assert item["appointment"]["treatment_codes"] == ["PERIO-SRP"]
        assert item["appointment"]["reason"] == PERIO_REASON
        assert item["appointment"]["clinician_name"] == "Dr Clare"
        assert (item["decided_by"], item["recommendation_id"]) == (None, None)
        assert item["notice"] == STAFF_ONLY_NOTICE
    assert ai_rows(database)[:2] == (1, 2)

    # The stored row keeps what the engine was given and which engine it was.
    with Session(database.engine) as session:
        rows = list(session.scalars(select(AiSuggestion)))
    for row in rows:
        assert row.inputs["treatment_codes"] == ["PERIO-SRP"]
        assert row.inputs["reason"] == PERIO_REASON
        assert row.inputs["candidates"] == len(catalogue.purchasable)
        assert row.expires_at > row.created_at
    context = _context_row(database, "appt-perio-1")
    assert context.suggestions_status == "suggested"
    assert context.patient_id == uuid.UUID(world.patient_a.actor.actor_id)

    # Each one reads the same alone, and the patient filter finds them.
    for item in items:
        single = _get(client, world.clinician_a, item["suggestion_id"])
        assert single.status_code == 200, single.text
        assert single.json() == item
    assert (
        len(suggestions_of(client, world.admin_a, patient_id=world.patient_a.actor.actor_id)) == 2
    )
    assert suggestions_of(client, world.admin_a, patient_id=world.patient_a2.actor.actor_id) == []


def test_an_appointment_with_nothing_relevant_is_recorded_with_no_suggestions(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    event = appointment_event(
        world, world.patient_a, appointment_id="appt-none", codes=["ZZQ-UNKNOWN"], reason=None
    )
    response = send_event(client, event)

    assert response.json() == {"status": "recorded", "suggestions": 0}
    assert _context_row(database, "appt-none").suggestions_status == "none"
    assert ai_rows(database)[:2] == (1, 0)


def test_the_same_event_again_or_another_message_about_the_appointment_is_a_duplicate(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    event = appointment_event(world, world.patient_a, appointment_id="appt-dup")
    first = send_event(client, event, message_id="msg_appt_dup_1")
    assert first.json() == {"status": "recorded", "suggestions": 2}
    written = ai_rows(database)
    assert written[:2] == (1, 2)

    again = send_event(client, event, message_id="msg_appt_dup_1")
    assert again.status_code == 200, again.text
    assert again.json() == {"status": "duplicate", "suggestions": 0}
    assert ai_rows(database) == written

    # Appointment Manager sends the same appointment under a new message id (a new event id,
    # even other facts): still the one appointment, nothing new.
    other_message = appointment_event(
        world, world.patient_a, appointment_id="appt-dup", codes=["WHITENING"]
    )
    second = send_event(client, other_message, message_id="msg_appt_dup_2")
    assert second.json() == {"status": "duplicate", "suggestions": 0}
    assert ai_rows(database) == written
    assert len(suggestions_of(client, world.staff_a)) == 2


def test_a_forged_event_is_401_and_writes_nothing(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    before = ai_rows(database)
    event = appointment_event(world, world.patient_a, appointment_id="appt-forged")
    wrong = "whsec_" + "Zm9yZ2VkLWFwcG9pbnRtZW50cy1zZWNyZXQtMzJieXRlcw=="

    forged = send_event(client, event, message_id="msg_forged", secret=wrong)
    _problem(forged, 401, "invalid_signature")
    unsigned = client.post(
        "/v1/webhooks/appointments",
        content=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
    )
    _problem(unsigned, 401, "invalid_signature")
    assert ai_rows(database) == before
    assert suggestions_of(client, world.staff_a) == []

    # The same message signed with the real secret is taken (the forged copy reserved nothing).
    real = send_event(client, event, message_id="msg_forged")
    assert real.json()["status"] == "recorded", real.text


def test_a_malformed_body_is_400_and_another_event_type_is_ignored(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    before = ai_rows(database)
    good = appointment_event(world, world.patient_a)
    bad_bodies: list[dict[str, Any] | bytes] = [
        b"not json at all",
        b"[]",
        {"type": "appointment.ended"},
        {**good, "data": {**good["data"], "patient_id": "not-a-uuid"}},
        {**good, "data": {**good["data"], "ended_at": "2024-01-01T10:00:00"}},  # no offset
        {**good, "data": {**good["data"], "treatment_codes": "PERIO-SRP"}},
        {**good, "data": {**good["data"], "appointment_id": ""}},
        # control characters are never in a name, an id, a code or a reason (core/text.py)
        {**good, "data": {**good["data"], "clinician_name": "Dr\u0000X"}},
        {**good, "data": {**good["data"], "clinician_id": "c\u001b1"}},
        {**good, "data": {**good["data"], "treatment_codes": ["PERIO\u0007"]}},
        {**good, "data": {**good["data"], "reason": "pain\u0000"}},
        {**good, "data": {**good["data"], "ended_at": "9999-12-31T23:59:59-12:00"}},
    ]
    for body in bad_bodies:
        _problem(send_event(client, body), 400, "malformed_webhook")
    assert ai_rows(database) == before

    other = appointment_event(world, world.patient_a, event_type="appointment.booked")
    ignored = send_event(client, other)
    assert ignored.status_code == 200, ignored.text
    assert ignored.json() == {"status": "ignored", "suggestions": 0}
    assert ai_rows(database) == before


# ---- the approval gate ------------------------------------------------------------------------


def test_a_suggestion_is_invisible_to_the_patient_until_a_named_staff_member_approves_it(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    made = {s["product"]["product_id"]: s for s in suggest(client, world, world.patient_a)}
    brushes, mouthwash = made[str(catalogue.brushes)], made[str(catalogue.mouthwash)]

    # Pending: nothing reaches the patient, by any route the patient has.
    assert mine(client, world.patient_a) == []
    seen = _patient_facing_text(client, world.patient_a)
    for pending in (brushes, mouthwash):
        assert pending["suggestion_id"] not in seen
        assert pending["rationale"] not in seen
        _refused_to_patient(client, world.patient_a, pending["suggestion_id"])
    assert count_rows(database, Recommendation) == 0

    approved = _approve(client, world.staff_a, brushes["suggestion_id"], {"note": NOTE})

    assert approved.status_code == 200, approved.text
    decided = approved.json()
    assert decided["status"] == "approved"
    assert decided["decided_by"] == world.staff_a.actor.actor_id
    assert (decided["decided_by_name"], decided["decided_by_role"]) == ("Stan Staff", "staff")
    assert decided["decided_at"] is not None
    assert decided["recommendation_id"] is not None
    assert _get(client, world.admin_a, brushes["suggestion_id"]).json() == decided
    assert [
        s["suggestion_id"] for s in suggestions_of(client, world.staff_a, status="approved")
    ] == [brushes["suggestion_id"]]
    assert [
        s["suggestion_id"] for s in suggestions_of(client, world.staff_a, status="pending")
    ] == [mouthwash["suggestion_id"]]

    # Now the patient sees exactly that one, as their care team's, attributed to the approver.
    (shown,) = mine(client, world.patient_a)
    assert shown["recommendation_id"] == decided["recommendation_id"]
    assert shown["framing"] == FRAMING
    assert shown["recommended_by_name"] == "Stan Staff"
    assert shown["note"] == NOTE
    assert shown["product"]["product_id"] == brushes["product"]["product_id"]
    assert shown["product"]["purchasable"] is True
    assert "rationale" not in json.dumps(shown)
    assert brushes["rationale"] not in json.dumps(shown)

    # The care team's own list has it as a recommendation attributed to the approver.
    listed = client.get(
        f"/v1/patients/{world.patient_a.actor.actor_id}/recommendations",
        headers=world.clinician_a.headers,
    ).json()["items"]
    assert [
        (r["recommendation_id"], r["recommended_by"], r["recommended_by_role"]) for r in listed
    ] == [(decided["recommendation_id"], world.staff_a.actor.actor_id, "staff")]
    with Session(database.engine) as session:
        recommendation = session.get(Recommendation, uuid.UUID(decided["recommendation_id"]))
        assert recommendation is not None
        assert recommendation.appointment_id == brushes["appointment"]["appointment_id"]


def test_approving_without_a_note_attributes_it_to_the_approver_with_no_note(
    client: TestClient, world: World, catalogue: PerioCatalogue
) -> None:
    first, _ = suggest(client, world, world.patient_a)

    approved = _approve(client, world.clinician_a, first["suggestion_id"])

    assert approved.status_code == 200, approved.text
    (shown,) = mine(client, world.patient_a)
    assert (shown["framing"], shown["recommended_by_name"], shown["note"]) == (
        FRAMING,
        "Dr Clare",
        None,
    )


def test_a_rejected_suggestion_never_reaches_the_patient(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    first, second = suggest(client, world, world.patient_a)

    rejected = _reject(
        client, world.clinician_a, first["suggestion_id"], {"reason": "Has these already."}
    )

    assert rejected.status_code == 200, rejected.text
    decided = rejected.json()
    assert decided["status"] == "rejected"
    assert decided["decision_reason"] == "Has these already."
    assert decided["decided_by"] == world.clinician_a.actor.actor_id
    assert decided["decided_by_name"] == "Dr Clare"
    assert decided["recommendation_id"] is None
    assert mine(client, world.patient_a) == []
    assert first["suggestion_id"] not in _patient_facing_text(client, world.patient_a)
    assert count_rows(database, Recommendation) == 0
    assert [
        s["suggestion_id"] for s in suggestions_of(client, world.staff_a, status="rejected")
    ] == [first["suggestion_id"]]

    # Approving the other later shows only that one; the rejected one stays away, even when
    # someone tries to approve it after all (refused: see the decided-twice tests).
    assert _approve(client, world.staff_a, second["suggestion_id"]).status_code == 200
    assert [r["product"]["product_id"] for r in mine(client, world.patient_a)] == [
        second["product"]["product_id"]
    ]
    late = _approve(client, world.staff_a, first["suggestion_id"])
    assert late.status_code >= 400, late.text
    assert [r["product"]["product_id"] for r in mine(client, world.patient_a)] == [
        second["product"]["product_id"]
    ]


def test_rejecting_needs_a_reason_and_approving_a_well_formed_note(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    first, _second = suggest(client, world, world.patient_a)
    written = ai_rows(database)

    for body in (None, {}, {"reason": ""}, {"reason": "   "}):
        _problem(
            _reject(client, world.staff_a, first["suggestion_id"], body), 422, "validation_failed"
        )
    _problem(
        _approve(client, world.staff_a, first["suggestion_id"], {"note": ""}),
        422,
        "validation_failed",
    )
    assert _get(client, world.staff_a, first["suggestion_id"]).json()["status"] == "pending"
    assert ai_rows(database) == written
    assert count_rows(database, Recommendation) == 0

    unknown = str(uuid.uuid4())
    _problem(_approve(client, world.staff_a, unknown), 404, "not_found")
    _problem(_reject(client, world.staff_a, unknown, {"reason": "x"}), 404, "not_found")


def _decide_both(client: TestClient, world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two suggestions for patient A: the first approved, the second rejected."""
    first, second = suggest(client, world, world.patient_a)
    assert _approve(client, world.staff_a, first["suggestion_id"]).status_code == 200
    rejected = _reject(client, world.staff_a, second["suggestion_id"], {"reason": "No"})
    assert rejected.status_code == 200
    return first, second


def _second_decisions(
    client: TestClient, world: World, first: dict[str, Any], second: dict[str, Any]
) -> list[httpx2.Response]:
    return [
        _approve(client, world.staff_a, first["suggestion_id"], {"note": "again"}),
        _reject(client, world.clinician_a, first["suggestion_id"], {"reason": "changed my mind"}),
        _approve(client, world.clinician_a, second["suggestion_id"]),
        _reject(client, world.staff_a, second["suggestion_id"], {"reason": "again"}),
    ]


def test_a_second_decision_changes_nothing(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    first, second = _decide_both(client, world)
    written = (count_rows(database, Recommendation), ai_rows(database))
    decided = [_get(client, world.staff_a, s["suggestion_id"]).json() for s in (first, second)]

    for response in _second_decisions(client, world, first, second):
        assert response.status_code == 409, response.text
    assert (count_rows(database, Recommendation), ai_rows(database)) == written
    assert [_get(client, world.staff_a, s["suggestion_id"]).json() for s in (first, second)] == (
        decided
    )
    assert [r["product"]["product_id"] for r in mine(client, world.patient_a)] == [
        first["product"]["product_id"]
    ]


def test_approving_or_rejecting_a_decided_suggestion_is_409_suggestion_decided(
    client: TestClient, world: World, catalogue: PerioCatalogue
) -> None:
    first, second = _decide_both(client, world)

    for response in _second_decisions(client, world, first, second):
        _problem(response, 409, "suggestion_decided")


def test_an_expired_suggestion_lists_as_expired_cannot_be_approved_and_never_reaches_the_patient(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    first, second = suggest(client, world, world.patient_a)
    _expire(database, first["suggestion_id"])

    expired = [s["suggestion_id"] for s in suggestions_of(client, world.staff_a, status="expired")]
    pending = [s["suggestion_id"] for s in suggestions_of(client, world.staff_a, status="pending")]
    assert expired == [first["suggestion_id"]]
    assert pending == [second["suggestion_id"]]
    assert _get(client, world.staff_a, first["suggestion_id"]).json()["status"] == "expired"
    written = (count_rows(database, Recommendation), count_rows(database, AuditEntry))

    _problem(_approve(client, world.staff_a, first["suggestion_id"]), 409, "suggestion_expired")
    _problem(
        _reject(client, world.staff_a, first["suggestion_id"], {"reason": "late"}),
        409,
        "suggestion_expired",
    )
    assert (count_rows(database, Recommendation), count_rows(database, AuditEntry)) == written
    assert mine(client, world.patient_a) == []
    assert first["suggestion_id"] not in _patient_facing_text(client, world.patient_a)


# ---- isolation --------------------------------------------------------------------------------


def test_another_practice_cannot_see_or_decide_a_suggestion(
    client: TestClient,
    world: World,
    catalogue: PerioCatalogue,
    database: Database,
    staff_b: Person,
    clinician_b: Person,
    context: AppContext,
) -> None:
    first, _second = suggest(client, world, world.patient_a)
    written = ai_rows(database)

    for outsider in (world.admin_b, staff_b, clinician_b):
        assert suggestions_of(client, outsider) == []
        assert suggestions_of(client, outsider, status="pending") == []
        assert suggestions_of(client, outsider, patient_id=world.patient_a.actor.actor_id) == []
        unknown = str(uuid.uuid4())
        for theirs, nobodys in (
            (_get(client, outsider, first["suggestion_id"]), _get(client, outsider, unknown)),
            (
                _approve(client, outsider, first["suggestion_id"]),
                _approve(client, outsider, unknown),
            ),
            (
                _reject(client, outsider, first["suggestion_id"], {"reason": "x"}),
                _reject(client, outsider, unknown, {"reason": "x"}),
            ),
        ):
            _problem(theirs, 404, "not_found")
            assert theirs.json()["detail"] == nobodys.json()["detail"]  # existence not revealed
    assert ai_rows(database) == written
    assert _get(client, world.staff_a, first["suggestion_id"]).json()["status"] == "pending"

    # Practice B's summary has none of practice A's activity.
    now = context.clock.now()
    summary = client.get(
        "/v1/ai-summaries/recommendations",
        headers=world.admin_b.headers,
        params={
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        },
    )
    assert summary.status_code == 200, summary.text
    assert summary.json()["figures"]["suggestions_pending"] == 0


def test_another_patient_never_sees_or_uses_an_approved_recommendation(
    client: TestClient, world: World, catalogue: PerioCatalogue, clinician_b: Person
) -> None:
    first, _second = suggest(client, world, world.patient_a)
    approved = _approve(client, world.staff_a, first["suggestion_id"], {"note": NOTE}).json()
    recommendation_id = approved["recommendation_id"]

    assert [r["recommendation_id"] for r in mine(client, world.patient_a)] == [recommendation_id]
    for other in (world.patient_a2, world.patient_b):
        assert mine(client, other) == []
        assert recommendation_id not in _patient_facing_text(client, other)
        assert first["suggestion_id"] not in _patient_facing_text(client, other)
        _refused_to_patient(client, other, first["suggestion_id"])

    # Naming it on a checkout line is refused to anyone but its patient.
    refused = client.post(
        "/v1/checkouts",
        headers={**world.patient_a2.headers, **key()},
        json={
            "lines": [
                {
                    "product_id": first["product"]["product_id"],
                    "quantity": 1,
                    "recommendation_id": recommendation_id,
                }
            ],
            "delivery_address": ADDRESS,
        },
    )
    _problem(refused, 422, "recommendation_not_found")

    # Nor can another practice's clinician withdraw it (404, as for one that does not exist).
    withdrawn = client.post(
        f"/v1/recommendations/{recommendation_id}/withdraw", headers=clinician_b.headers, json={}
    )
    _problem(withdrawn, 404, "not_found")
    assert [r["recommendation_id"] for r in mine(client, world.patient_a)] == [recommendation_id]


def test_patients_and_finance_may_not_use_the_suggestion_routes(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    first, _second = suggest(client, world, world.patient_a)
    written = ai_rows(database)

    for patient in (world.patient_a, world.patient_a2, world.patient_b):
        _refused_to_patient(client, patient, first["suggestion_id"])
    for response in (
        client.get("/v1/ai-suggestions", headers=world.finance_a.headers),
        _approve(client, world.finance_a, first["suggestion_id"]),
        _reject(client, world.finance_a, first["suggestion_id"], {"reason": "x"}),
    ):
        _problem(response, 403, "forbidden")
    anonymous = client.get("/v1/ai-suggestions")
    assert anonymous.status_code == 401
    assert ai_rows(database) == written


# ---- audit (spec §8) ----------------------------------------------------------------------------


def test_suggestions_their_decisions_and_the_appointment_context_are_audited(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    first, second = suggest(client, world, world.patient_a, appointment_id="appt-audit")

    (received,) = audit_entries(database, "appointment_context", "appointment_context.received")
    assert (received.actor_id, received.actor_role) == ("appointment-manager", "service")
    assert received.practice_id == world.practice_a
    assert received.after is not None
    assert received.after["appointment_id"] == "appt-audit"
    assert received.after["suggestions"] == "suggested"

    created = audit_entries(database, "ai_suggestion", "ai_suggestion.created")
    assert {entry.stream_id for entry in created} == {
        first["suggestion_id"],
        second["suggestion_id"],
    }
    for entry in created:
        assert entry.actor_role == "ai"
        assert (entry.actor_id, entry.actor_name) == ("ai:local-tfidf", "local-tfidf 1")
        assert entry.practice_id == world.practice_a
        assert entry.after is not None
        assert entry.after["status"] == "pending"
        assert entry.after["rationale"].strip()
        assert (entry.after["engine"], entry.after["engine_version"]) == ("local-tfidf", "1")

    assert (
        _approve(client, world.staff_a, first["suggestion_id"], {"note": NOTE}).status_code == 200
    )
    assert (
        _reject(
            client, world.clinician_a, second["suggestion_id"], {"reason": "Not for now"}
        ).status_code
        == 200
    )

    (approved,) = audit_entries(database, "ai_suggestion", "ai_suggestion.approved")
    assert approved.stream_id == first["suggestion_id"]
    assert (approved.actor_id, approved.actor_role, approved.actor_name) == (
        world.staff_a.actor.actor_id,
        "staff",
        "Stan Staff",
    )
    assert approved.before == {"status": "pending"}
    assert approved.after is not None
    assert approved.after["status"] == "approved"
    (rejected,) = audit_entries(database, "ai_suggestion", "ai_suggestion.rejected")
    assert rejected.stream_id == second["suggestion_id"]
    assert (rejected.actor_id, rejected.actor_role, rejected.actor_name) == (
        world.clinician_a.actor.actor_id,
        "clinician",
        "Dr Clare",
    )
    # whether a reason was given, never its text (the log is never rewritten)
    assert rejected.after == {"status": "rejected", "has_reason": True}

    # The recommendation the approval made is audited under the approver too, naming the
    # suggestion it came from.
    (made,) = audit_entries(database, "recommendation", "recommendation.created")
    assert (made.actor_id, made.actor_role) == (world.staff_a.actor.actor_id, "staff")
    assert made.after is not None
    assert made.after["ai_suggestion_id"] == first["suggestion_id"]
    assert approved.after["recommendation_id"] == made.stream_id


# ---- AI summaries for staff -------------------------------------------------------------------


def _summary(client: TestClient, who: Person, start: Any, end: Any) -> httpx2.Response:
    return client.get(
        "/v1/ai-summaries/recommendations",
        headers=who.headers,
        params={"from": start.isoformat(), "to": end.isoformat()},
    )


def test_the_summary_of_two_recommendations_one_bought_states_a_50_percent_conversion(
    client: TestClient,
    world: World,
    catalogue: PerioCatalogue,
    context: AppContext,
    database: Database,
) -> None:
    first, second = suggest(client, world, world.patient_a)
    made = [
        _approve(client, world.staff_a, s["suggestion_id"]).json()["recommendation_id"]
        for s in (first, second)
    ]
    created = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, **key()},
        json={
            "lines": [
                {
                    "product_id": first["product"]["product_id"],
                    "quantity": 1,
                    "recommendation_id": made[0],
                }
            ],
            "delivery_address": ADDRESS,
        },
    )
    assert created.status_code == 201, created.text
    assert pay(created.json()).status_code == 200
    completed = client.post(
        f"/v1/checkouts/{created.json()['id']}/complete", headers=world.patient_a.headers
    )
    assert completed.status_code == 200, completed.text
    now = context.clock.now()
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)

    response = _summary(client, world.admin_a, start, end)

    assert response.status_code == 200, response.text
    summary = response.json()
    figures = summary["figures"]
    assert figures["recommendations_made"] == 2
    assert figures["recommendations_purchased"] == 1
    assert figures["conversion_rate"] == 0.5
    assert (figures["orders"], figures["orders_from_recommendations"]) == (1, 1)
    assert figures["revenue_minor"] == 1299
    assert (figures["suggestions_approved"], figures["suggestions_pending"]) == (2, 0)
    assert "50.0%" in summary["summary"]
    assert summary["practice_id"] == str(world.practice_a)
    assert summary["written_by"] == "plain-summary 1"
    assert summary["notice"] == STAFF_ONLY_NOTICE
    # The same figures as the conversion dashboard's.
    dashboard = client.get(
        "/v1/recommendations/conversion",
        headers=world.admin_a.headers,
        params={"from": start.isoformat(), "to": end.isoformat()},
    ).json()
    assert (dashboard["recommendations"], dashboard["converted"], dashboard["rate"]) == (2, 1, 0.5)

    (written,) = audit_entries(database, "ai_summary", "ai_summary.written")
    assert written.actor_role == "ai"
    assert (written.actor_id, written.actor_name) == ("ai:plain-summary", "plain-summary 1")
    assert written.practice_id == world.practice_a
    assert written.after is not None
    assert written.after["requested_by"] == world.admin_a.actor.actor_id
    assert written.after["summary"] == summary["summary"]

    # Every staff role may read it; a patient never; a period must end after it starts.
    for staff in (world.clinician_a, world.staff_a, world.finance_a):
        assert _summary(client, staff, start, end).status_code == 200
    for patient in (world.patient_a, world.patient_b):
        _problem(_summary(client, patient, start, end), 403, "forbidden")
    _problem(_summary(client, world.admin_a, now, now), 422, "invalid_date_range")
    _problem(_summary(client, world.admin_a, end, start), 422, "invalid_date_range")


# ---- engines that fail or misbehave ------------------------------------------------------------


def test_a_failing_engine_leaves_the_appointment_recorded_with_no_suggestions(
    app_with: AppWith, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    engine = FailingEngine()
    client = app_with(engine)

    response = send_event(
        client, appointment_event(world, world.patient_a, appointment_id="appt-engine-down")
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "recorded", "suggestions": 0}
    assert engine.calls == 1
    assert _context_row(database, "appt-engine-down").suggestions_status == "engine_failed"
    assert ai_rows(database)[:2] == (1, 0)
    assert suggestions_of(client, world.staff_a) == []
    (received,) = audit_entries(database, "appointment_context", "appointment_context.received")
    assert received.after is not None
    assert received.after["suggestions"] == "engine_failed"
    assert audit_entries(database, "ai_suggestion", "ai_suggestion.created") == []


def test_an_engines_answer_outside_the_candidates_repeated_or_out_of_range_is_dropped(
    app_with: AppWith, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    engine = ScriptedEngine(
        answer=[
            EngineSuggestion(catalogue.hidden, 990, "Hidden by the practice."),
            EngineSuggestion(catalogue.only_b, 980, "Practice B's product."),
            EngineSuggestion(catalogue.never_offered, 970, "Not offered."),
            EngineSuggestion(catalogue.unavailable, 960, "Unavailable."),
            EngineSuggestion(catalogue.deprecated, 955, "Deprecated."),
            EngineSuggestion(uuid.uuid4(), 950, "No such product."),
            EngineSuggestion(catalogue.brushes, 1001, "Above the scale."),
            EngineSuggestion(catalogue.whitening, -1, "Below the scale."),
            EngineSuggestion(catalogue.mouthwash, 700, "  "),
            EngineSuggestion(catalogue.brushes, 600, "Cleans between the teeth."),
            EngineSuggestion(catalogue.brushes, 500, "The same product again."),
            EngineSuggestion(catalogue.mouthwash, 400, "For gum health."),
        ]
    )
    client = app_with(engine)

    response = send_event(client, appointment_event(world, world.patient_a))

    assert response.json() == {"status": "recorded", "suggestions": 2}
    (facts, candidates, limit) = engine.given[0]
    assert {str(c.product_id) for c in candidates} == catalogue.purchasable
    assert limit == 3
    assert facts == AppointmentFacts(treatment_codes=("PERIO-SRP",), reason=PERIO_REASON)
    kept = {
        s["product"]["product_id"]: (s["score"], s["rationale"], s["engine"], s["engine_version"])
        for s in suggestions_of(client, world.staff_a)
    }
    assert kept == {
        str(catalogue.brushes): (600, "Cleans between the teeth.", "scripted-engine", "7"),
        str(catalogue.mouthwash): (400, "For gum health.", "scripted-engine", "7"),
    }
    assert ai_rows(database)[1] == 2


def test_an_engine_with_only_unusable_answers_records_none(
    app_with: AppWith, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    engine = ScriptedEngine(
        answer=[
            EngineSuggestion(catalogue.only_b, 900, "Practice B's product."),
            EngineSuggestion(catalogue.brushes, 5000, "Above the scale."),
        ]
    )
    client = app_with(engine)

    response = send_event(
        client, appointment_event(world, world.patient_a, appointment_id="appt-unusable")
    )

    assert response.json() == {"status": "recorded", "suggestions": 0}
    assert _context_row(database, "appt-unusable").suggestions_status == "none"
    assert ai_rows(database)[1] == 0


def test_the_engine_version_is_stored_as_the_engine_gave_it(
    app_with: AppWith, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    engine = ScriptedEngine(
        answer=[EngineSuggestion(catalogue.brushes, 600, "Cleans between the teeth.")],
        version="2.1 beta",
    )
    client = app_with(engine)

    assert send_event(client, appointment_event(world, world.patient_a)).json()["suggestions"] == 1

    (item,) = suggestions_of(client, world.staff_a)
    assert (item["engine"], item["engine_version"]) == ("scripted-engine", "2.1 beta")
    (created,) = audit_entries(database, "ai_suggestion", "ai_suggestion.created")
    assert created.after is not None
    assert created.after["engine_version"] == "2.1 beta"


# ---- the platform AI service, over HTTP ---------------------------------------------------------


@pytest.fixture
def ai_simulator() -> Iterator[BackgroundServer]:
    server = serve_in_background(create_ai_simulator(AiSimulatorConfig(api_key=AI_API_KEY, seed=1)))
    yield server
    server.stop()


def test_the_platform_ai_service_suggests_over_http_and_is_sent_no_identity(
    app_with: AppWith,
    ai_simulator: BackgroundServer,
    world: World,
    catalogue: PerioCatalogue,
    database: Database,
) -> None:
    engine = HttpSuggestionEngine(ai_simulator.url, api_key=AI_API_KEY, timeout_seconds=2.0)
    client = app_with(engine)
    event = appointment_event(world, world.patient_a, appointment_id="appt-platform")

    response = send_event(client, event)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "recorded"
    items = suggestions_of(client, world.staff_a, status="pending")
    assert len(items) == response.json()["suggestions"] >= 1
    assert {s["product"]["product_id"] for s in items} <= catalogue.purchasable
    assert str(catalogue.brushes) in {s["product"]["product_id"] for s in items}
    for item in items:
        assert (item["engine"], item["engine_version"]) == ("platform-ai", "v1")
        assert item["rationale"].strip()
    assert _context_row(database, "appt-platform").suggestions_status == "suggested"

    recorded = httpx.get(f"{ai_simulator.url}/_simulator/requests", timeout=5).json()
    assert recorded["received"] == 1
    (request,) = recorded["requests"]
    sent = json.dumps(request)
    for identity in (
        world.patient_a.actor.actor_id,
        str(world.practice_a),
        world.clinician_a.actor.actor_id,
        "appt-platform",
        "Dr Clare",
    ):
        assert identity not in sent
    for name in ("patient_id", "practice_id", "clinician_id", "appointment_id"):
        assert name not in sent
    body = request["body"]
    assert set(body) == {"appointment", "candidates", "limit"}
    assert body["appointment"] == {"treatment_codes": ["PERIO-SRP"], "reason": PERIO_REASON}
    assert {c["product_id"] for c in body["candidates"]} == catalogue.purchasable

    # The approval gate is the same whichever engine suggested.
    assert mine(client, world.patient_a) == []
    assert _approve(client, world.staff_a, items[0]["suggestion_id"]).status_code == 200
    assert len(mine(client, world.patient_a)) == 1


def test_a_platform_ai_service_that_is_down_leaves_the_appointment_recorded(
    app_with: AppWith,
    ai_simulator: BackgroundServer,
    world: World,
    catalogue: PerioCatalogue,
    database: Database,
) -> None:
    httpx.post(
        f"{ai_simulator.url}/_simulator/config", json={"failure_rate": 1.0}
    ).raise_for_status()
    client = app_with(
        HttpSuggestionEngine(ai_simulator.url, api_key=AI_API_KEY, timeout_seconds=1.0)
    )

    response = send_event(
        client, appointment_event(world, world.patient_a, appointment_id="appt-platform-down")
    )

    assert response.json() == {"status": "recorded", "suggestions": 0}
    assert _context_row(database, "appt-platform-down").suggestions_status == "engine_failed"
    assert ai_rows(database)[1] == 0
