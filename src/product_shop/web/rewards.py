"""Rewards Manager routes: the patient's points, and Rewards Manager's signed callbacks."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.core.errors import BadRequest, ServiceUnavailable
from product_shop.integrations.rewards import RewardsRejected, RewardsUnavailable
from product_shop.web import checkout_flows as flows
from product_shop.web.deps import ContextDep, permitted
from product_shop.web.problems import Problem, problem_responses
from product_shop.web.webhooks import (
    SIGNED_JSON_WEBHOOK,
    WEBHOOK_GUARD_RESPONSES,
    verified_message_id,
)

router = APIRouter(prefix="/v1", tags=["rewards"])


class RewardsOut(BaseModel):
    enabled: bool = Field(description="Whether the patient's practice offers rewards points")
    balance_points: int
    value_minor: int = Field(description="What the balance is worth, in minor units")
    value_minor_per_point: int
    currency: str


@router.get(
    "/me/rewards",
    operation_id="getMyRewards",
    response_model=RewardsOut,
    summary="The patient's Rewards Manager points and what they are worth (read live)",
    responses=problem_responses(401, 403, 422, 503),
)
def my_rewards(
    actor: Annotated[Actor, Depends(permitted(Action.CHECKOUT))], context: ContextDep
) -> RewardsOut:
    try:
        account = context.rewards.account(str(actor.patient_id), str(actor.practice_id))
    except RewardsUnavailable as exc:
        raise ServiceUnavailable(
            "Rewards Manager is unavailable; try again in a moment.", code="rewards_unavailable"
        ) from exc
    except RewardsRejected as exc:
        raise ServiceUnavailable(
            f"Rewards Manager could not show the points: {exc.message}",
            code="rewards_unavailable",
        ) from exc
    return RewardsOut(
        enabled=account.enabled,
        balance_points=account.balance_points,
        value_minor=account.value_of(account.balance_points),
        value_minor_per_point=account.value_minor_per_point,
        currency=account.currency,
    )


class RewardsWebhookAck(BaseModel):
    status: str


@router.post(
    "/webhooks/rewards",
    operation_id="receiveRewardsWebhook",
    response_model=RewardsWebhookAck,
    tags=["webhooks"],
    summary="Rewards Manager callbacks: redemption confirmed or reversed (signed)",
    description=(
        "Body: `{id, type, created_at, data}`, `type` `redemption.confirmed` or "
        "`redemption.reversed` (see `integrations/rewards.py`). Deduplicated by event id. A "
        "confirmation finalises the checkout's total: the payment for the rest opens, or the "
        "order is made when the points cover it all. A reversal is recorded only."
    ),
    responses={
        **WEBHOOK_GUARD_RESPONSES,
        400: {"model": Problem, "description": "Not a rewards event (`malformed_webhook`)"},
        401: {"model": Problem, "description": "Invalid signature (`invalid_signature`)"},
        503: {"model": Problem, "description": "Payments unavailable: send it again later"},
    },
    openapi_extra=SIGNED_JSON_WEBHOOK,
)
async def rewards_webhook(request: Request, context: ContextDep) -> JSONResponse:
    body = await request.body()
    message_id = verified_message_id(
        context, context.settings.rewards_webhook_secret, dict(request.headers), body
    )
    try:
        event = json.loads(body)
        event_type, data = str(event["type"]), event["data"]
        if not isinstance(data, dict):
            raise TypeError("data is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(
            "The webhook body is not a rewards event.", code="malformed_webhook"
        ) from exc
    outcome = await run_in_threadpool(flows.rewards_callback, context, message_id, event_type, data)
    return JSONResponse({"status": outcome})
