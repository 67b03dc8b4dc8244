"""Spec §7 "AI MAY NOT", each clause as negative tests (spec §15.6; ARCHITECTURE.md invariant 10,
"AI never acts").

The AI acts as its own actor, role "ai", bound to one practice, with no permission but "create a
pending suggestion" and "write a summary". Each test tries, as that actor, what a clause forbids:
over HTTP with a token of role "ai" for practice A (the way an AI service would call the API), and
where a service can be called directly, with `Actor.ai(...)` on the services in the application
context. Each attempt is refused (403, problem+json; `Forbidden` from a service) and changes
nothing: every row of every table, the audit log included, is the same afterwards.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from product_shop.access.actor import Actor
from product_shop.audit.log import AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.checkout.schemas import CheckoutIn
from product_shop.context import AppContext
from product_shop.core.errors import Forbidden
from product_shop.db.engine import Database
from product_shop.db.models import metadata
from product_shop.fulfilment.schemas import FulfilmentUpdateIn
from product_shop.integrations.appointments import AppointmentEnded
from product_shop.orders.queries import OrderFilters
from product_shop.recommendations.schemas import RecommendationIn
from product_shop.recommendations.suggestion_schemas import (
    STAFF_ONLY_NOTICE,
    ApproveIn,
    RejectIn,
)
from product_shop.recommendations.tables import AiSuggestion, AppointmentContext, Recommendation
from product_shop.refunds.schemas import RefundIn
from tests.conftest import Person, TokenFactory, World
from tests.integration.ai_support import (
    PERIO_REASON,
    PerioCatalogue,
    audit_entries,
    mine,
    perio_catalogue,
    suggest,
    suggestions_of,
)
from tests.integration.checkout_support import ADDRESS, Shop, key, paid_checkout
from tests.integration.conftest import count_rows
from tests.integration.fulfilment_support import line_named, place_order, read_order

# What an AI output must never say on the practice's behalf (as tests/unit/test_ai_summary.py).
COMMITMENT = re.compile(
    r"\b(will|guarantee\w*|promis\w*|should|must|recommend that|we commit\w*|ensure\w*"
    r"|refund\w*|discount\w*|free of charge|cure\w*)\b",
    re.IGNORECASE,
)

Snapshot = dict[str, list[tuple[Any, ...]]]


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def ai(person: Callable[..., Person], world: World) -> Person:
    """An AI service's token: role "ai", practice A, a name."""
    return person("ai", world.practice_a, "Practice AI")


@pytest.fixture
def ai_actor(world: World) -> Actor:
    """The AI as the services know it (the suggestion service acts as exactly this)."""
    return Actor.ai("local-tfidf", "1", world.practice_a)


@pytest.fixture
def catalogue(
    client: TestClient,
    world: World,
    make_product: Callable[..., uuid.UUID],
    offer: Callable[..., None],
) -> PerioCatalogue:
    return perio_catalogue(client, world, make_product, offer)


@pytest.fixture
def pending(client: TestClient, world: World, catalogue: PerioCatalogue) -> list[dict[str, Any]]:
    """Two pending suggestions for patient A."""
    made = suggest(client, world, world.patient_a)
    assert len(made) == 2
    return made


@pytest.fixture
def order(client: TestClient, world: World, shop: Shop) -> dict[str, Any]:
    """Patient A's paid order (staff view): an in-clinic kit and a drop-ship toothbrush."""
    placed = place_order(client, world.patient_a, [(shop.kit, 1), (shop.toothbrush, 1)])
    return read_order(client, world.admin_a, placed["order_id"])


# ---- steps ------------------------------------------------------------------------------------


def snapshot(database: Database) -> Snapshot:
    """Every row of every table, in primary key order."""
    with database.engine.connect() as connection:
        return {
            table.name: [
                tuple(row)
                for row in connection.execute(
                    select(table).order_by(*table.primary_key.columns)
                ).all()
            ]
            for table in metadata.sorted_tables
        }


def refused(response: httpx2.Response) -> None:
    assert response.status_code == 403, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "forbidden", problem
    assert "'ai'" in problem["detail"], problem  # refused for its role, not for anything else


def _disclosed(response: httpx2.Response) -> str:
    """What a refusal tells the caller, beyond the path it asked for."""
    return str({k: v for k, v in response.json().items() if k != "instance"})


def _post(client: TestClient, who: Person, url: str, body: Any, **headers: str) -> httpx2.Response:
    return client.post(url, headers={**who.headers, **headers}, json=body)


# ---- AI MAY NOT surface a product recommendation directly to a patient without a named
# ---- staff member or clinician approving the recommendation first -----------------------------


def test_ai_may_not_surface_a_recommendation_without_approval(
    client: TestClient,
    world: World,
    database: Database,
    ai: Person,
    pending: list[dict[str, Any]],
    catalogue: PerioCatalogue,
) -> None:
    first, second = pending
    patient = world.patient_a.actor.actor_id
    before = snapshot(database)

    attempts = [
        # approve its own suggestion (with and without a note), or reject one
        _post(client, ai, f"/v1/ai-suggestions/{first['suggestion_id']}/approve", {"note": "Buy"}),
        client.post(f"/v1/ai-suggestions/{second['suggestion_id']}/approve", headers=ai.headers),
        _post(client, ai, f"/v1/ai-suggestions/{first['suggestion_id']}/reject", {"reason": "x"}),
        # recommend to the patient directly, as a clinician would
        _post(
            client,
            ai,
            f"/v1/patients/{patient}/recommendations",
            {"product_ids": [str(catalogue.brushes)], "note": "From the AI"},
            **key(),
        ),
        _post(
            client,
            ai,
            f"/v1/patients/{patient}/recommendations",
            {"product_ids": [str(catalogue.brushes)], "appointment_id": "appt-x"},
            **{"Idempotency-Key": "ai-recommends"},
        ),
    ]

    for response in attempts:
        refused(response)
    assert snapshot(database) == before
    assert mine(client, world.patient_a) == []
    assert {s["status"] for s in suggestions_of(client, world.staff_a)} == {"pending"}
    assert count_rows(database, Recommendation) == 0


def test_ai_may_not_surface_a_recommendation_without_approval_at_the_service_layer(
    context: AppContext,
    world: World,
    database: Database,
    ai_actor: Actor,
    pending: list[dict[str, Any]],
    catalogue: PerioCatalogue,
) -> None:
    first, second = pending
    patient = uuid.UUID(world.patient_a.actor.actor_id)
    before = snapshot(database)

    attempts: list[Callable[[Any], object]] = [
        lambda s: context.suggestions.approve(
            s, ai_actor, uuid.UUID(first["suggestion_id"]), ApproveIn(note="Buy this")
        ),
        lambda s: context.suggestions.approve(
            s, ai_actor, uuid.UUID(second["suggestion_id"]), ApproveIn()
        ),
        lambda s: context.suggestions.reject(
            s, ai_actor, uuid.UUID(first["suggestion_id"]), RejectIn(reason="x")
        ),
        lambda s: context.recommendations.recommend(
            s, ai_actor, patient, RecommendationIn(product_ids=[catalogue.brushes])
        ),
    ]
    for attempt in attempts:
        with pytest.raises(Forbidden), context.database.unit_of_work() as session:
            attempt(session)

    assert snapshot(database) == before


def test_ai_may_not_surface_a_recommendation_through_any_recommendation_service_method(
    context: AppContext,
    world: World,
    database: Database,
    client: TestClient,
    ai_actor: Actor,
    catalogue: PerioCatalogue,
) -> None:
    before = snapshot(database)
    patient = uuid.UUID(world.patient_a.actor.actor_id)

    def surface(session: Any) -> object:
        product = context.recommendations.recommendable(
            session, world.practice_a, [catalogue.brushes]
        )[catalogue.brushes]
        return context.recommendations.add(
            session,
            ai_actor,
            patient,
            product,
            note="Straight from the AI",
            appointment_id=None,
            at=context.clock.now(),
        )

    with pytest.raises(Forbidden), context.database.unit_of_work() as session:
        surface(session)

    assert snapshot(database) == before
    assert mine(client, world.patient_a) == []


# ---- AI MAY NOT initiate, approve, or reverse any payment or refund action ----------------------


def test_ai_may_not_initiate_or_approve_a_payment(
    client: TestClient,
    context: AppContext,
    world: World,
    database: Database,
    ai: Person,
    ai_actor: Actor,
    shop: Shop,
) -> None:
    # The patient has paid on the hosted page but the app has not completed the checkout yet:
    # completing it would make the order.
    paid = paid_checkout(client, world.patient_a, [(shop.toothbrush, 1)])
    before = snapshot(database)
    lines = [{"product_id": str(shop.toothbrush), "quantity": 1}]

    for response in (
        _post(client, ai, "/v1/checkouts", {"lines": lines, "delivery_address": ADDRESS}, **key()),
        _post(
            client,
            ai,
            "/v1/checkouts",
            {
                "lines": lines,
                "delivery_address": ADDRESS,
                "payment_gateway": "dna_payments",
            },
            **{"Idempotency-Key": "ai-checkout"},
        ),
        client.post(f"/v1/checkouts/{paid['id']}/complete", headers=ai.headers),
        client.post(f"/v1/checkouts/{paid['id']}/retry", headers=ai.headers),
        client.get(f"/v1/checkouts/{paid['id']}", headers=ai.headers),
    ):
        refused(response)
    with pytest.raises(Forbidden), context.database.unit_of_work() as session:
        context.checkout.price(
            session,
            ai_actor,
            CheckoutIn.model_validate({"lines": lines, "delivery_address": ADDRESS}),
        )

    assert snapshot(database) == before
    assert count_rows(database, metadata.tables["orders"]) == 0


def test_ai_may_not_initiate_a_refund(
    client: TestClient,
    context: AppContext,
    world: World,
    database: Database,
    ai: Person,
    ai_actor: Actor,
    order: dict[str, Any],
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    order_id = order["order_id"]
    before = snapshot(database)
    # Even with a fresh MFA step-up on its token, which a named staff member's refund needs.
    stepped_up = with_mfa(ai)

    for headers in (ai.headers, stepped_up):
        for response in (
            client.post(
                f"/v1/orders/{order_id}/refunds",
                headers={**headers, **key()},
                json={"reason_code": "customer_request"},
            ),
            client.post(
                f"/v1/orders/{order_id}/refunds",
                headers={**headers, **key()},
                json={"reason_code": "customer_request", "amount_minor": 100},
            ),
            client.post(
                f"/v1/payment-exceptions/{uuid.uuid4()}/refund",
                headers={**headers, **key()},
                json={"reason_code": "customer_request"},
            ),
            client.post(
                f"/v1/orders/{order_id}/cancellation-requests",
                headers={**headers, **key()},
                json={"reason": "The AI thinks so"},
            ),
            client.get("/v1/refund-reason-codes", headers=headers),
            client.get("/v1/refunds", headers=headers),
            client.get(f"/v1/orders/{order_id}/refunds", headers=headers),
            client.get("/v1/payment-exceptions", headers=headers),
        ):
            refused(response)

    mfa_ai = dataclasses.replace(ai_actor, mfa=True, auth_time=context.clock.now())
    for actor in (ai_actor, mfa_ai):
        with pytest.raises(Forbidden):
            context.refunds.authorise(actor)
        with pytest.raises(Forbidden), context.database.unit_of_work() as session:
            context.refunds.reserve_order_refund(
                session,
                actor,
                uuid.UUID(order_id),
                RefundIn(reason_code="customer_request"),
                {"customer_request"},
            )

    assert snapshot(database) == before
    assert read_order(client, world.admin_a, order_id)["refunds"] == order["refunds"]


# ---- AI MAY NOT modify Order state or fulfilment records ----------------------------------------


def test_ai_may_not_modify_order_state_or_fulfilment(
    client: TestClient,
    context: AppContext,
    world: World,
    database: Database,
    ai: Person,
    ai_actor: Actor,
    order: dict[str, Any],
) -> None:
    order_id = order["order_id"]
    kit = line_named(order, "Home Whitening Kit")
    brush = line_named(order, "Oral-B Pro 3")
    before = snapshot(database)
    moves: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (kit, {"status": "ready_for_collection"}),
        (kit, {"status": "collected", "note": "Handed over"}),
        (kit, {"status": "exception", "reason": "lost"}),
        (brush, {"status": "dispatched", "carrier": "DPD", "tracking_number": "AI123456"}),
        (brush, {"status": "delivered"}),
        (brush, {"status": "exception", "resolution": "refund"}),
    ]

    for line, body in moves:
        refused(
            _post(
                client,
                ai,
                f"/v1/orders/{order_id}/lines/{line['line_item_id']}/fulfilment",
                body,
            )
        )
    for response in (
        client.put(
            f"/v1/orders/{order_id}/pms-invoice-ref",
            headers={**ai.headers, "If-Match": f'"{order["version"]}"'},
            json={"pms_invoice_ref": "INV-AI-1"},
        ),
        client.put(
            f"/v1/orders/{order_id}/pms-invoice-ref",
            headers=ai.headers,
            json={"pms_invoice_ref": None},
        ),
        _post(client, ai, "/v1/vouchers/redemptions", {"code": "ABCD-EFGH-JKLM"}),
        client.get("/v1/fulfilment/collections", headers=ai.headers),
        client.get("/v1/fulfilment/exceptions", headers=ai.headers),
    ):
        refused(response)

    service_attempts: list[Callable[[Any], object]] = [
        lambda s: context.fulfilment.update_line(
            s,
            ai_actor,
            uuid.UUID(order_id),
            uuid.UUID(kit["line_item_id"]),
            FulfilmentUpdateIn.model_validate({"status": "ready_for_collection"}),
        ),
        lambda s: context.fulfilment.update_line(
            s,
            ai_actor,
            uuid.UUID(order_id),
            uuid.UUID(brush["line_item_id"]),
            FulfilmentUpdateIn.model_validate(
                {"status": "dispatched", "carrier": "DPD", "tracking_number": "AI123456"}
            ),
        ),
        lambda s: context.orders.set_pms_invoice_ref(s, ai_actor, uuid.UUID(order_id), "INV-AI"),
    ]
    for attempt in service_attempts:
        with pytest.raises(Forbidden), context.database.unit_of_work() as session:
            attempt(session)

    assert snapshot(database) == before
    after = read_order(client, world.admin_a, order_id)
    assert (after["status"], after["version"], after["pms_invoice_ref"]) == (
        order["status"],
        order["version"],
        order["pms_invoice_ref"],
    )
    assert after["lines"] == order["lines"]


# ---- AI MAY NOT bypass access control, audit logging, or any governance check --------------------


def test_ai_may_not_bypass_access_control_to_read_a_patients_orders(
    client: TestClient,
    context: AppContext,
    world: World,
    database: Database,
    ai: Person,
    ai_actor: Actor,
    order: dict[str, Any],
) -> None:
    order_id = order["order_id"]
    patient = world.patient_a.actor.actor_id
    before = snapshot(database)

    for response in (
        client.get("/v1/orders", headers=ai.headers),
        client.get("/v1/orders", headers=ai.headers, params={"patient_id": patient}),
        client.get(f"/v1/orders/{order_id}", headers=ai.headers),
        client.get(f"/v1/orders/{uuid.uuid4()}", headers=ai.headers),
        client.get("/v1/me/orders", headers=ai.headers),
    ):
        refused(response)
        assert order_id not in _disclosed(response)

    service_attempts: list[Callable[[Any], object]] = [
        lambda s: context.orders.read_order(s, ai_actor, uuid.UUID(order_id)),
        lambda s: context.orders.list_orders(
            s,
            ai_actor,
            OrderFilters(patient_id=uuid.UUID(patient)),
            limit=50,
            cursor=None,
            own=False,
        ),
        lambda s: context.orders.list_orders(
            s, ai_actor, OrderFilters(), limit=50, cursor=None, own=True
        ),
    ]
    for attempt in service_attempts:
        with pytest.raises(Forbidden), context.database.unit_of_work() as session:
            attempt(session)

    # No read was recorded: nothing was read.
    assert snapshot(database) == before


def test_ai_may_not_bypass_access_control_to_read_a_patients_recommendations(
    client: TestClient,
    context: AppContext,
    world: World,
    database: Database,
    ai: Person,
    ai_actor: Actor,
    pending: list[dict[str, Any]],
) -> None:
    first, _second = pending
    approved = client.post(
        f"/v1/ai-suggestions/{first['suggestion_id']}/approve",
        headers=world.staff_a.headers,
        json={"note": "Twice a day."},
    )
    assert approved.status_code == 200, approved.text
    recommendation_id = approved.json()["recommendation_id"]
    patient = world.patient_a.actor.actor_id
    before = snapshot(database)

    for response in (
        client.get(f"/v1/patients/{patient}/recommendations", headers=ai.headers),
        client.get("/v1/recommendations", headers=ai.headers),
        client.get("/v1/me/recommendations", headers=ai.headers),
        client.post(
            f"/v1/recommendations/{recommendation_id}/withdraw", headers=ai.headers, json={}
        ),
        client.get("/v1/recommendations/conversion", headers=ai.headers),
    ):
        refused(response)
        assert recommendation_id not in _disclosed(response)

    service_attempts: list[Callable[[Any], object]] = [
        lambda s: context.recommendations.list_for_practice(s, ai_actor),
        lambda s: context.recommendations.for_patient(s, ai_actor),
    ]
    for attempt in service_attempts:
        with pytest.raises(Forbidden), context.database.unit_of_work() as session:
            attempt(session)

    assert snapshot(database) == before
    assert [r["recommendation_id"] for r in mine(client, world.patient_a)] == [recommendation_id]


def test_ai_may_not_bypass_access_control_to_staff_views_or_the_audit_log(
    client: TestClient,
    context: AppContext,
    world: World,
    database: Database,
    ai: Person,
    ai_actor: Actor,
    pending: list[dict[str, Any]],
    make_token: TokenFactory,
) -> None:
    first, _second = pending
    now = context.clock.now()
    period = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    before = snapshot(database)

    for response in (
        # The audit log leaves through Audit & Compliance only.
        client.get(
            "/v1/audit/export",
            headers=ai.headers,
            params={"since": (now - timedelta(days=1)).isoformat()},
        ),
        # Staff review of suggestions and summaries is staff's, not the AI's.
        client.get("/v1/ai-suggestions", headers=ai.headers),
        client.get(f"/v1/ai-suggestions/{first['suggestion_id']}", headers=ai.headers),
        client.get("/v1/ai-summaries/recommendations", headers=ai.headers, params=period),
        # Not a patient, so no catalogue of its own; not an operator or a catalogue admin.
        client.get("/v1/catalogue", headers=ai.headers),
        client.patch(
            f"/v1/products/{first['product']['product_id']}",
            headers=ai.headers,
            json={"availability_status": "unavailable"},
        ),
        client.put(
            f"/v1/catalogue/{first['product']['product_id']}/practice-settings",
            headers=ai.headers,
            json={"retail_price_minor": 1, "visible": True},
        ),
    ):
        refused(response)
    with pytest.raises(Forbidden), context.database.reading() as session:
        context.suggestions.list_for_practice(session, ai_actor)
    with pytest.raises(Forbidden), context.database.reading() as session:
        context.suggestions.get(session, ai_actor, uuid.UUID(first["suggestion_id"]))
    with pytest.raises(Forbidden), context.database.unit_of_work() as session:
        context.summaries.recommendations_summary(
            session, ai_actor, now - timedelta(hours=1), now + timedelta(hours=1)
        )

    # An AI token that names no practice is no token at all.
    unbound = make_token(role="ai", name="Unbound AI")
    response = client.get("/v1/ai-suggestions", headers={"Authorization": f"Bearer {unbound}"})
    assert response.status_code == 401, response.text

    assert snapshot(database) == before


def _ended(world: World, appointment_id: str) -> AppointmentEnded:
    return AppointmentEnded(
        appointment_id=appointment_id,
        practice_id=world.practice_a,
        patient_id=uuid.UUID(world.patient_a.actor.actor_id),
        clinician_id=world.clinician_a.actor.actor_id,
        clinician_name="Dr Clare",
        treatment_codes=("PERIO-SRP",),
        reason=PERIO_REASON,
        ended_at=datetime.now(UTC),
    )


def test_ai_may_not_bypass_audit_every_suggestion_it_creates_is_audited_under_role_ai(
    context: AppContext, world: World, database: Database, catalogue: PerioCatalogue
) -> None:
    suggestions = context.suggestion_intake
    event = _ended(world, "appt-service-audit")
    with context.database.reading() as session:
        candidates = suggestions.candidates(session, world.practice_a)
    outcome = suggestions.ask(event, candidates)
    assert outcome.suggestions  # something to audit

    made = context.database.run(
        lambda session: suggestions.record_appointment(session, "msg-service-1", event, outcome)
    )

    assert made == len(outcome.suggestions)
    created = audit_entries(database, "ai_suggestion", "ai_suggestion.created")
    with context.database.reading() as session:
        rows = list(session.scalars(select(AiSuggestion)))
    assert len(rows) == made
    assert {entry.stream_id for entry in created} == {str(row.suggestion_id) for row in rows}
    for entry in created:
        assert entry.actor_role == "ai"
        assert entry.actor_id == "ai:local-tfidf"
        assert entry.practice_id == world.practice_a
        assert entry.stream_seq == 1
    # The same service, asked again about that appointment, writes nothing (and audits nothing).
    again = context.database.run(
        lambda session: suggestions.record_appointment(session, "msg-service-2", event, outcome)
    )
    assert again is None
    assert len(audit_entries(database, "ai_suggestion", "ai_suggestion.created")) == made


def test_ai_may_not_bypass_audit_a_suggestion_that_cannot_be_audited_is_not_stored(
    context: AppContext,
    world: World,
    database: Database,
    catalogue: PerioCatalogue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suggestions = context.suggestion_intake
    event = _ended(world, "appt-audit-down")
    with context.database.reading() as session:
        candidates = suggestions.candidates(session, world.practice_a)
    outcome = suggestions.ask(event, candidates)
    assert outcome.suggestions
    before = snapshot(database)
    record = AuditLog.record

    def audit_down(self: AuditLog, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("action") == "ai_suggestion.created":
            raise RuntimeError("the audit log cannot be written")
        return record(self, *args, **kwargs)

    monkeypatch.setattr(AuditLog, "record", audit_down)

    with pytest.raises(RuntimeError, match="audit log"):
        context.database.run(
            lambda session: suggestions.record_appointment(
                session, "msg-audit-down", event, outcome
            )
        )

    assert snapshot(database) == before
    assert count_rows(database, AiSuggestion) == 0
    assert count_rows(database, AppointmentContext) == 0


# ---- AI MAY NOT make commitments on behalf of the practice --------------------------------------


def test_ai_may_not_make_commitments_on_behalf_of_the_practice(
    client: TestClient,
    context: AppContext,
    world: World,
    database: Database,
    pending: list[dict[str, Any]],
) -> None:
    first, second = pending
    outputs: list[dict[str, Any]] = [*suggestions_of(client, world.staff_a)]
    outputs.append(
        client.get(
            f"/v1/ai-suggestions/{first['suggestion_id']}", headers=world.staff_a.headers
        ).json()
    )
    approved = client.post(
        f"/v1/ai-suggestions/{first['suggestion_id']}/approve", headers=world.staff_a.headers
    )
    rejected = client.post(
        f"/v1/ai-suggestions/{second['suggestion_id']}/reject",
        headers=world.clinician_a.headers,
        json={"reason": "Not now"},
    )
    outputs += [approved.json(), rejected.json()]
    now = context.clock.now()
    summary = client.get(
        "/v1/ai-summaries/recommendations",
        headers=world.admin_a.headers,
        params={
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        },
    )
    assert summary.status_code == 200, summary.text
    outputs.append(summary.json())

    # Every AI output carries the staff-only notice: for staff review, no commitment.
    for output in outputs:
        assert output["notice"] == STAFF_ONLY_NOTICE, output
    # What the AI wrote states facts: no promise, advice or offer in its words.
    text = summary.json()["summary"]
    assert text.strip()
    assert not COMMITMENT.search(text), text
    for output in outputs[:-1]:
        assert not COMMITMENT.search(output["rationale"]), output["rationale"]
    (written,) = audit_entries(database, "ai_summary", "ai_summary.written")
    assert written.actor_role == "ai"
    assert written.after is not None
    assert not COMMITMENT.search(written.after["summary"])

    # The patient sees the approver's recommendation, none of the AI's words.
    (shown,) = mine(client, world.patient_a)
    for output in outputs[:-1]:
        assert output["rationale"] not in str(shown)
    assert shown["recommended_by_name"] == "Stan Staff"
    with context.database.reading() as session:
        ai_authored = session.scalar(
            select(AuditEntry.entry_id).where(
                AuditEntry.actor_role == "ai",
                AuditEntry.stream_type.not_in(("ai_suggestion", "ai_summary")),
            )
        )
    assert ai_authored is None  # the AI wrote nothing but suggestions and summaries
