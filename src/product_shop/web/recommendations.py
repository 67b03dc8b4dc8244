"""Recommendations (spec §4.1, §10.3): the care team's, chairside or after an appointment, and
what the patient sees of their own."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.core.errors import Unprocessable
from product_shop.core.moments import Timestamp
from product_shop.idempotency.store import Claim
from product_shop.recommendations.conversion import Conversion, conversion
from product_shop.recommendations.schemas import (
    PatientRecommendationList,
    PatientRecommendationOut,
    RecommendationIn,
    RecommendationList,
    RecommendationOut,
    WithdrawIn,
)
from product_shop.web.deps import ContextDep, SessionDep, permitted
from product_shop.web.idempotency import (
    IDEMPOTENT_CREATE,
    IdempotencyKeyHeader,
    creating_responses,
    run_idempotent,
    stored_with_answer,
)
from product_shop.web.problems import problem_responses
from product_shop.web.responses import model_response

router = APIRouter(prefix="/v1", tags=["recommendations"])

Clinician = Annotated[Actor, Depends(permitted(Action.RECOMMEND_PRODUCTS))]
CareTeam = Annotated[Actor, Depends(permitted(Action.VIEW_RECOMMENDATIONS))]
Patient = Annotated[Actor, Depends(permitted(Action.VIEW_OWN_RECOMMENDATIONS))]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Status = Literal["active", "withdrawn"]


@router.post(
    "/patients/{patient_id}/recommendations",
    operation_id="recommendProducts",
    response_model=RecommendationList,
    status_code=201,
    summary="A clinician recommends catalogue products to a patient of the practice",
    description=(
        "One recommendation per product, each a product the practice offers (not deprecated), "
        "with an optional note to the patient and the appointment it was made in. The patient "
        "sees it framed as their care team's, with the clinician's name. The tablet's chairside "
        "flow is this call."
    ),
    responses=creating_responses(401, 403, 409, 422),
    openapi_extra=IDEMPOTENT_CREATE,
)
def recommend(
    patient_id: uuid.UUID,
    body: RecommendationIn,
    actor: Clinician,
    context: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    location = f"/v1/patients/{patient_id}/recommendations"

    def create(claim: Claim) -> tuple[RecommendationList, str]:
        def make(session: Session) -> RecommendationList:
            return context.recommendations.recommend(session, actor, patient_id, body)

        return stored_with_answer(context, claim, location, make), location

    return run_idempotent(context, actor, idempotency_key, f"POST {location}", body, create)


@router.get(
    "/patients/{patient_id}/recommendations",
    operation_id="listPatientRecommendations",
    response_model=RecommendationList,
    summary="A patient's recommendations, newest first (the practice's care team)",
    responses=problem_responses(400, 401, 403, 422),
)
def patient_recommendations(
    patient_id: uuid.UUID,
    actor: CareTeam,
    session: SessionDep,
    context: ContextDep,
    status: Status | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Response:
    return model_response(
        context.recommendations.list_for_practice(
            session, actor, patient_id=patient_id, status=status, cursor=cursor, limit=limit
        )
    )


@router.get(
    "/recommendations",
    operation_id="listRecommendations",
    response_model=RecommendationList,
    summary="The practice's recommendations, newest first (the practice's care team)",
    responses=problem_responses(400, 401, 403, 422),
)
def practice_recommendations(
    actor: CareTeam,
    session: SessionDep,
    context: ContextDep,
    status: Status | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Response:
    return model_response(
        context.recommendations.list_for_practice(
            session, actor, status=status, cursor=cursor, limit=limit
        )
    )


@router.get(
    "/recommendations/conversion",
    operation_id="getRecommendationConversion",
    response_model=Conversion,
    summary="Recommendation-to-purchase conversion of the practice in a period (dashboards)",
    description=(
        "Recommendations made in [from, to), and how many led to a paid order: a checkout line "
        "naming the recommendation, in a checkout that became an order."
    ),
    responses=problem_responses(401, 403, 422),
)
def recommendation_conversion(
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_DASHBOARDS))],
    session: SessionDep,
    start: Annotated[Timestamp, Query(alias="from")],
    end: Annotated[Timestamp, Query(alias="to")],
) -> Response:
    if end <= start:
        raise Unprocessable("`to` must be after `from`.", code="invalid_date_range")
    assert actor.practice_id is not None
    return model_response(conversion(session, actor.practice_id, start, end))


@router.get(
    "/recommendations/{recommendation_id}",
    operation_id="getRecommendation",
    response_model=RecommendationOut,
    summary="One recommendation of the practice (the practice's care team)",
    responses=problem_responses(401, 403, 404, 422),
)
def practice_recommendation(
    recommendation_id: uuid.UUID, actor: CareTeam, session: SessionDep, context: ContextDep
) -> Response:
    return model_response(
        context.recommendations.get_for_practice(session, actor, recommendation_id)
    )


@router.post(
    "/recommendations/{recommendation_id}/withdraw",
    operation_id="withdrawRecommendation",
    response_model=RecommendationOut,
    summary="A clinician of the practice withdraws a recommendation",
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
def withdraw(
    recommendation_id: uuid.UUID,
    actor: Clinician,
    session: SessionDep,
    context: ContextDep,
    body: WithdrawIn | None = None,
) -> Response:
    return model_response(
        context.recommendations.withdraw(session, actor, recommendation_id, body or WithdrawIn())
    )


@router.get(
    "/me/recommendations",
    operation_id="listMyRecommendations",
    response_model=PatientRecommendationList,
    summary="The patient's own recommendations, framed as their care team's",
    description=(
        "Only recommendations a named clinician of the practice made (and has not withdrawn), "
        "each with the clinician's name, the note, and the product as the practice's catalogue "
        "shows it now: its current price, and whether it can be bought."
    ),
    responses=problem_responses(401, 403, 422),
)
def my_recommendations(actor: Patient, session: SessionDep, context: ContextDep) -> Response:
    return model_response(context.recommendations.for_patient(session, actor))


@router.get(
    "/me/recommendations/{recommendation_id}",
    operation_id="getMyRecommendation",
    response_model=PatientRecommendationOut,
    summary="One of the patient's own recommendations (a notification's link)",
    description=(
        "Framed as the care team's, with the product as the catalogue shows it now. Another "
        "patient's, another practice's, a withdrawn and an unknown recommendation are the same "
        "404."
    ),
    responses=problem_responses(401, 403, 404, 422),
)
def my_recommendation(
    recommendation_id: uuid.UUID, actor: Patient, session: SessionDep, context: ContextDep
) -> Response:
    return model_response(
        context.recommendations.one_for_patient(session, actor, recommendation_id)
    )
