"""Appointment context and AI suggestions behind the staff approval gate (spec §7, §11.1), and AI
summaries for staff. Nothing here answers a patient: an approved suggestion reaches the patient
only as a recommendation (`GET /v1/me/recommendations`)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.context import AppContext
from product_shop.core.errors import BadRequest, Unprocessable
from product_shop.core.moments import Timestamp
from product_shop.integrations.appointments import MalformedAppointmentEvent, parse_event
from product_shop.recommendations.suggestion_schemas import (
    AiSummaryOut,
    ApproveIn,
    RejectIn,
    SuggestionList,
    SuggestionOut,
    SuggestionStatus,
    WebhookAck,
)
from product_shop.web.deps import ContextDep, SessionDep, permitted
from product_shop.web.problems import Problem, problem_responses
from product_shop.web.responses import model_response
from product_shop.web.webhooks import (
    SIGNED_JSON_WEBHOOK,
    WEBHOOK_GUARD_RESPONSES,
    verified_message_id,
)

router = APIRouter(prefix="/v1", tags=["ai suggestions"])

Viewer = Annotated[Actor, Depends(permitted(Action.VIEW_AI_SUGGESTIONS))]
Decider = Annotated[Actor, Depends(permitted(Action.DECIDE_AI_SUGGESTIONS))]
SummaryReader = Annotated[Actor, Depends(permitted(Action.VIEW_AI_SUMMARIES))]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]


@router.post(
    "/webhooks/appointments",
    operation_id="receiveAppointmentWebhook",
    response_model=WebhookAck,
    tags=["webhooks"],
    summary="Appointment Manager: an appointment ended (signed; may prompt AI suggestions)",
    description=(
        "Body: `{id, type, created_at, data}` with `type` `appointment.ended` (see "
        "`integrations/appointments.py`); other types are acknowledged and ignored. "
        "Deduplicated by `webhook-id` and by appointment: a redelivery changes nothing. The "
        "appointment is kept as context for the practice's staff (no PMS or clinical record is "
        "read or written), and the suggestion engine's pending suggestions, drawn from the "
        "practice's purchasable catalogue, wait for a named clinician's or staff member's "
        "decision."
    ),
    responses={
        **WEBHOOK_GUARD_RESPONSES,
        400: {"model": Problem, "description": "Not an appointment event (`malformed_webhook`)"},
        401: {"model": Problem, "description": "Invalid signature (`invalid_signature`)"},
    },
    openapi_extra=SIGNED_JSON_WEBHOOK,
)
async def appointments_webhook(request: Request, context: ContextDep) -> Response:
    body = await request.body()
    message_id = verified_message_id(
        context, context.settings.appointments_webhook_secret, dict(request.headers), body
    )
    try:
        _type, event = parse_event(json.loads(body))
    except (ValueError, MalformedAppointmentEvent) as exc:
        raise BadRequest(
            f"The webhook body is not an appointment event ({exc}).", code="malformed_webhook"
        ) from exc
    if event is None:
        return model_response(WebhookAck(status="ignored"))
    return model_response(await run_in_threadpool(_appointment_ended, context, message_id, event))


def _appointment_ended(context: AppContext, message_id: str, event: Any) -> WebhookAck:
    """Three steps, no transaction held across the engine (it may be a remote service): read
    the candidates; ask the engine; record the context, its suggestions and the inbox row in
    one unit of work (a copy that raced us finds the inbox row or the appointment taken)."""
    suggestions = context.suggestion_intake
    with context.database.reading() as session:
        if suggestions.already_received(session, message_id, event):
            return WebhookAck(status="duplicate")
        candidates = suggestions.candidates(session, event.practice_id)
    outcome = suggestions.ask(event, candidates)
    try:
        made = context.database.run(
            lambda session: suggestions.record_appointment(session, message_id, event, outcome)
        )
    except IntegrityError:  # a copy recorded the appointment between our check and insert
        return WebhookAck(status="duplicate")
    if made is None:
        return WebhookAck(status="duplicate")
    return WebhookAck(status="recorded", suggestions=made)


@router.get(
    "/ai-suggestions",
    operation_id="listAiSuggestions",
    response_model=SuggestionList,
    summary="The practice's AI suggestions, newest first (staff only; never shown to patients)",
    description=(
        "Each with the engine's name and version, its rationale, and the appointment it came "
        "from. `status=pending` is what waits for a decision; `expired` is what was left "
        "undecided past its lifetime."
    ),
    responses=problem_responses(400, 401, 403, 422),
)
def list_suggestions(
    actor: Viewer,
    session: SessionDep,
    context: ContextDep,
    status: SuggestionStatus | None = None,
    patient_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Response:
    return model_response(
        context.suggestions.list_for_practice(
            session, actor, status=status, patient_id=patient_id, cursor=cursor, limit=limit
        )
    )


@router.get(
    "/ai-suggestions/{suggestion_id}",
    operation_id="getAiSuggestion",
    response_model=SuggestionOut,
    summary="One AI suggestion (staff only)",
    responses=problem_responses(401, 403, 404, 422),
)
def get_suggestion(
    suggestion_id: uuid.UUID, actor: Viewer, session: SessionDep, context: ContextDep
) -> Response:
    return model_response(context.suggestions.get(session, actor, suggestion_id))


@router.post(
    "/ai-suggestions/{suggestion_id}/approve",
    operation_id="approveAiSuggestion",
    response_model=SuggestionOut,
    summary="A named clinician or staff member approves: it becomes their recommendation",
    description=(
        "The patient sees it from now on, as a recommendation attributed to the approver, with "
        "the approver's note if one is given. Only a pending suggestion of the practice, not "
        "past its lifetime (409 `suggestion_decided` or `suggestion_expired` otherwise). "
        "Audited."
    ),
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
def approve(
    suggestion_id: uuid.UUID,
    actor: Decider,
    session: SessionDep,
    context: ContextDep,
    body: ApproveIn | None = None,
) -> Response:
    return model_response(
        context.suggestions.approve(session, actor, suggestion_id, body or ApproveIn())
    )


@router.post(
    "/ai-suggestions/{suggestion_id}/reject",
    operation_id="rejectAiSuggestion",
    response_model=SuggestionOut,
    summary="A named clinician or staff member rejects, with a reason: it never reaches a patient",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
def reject(
    suggestion_id: uuid.UUID,
    body: RejectIn,
    actor: Decider,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    return model_response(context.suggestions.reject(session, actor, suggestion_id, body))


@router.get(
    "/ai-summaries/recommendations",
    operation_id="getAiRecommendationSummary",
    response_model=AiSummaryOut,
    summary="An AI summary of the practice's recommendation and order activity (staff only)",
    description=(
        "Plain sentences over [from, to), with the figures they rest on (counted from the "
        "recommendations, orders and suggestions themselves). For staff review: never shown to "
        "patients, and it makes no commitment on behalf of the practice. Audited."
    ),
    responses=problem_responses(401, 403, 422),
)
def recommendation_summary(
    actor: SummaryReader,
    session: SessionDep,
    context: ContextDep,
    start: Annotated[Timestamp, Query(alias="from")],
    end: Annotated[Timestamp, Query(alias="to")],
) -> Response:
    if end <= start:
        raise Unprocessable("`to` must be after `from`.", code="invalid_date_range")
    return model_response(context.summaries.recommendations_summary(session, actor, start, end))
