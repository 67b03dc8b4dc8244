"""The portal's Recommendations pages (spec §7, §10.2): the practice's pending AI suggestions,
approved with the approver's note or rejected with a reason by a named clinician through the
service the API uses, and the recommendations made to one patient. Each test checks what the
database holds (notes and reasons read through the ORM, which decrypts them)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.config import Settings
from product_shop.db.engine import Database
from product_shop.recommendations.tables import AiSuggestion, Recommendation
from product_shop.simulators.server import BackgroundServer
from product_shop.web.portal import recommendations as portal_recommendations
from tests.conftest import Person, World
from tests.integration.ai_support import PerioCatalogue, perio_catalogue, suggest
from tests.integration.portal_support import (
    access_simulator,  # noqa: F401 (a fixture)
    csrf_of,
    portal_settings,
    sign_in,
)

PAGE = "/portal/recommendations"
NOTE = "Use these every evening, gently, before brushing."
REASON = "Already uses a water flosser; mouthwash not advised with her sensitivity."


@pytest.fixture
def settings(settings: Settings, access_simulator: BackgroundServer) -> Settings:  # noqa: F811
    return portal_settings(settings, access_simulator.url)


@pytest.fixture
def catalogue(
    client: TestClient,
    world: World,
    make_product: Callable[..., uuid.UUID],
    offer: Callable[..., None],
) -> PerioCatalogue:
    return perio_catalogue(client, world, make_product, offer)


def _pending(client: TestClient, world: World, catalogue: PerioCatalogue) -> tuple[str, str]:
    """An appointment of patient A ended: the brushes and mouthwash suggestions it produced."""
    made = {s["product"]["product_id"]: s for s in suggest(client, world, world.patient_a)}
    return (
        made[str(catalogue.brushes)]["suggestion_id"],
        made[str(catalogue.mouthwash)]["suggestion_id"],
    )


def _row(database: Database, suggestion_id: str) -> AiSuggestion:
    with Session(database.engine) as session:
        row = session.get(AiSuggestion, uuid.UUID(suggestion_id))
        assert row is not None
        session.expunge(row)
        return row


def _recommendations(database: Database) -> list[Recommendation]:
    with Session(database.engine) as session:
        rows = list(session.scalars(select(Recommendation)))
        session.expunge_all()
        return rows


def _decide(
    client: TestClient, suggestion_id: str, outcome: str, data: dict[str, str]
) -> httpx.Response:
    return client.post(
        f"{PAGE}/suggestions/{suggestion_id}/{outcome}", data=data, follow_redirects=False
    )


def _untouched(database: Database, *suggestion_ids: str) -> None:
    for suggestion_id in suggestion_ids:
        row = _row(database, suggestion_id)
        assert (row.status, row.decided_by, row.decision_reason) == ("pending", None, None)
        assert row.recommendation_id is None
    assert _recommendations(database) == []


# ---- deciding pending suggestions -------------------------------------------------------------


def test_a_clinician_approves_one_with_an_edited_note_and_rejects_another_with_a_reason(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    brushes, mouthwash = _pending(client, world, catalogue)
    page = sign_in(client, world.clinician_a, "clinician_a", start=PAGE)

    assert page.status_code == 200, page.text
    for suggestion_id in (brushes, mouthwash):
        row = _row(database, suggestion_id)
        assert escape(row.rationale) in page.text
        assert f'action="{PAGE}/suggestions/{suggestion_id}/approve"' in page.text
        assert f'action="{PAGE}/suggestions/{suggestion_id}/reject"' in page.text
    assert world.patient_a.actor.actor_id in page.text
    assert "TePe Interdental Brushes" in page.text
    assert "local-tfidf" in page.text
    token = csrf_of(page)

    approved = _decide(client, brushes, "approve", {"csrf_token": token, "note": f"  {NOTE}\n"})
    rejected = _decide(client, mouthwash, "reject", {"csrf_token": token, "reason": REASON})

    assert (approved.status_code, approved.headers["location"]) == (303, f"{PAGE}?saved=approved")
    assert (rejected.status_code, rejected.headers["location"]) == (303, f"{PAGE}?saved=rejected")
    done = _row(database, brushes)
    assert (done.status, done.decided_by, done.decided_by_role) == (
        "approved",
        world.clinician_a.actor.actor_id,
        "clinician",
    )
    (made,) = _recommendations(database)
    assert made.recommendation_id == done.recommendation_id
    assert (made.note, made.product_id, made.patient_id) == (
        NOTE,
        catalogue.brushes,
        uuid.UUID(world.patient_a.actor.actor_id),
    )
    assert (made.recommended_by, made.recommended_by_name) == (
        world.clinician_a.actor.actor_id,
        "Dr Clare",
    )
    refused = _row(database, mouthwash)
    assert (refused.status, refused.decision_reason, refused.recommendation_id) == (
        "rejected",
        REASON,
        None,
    )
    after = client.get(f"{PAGE}?saved=rejected")
    assert "Suggestion rejected" in after.text
    assert brushes not in after.text
    assert mouthwash not in after.text
    assert "No suggestions wait for a decision" in after.text


def test_a_refused_decision_shows_the_problem_and_changes_nothing(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    brushes, mouthwash = _pending(client, world, catalogue)
    token = csrf_of(sign_in(client, world.clinician_a, "clinician_a", start=PAGE))
    assert _decide(client, brushes, "approve", {"csrf_token": token}).status_code == 303

    again = _decide(client, brushes, "approve", {"csrf_token": token, "note": "Twice"})
    blank = _decide(client, mouthwash, "reject", {"csrf_token": token, "reason": "   "})
    with Session(database.engine) as session, session.begin():
        row = session.get(AiSuggestion, uuid.UUID(mouthwash))
        assert row is not None
        row.expires_at = row.created_at  # its lifetime is over
    expired = _decide(client, mouthwash, "reject", {"csrf_token": token, "reason": REASON})

    assert again.status_code == 409
    assert "already approved" in again.text
    assert blank.status_code == 400
    assert "Give the reason" in blank.text
    assert expired.status_code == 409
    assert "expired undecided" in expired.text
    assert 'role="alert"' in expired.text
    (made,) = _recommendations(database)
    assert made.note is None  # the first approval's, not the refused second one's
    assert _row(database, brushes).status == "approved"
    left = _row(database, mouthwash)
    assert (left.status, left.decided_by, left.decision_reason) == ("pending", None, None)


def test_finance_sees_no_suggestions_and_its_decision_is_a_403_changing_nothing(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    brushes, mouthwash = _pending(client, world, catalogue)
    refunds = sign_in(client, world.finance_a, "finance_a", start="/portal/refunds")
    assert refunds.status_code == 200, refunds.text
    assert f'href="{PAGE}"' not in refunds.text  # no navigation to a section it may not use
    token = csrf_of(refunds)

    listed = client.get(PAGE)
    approve = _decide(client, brushes, "approve", {"csrf_token": token, "note": NOTE})
    reject = _decide(client, mouthwash, "reject", {"csrf_token": token, "reason": REASON})

    for answer in (listed, approve, reject):
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert "Not permitted" in answer.text
    assert escape(_row(database, brushes).rationale) not in listed.text
    _untouched(database, brushes, mouthwash)


def test_a_decision_without_the_forms_csrf_token_changes_nothing(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    brushes, mouthwash = _pending(client, world, catalogue)
    sign_in(client, world.clinician_a, "clinician_a", start=PAGE)

    missing = _decide(client, brushes, "approve", {"note": NOTE})
    forged = _decide(client, mouthwash, "reject", {"csrf_token": "forged", "reason": REASON})

    for answer in (missing, forged):
        assert answer.status_code == 403
        assert "csrf_failed" in answer.text
    _untouched(database, brushes, mouthwash)


def test_another_practices_admin_neither_sees_nor_decides_practice_as_suggestions(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    brushes, mouthwash = _pending(client, world, catalogue)
    page = sign_in(client, world.admin_b, "admin_b", start=PAGE)
    patient = world.patient_a.actor.actor_id

    filtered = client.get(PAGE, params={"patient_id": patient})
    decided = _decide(client, brushes, "approve", {"csrf_token": csrf_of(page), "note": NOTE})

    assert page.status_code == 200
    assert filtered.status_code == 200
    for shown in (page.text, filtered.text):
        assert brushes not in shown
        assert mouthwash not in shown
        assert escape(_row(database, brushes).rationale) not in shown
        assert "No suggestions wait for a decision" in shown
    assert decided.status_code == 404, decided.text
    _untouched(database, brushes, mouthwash)


# ---- recommendations made, per patient ------------------------------------------------------


def _recommend(
    client: TestClient, world: World, patient: Person, product: uuid.UUID, note: str
) -> str:
    response = client.post(
        f"/v1/patients/{patient.actor.actor_id}/recommendations",
        headers={**world.clinician_a.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={"product_ids": [str(product)], "note": note},
    )
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()["items"][0]
    return str(made["recommendation_id"])


def test_the_patient_page_lists_that_patients_recommendations_and_no_one_elses(
    client: TestClient, world: World, catalogue: PerioCatalogue, database: Database
) -> None:
    _recommend(client, world, world.patient_a, catalogue.brushes, "Between the teeth nightly.")
    gone = _recommend(client, world, world.patient_a, catalogue.whitening, "Whiten weekly.")
    _recommend(client, world, world.patient_a2, catalogue.mouthwash, "Rinse after lunch.")
    withdrawn = client.post(
        f"/v1/recommendations/{gone}/withdraw", headers=world.clinician_a.headers, json={}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    sign_in(client, world.staff_a, "staff_a", start=PAGE)
    patient = world.patient_a.actor.actor_id

    found = client.get(f"{PAGE}/patients", params={"patient_id": patient}, follow_redirects=False)
    listed = client.get(found.headers["location"])
    only_withdrawn = client.get(f"{PAGE}/patients/{patient}", params={"status": "withdrawn"})
    bad = client.get(f"{PAGE}/patients", params={"patient_id": "not-a-patient"})

    assert (found.status_code, found.headers["location"]) == (303, f"{PAGE}/patients/{patient}")
    assert listed.status_code == 200, listed.text
    with Session(database.engine) as session:
        rows = list(session.scalars(select(Recommendation)))
        theirs = [r for r in rows if str(r.patient_id) == patient]
        others = [r for r in rows if str(r.patient_id) != patient]
    assert len(theirs) == 2
    assert len(others) == 1
    for row in theirs:
        assert row.note is not None
        assert escape(row.note) in listed.text
    assert others[0].note is not None
    assert others[0].note not in listed.text
    assert "Rinse after lunch." not in listed.text
    assert "Corsodyl" not in listed.text
    assert "Dr Clare" in listed.text
    assert "Withdrawn" in listed.text
    assert "Active" in listed.text
    assert "Whiten weekly." in only_withdrawn.text
    assert "Between the teeth nightly." not in only_withdrawn.text
    assert bad.status_code == 400


def test_the_patient_page_pages_as_the_service_does_and_hides_another_practices(
    client: TestClient,
    world: World,
    catalogue: PerioCatalogue,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _recommend(client, world, world.patient_a, catalogue.brushes, "First note.")
    _recommend(client, world, world.patient_a, catalogue.mouthwash, "Second note.")
    monkeypatch.setattr(portal_recommendations, "PAGE_SIZE", 1)
    sign_in(client, world.admin_a, "admin_a", start=PAGE)
    patient = world.patient_a.actor.actor_id

    first = client.get(f"{PAGE}/patients/{patient}")
    assert 'rel="next"' in first.text
    link = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = client.get(link.replace("&amp;", "&"))

    assert "Second note." in first.text
    assert "First note." not in first.text
    assert "First note." in second.text
    assert "Second note." not in second.text
    assert 'rel="next"' not in second.text
    assert len(_recommendations(database)) == 2

    # Practice B's admin: the same patient id shows nothing of practice A's.
    client.cookies.clear()
    sign_in(client, world.admin_b, "admin_b", start=PAGE)
    other = client.get(f"{PAGE}/patients/{patient}")
    assert other.status_code == 200
    assert "First note." not in other.text
    assert "Second note." not in other.text
    assert "No recommendations" in other.text
