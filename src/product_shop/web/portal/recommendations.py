"""Portal pages for recommendations (spec §7, §10.2): the practice's pending AI suggestions, each
approved (with the approver's note) or rejected (with a reason) by a named clinician or staff
member, and the recommendations made to one patient.

A decision calls what the API's routes call (`web/suggestions.py approve` and `reject`: the
service's approve and reject with `ApproveIn` and `RejectIn`), so the permission, the named
decider, the pending-and-unexpired rule and the audit hold unchanged. The API keeps no
idempotency record for them: a second submit of the same form is the service's 409
`suggestion_decided`, shown on the page.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from product_shop.access.policy import Action, allowed, require
from product_shop.core.errors import BadRequest, ProductShopError
from product_shop.recommendations.suggestion_schemas import ApproveIn, RejectIn
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.portal.auth import FormDep, PortalUser, PortalUserDep
from product_shop.web.portal.render import PREFIX, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 25
HOME = f"{PREFIX}/recommendations"
Text = Annotated[str | None, Query(max_length=64)]
Cursor = Annotated[str | None, Query(max_length=200)]
M = TypeVar("M", bound=BaseModel)


def _patient(value: str | None) -> uuid.UUID | None:
    if not value or not value.strip():
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError as exc:
        raise BadRequest("The patient must be a patient id.", code="invalid_filter") from exc


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _body(model: type[M], raw: dict[str, Any], what: str) -> M:
    """The API's own request model, so the form obeys the API's rules for each field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(what, code="validation_failed") from exc


def _suggestions_page(
    request: Request,
    user: PortalUser,
    session: SessionDep,
    context: ContextDep,
    *,
    patient: uuid.UUID | None,
    cursor: str | None = None,
    saved: str | None = None,
    problem: ProductShopError | None = None,
    entered: dict[str, str] | None = None,
) -> Response:
    suggestions = context.suggestions.list_for_practice(
        session,
        user.actor,
        status="pending",
        patient_id=patient,
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    query = {"patient_id": str(patient)} if patient else {}
    return page(
        request,
        "recommendations.html",
        {
            "suggestions": suggestions.items,
            "next_cursor": suggestions.next_cursor,
            "patient_id": str(patient) if patient else "",
            "query": query,
            "may_decide": allowed(user.actor, Action.DECIDE_AI_SUGGESTIONS),
            "saved": saved if saved in ("approved", "rejected") else None,
            "problem": problem,
            "entered": entered or {},
        },
        status=problem.status if problem else 200,
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


@router.get("/recommendations")
def suggestion_list(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    patient_id: Text = None,
    cursor: Cursor = None,
    saved: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    require(user.actor, Action.VIEW_AI_SUGGESTIONS)
    return _suggestions_page(
        request, user, session, context, patient=_patient(patient_id), cursor=cursor, saved=saved
    )


def _decided(
    request: Request,
    user: PortalUser,
    form: FormData,
    session: SessionDep,
    context: ContextDep,
    suggestion_id: uuid.UUID,
    outcome: str,
) -> Response:
    """Approve or reject through the service, as the API does, in a unit of work of its own:
    a refusal (already decided, expired, a field the API would refuse) rolls back whole, and
    the list is shown again with the problem and the text as entered."""
    require(user.actor, Action.DECIDE_AI_SUGGESTIONS)
    patient = _patient(_text(form, "patient_id"))
    field = "note" if outcome == "approved" else "reason"
    entered = {"suggestion_id": str(suggestion_id), field: _text(form, field)}
    try:
        if outcome == "approved":
            note = entered["note"].strip()
            body = _body(
                ApproveIn,
                {"note": note or None},
                "The note must be at most 1,000 characters of text.",
            )
            with context.database.unit_of_work() as unit:
                context.suggestions.approve(unit, user.actor, suggestion_id, body)
        else:
            reject = _body(
                RejectIn,
                {"reason": entered["reason"]},
                "Give the reason for rejecting the suggestion (at most 500 characters).",
            )
            with context.database.unit_of_work() as unit:
                context.suggestions.reject(unit, user.actor, suggestion_id, reject)
    except ProductShopError as exc:
        if exc.status >= 500 or exc.status in (401, 403, 404):
            raise
        return _suggestions_page(
            request, user, session, context, patient=patient, problem=exc, entered=entered
        )
    query = {"saved": outcome, **({"patient_id": str(patient)} if patient else {})}
    return RedirectResponse(f"{HOME}?{urlencode(query)}", status_code=303)


@router.post("/recommendations/suggestions/{suggestion_id}/approve")
def approve_suggestion(
    request: Request,
    suggestion_id: uuid.UUID,
    user: PortalUserDep,
    form: FormDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    return _decided(request, user, form, session, context, suggestion_id, "approved")


@router.post("/recommendations/suggestions/{suggestion_id}/reject")
def reject_suggestion(
    request: Request,
    suggestion_id: uuid.UUID,
    user: PortalUserDep,
    form: FormDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    return _decided(request, user, form, session, context, suggestion_id, "rejected")


@router.get("/recommendations/patients")
def find_patient(user: PortalUserDep, patient_id: Text = None) -> Response:
    """The "patient id" form's target: on to that patient's page."""
    require(user.actor, Action.VIEW_RECOMMENDATIONS)
    patient = _patient(patient_id)
    if patient is None:
        raise BadRequest("Enter a patient id.", code="invalid_filter")
    return RedirectResponse(f"{HOME}/patients/{patient}", status_code=303)


@router.get("/recommendations/patients/{patient_id}")
def patient_recommendations(
    request: Request,
    patient_id: uuid.UUID,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    status: Text = None,
    cursor: Cursor = None,
) -> Response:
    require(user.actor, Action.VIEW_RECOMMENDATIONS)
    if status and status not in ("active", "withdrawn"):
        raise BadRequest("Unknown recommendation status.", code="invalid_filter")
    made = context.recommendations.list_for_practice(
        session,
        user.actor,
        patient_id=patient_id,
        status=status or None,
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    return page(
        request,
        "recommendations_patient.html",
        {
            "patient_id": str(patient_id),
            "recommendations": made.items,
            "next_cursor": made.next_cursor,
            "status": status or "",
            "query": {"status": status} if status else {},
            "may_view_suggestions": allowed(user.actor, Action.VIEW_AI_SUGGESTIONS),
        },
        actor=user.actor,
        csrf_token=user.csrf_token,
    )
