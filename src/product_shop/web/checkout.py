"""Checkout routes and the Integrated Payments webhook."""

from __future__ import annotations

import json
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from product_shop.checkout.schemas import CheckoutIn, CheckoutOut
from product_shop.core.errors import BadRequest, Unauthenticated
from product_shop.core.signing import SignatureError, verify
from product_shop.idempotency.store import Claim
from product_shop.orders.schemas import OrderOut
from product_shop.web.deps import ActorDep, ContextDep
from product_shop.web.idempotency import IdempotencyKeyHeader, run_idempotent
from product_shop.web.problems import Problem, problem_responses
from product_shop.web.responses import model_response

router = APIRouter(prefix="/v1", tags=["checkout"])


@router.post(
    "/checkouts",
    response_model=CheckoutOut,
    status_code=201,
    summary="Start a checkout: prices from the catalogue now, a payment intent to pay in the app",
    responses=problem_responses(400, 401, 403, 409, 422, 503),
)
def create_checkout(
    body: CheckoutIn,
    actor: ActorDep,
    context: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    def create(claim: Claim) -> tuple[CheckoutOut, str]:
        view = context.checkout.create(actor, body, claim)
        return view, f"/v1/checkouts/{view.id}"

    return run_idempotent(context, actor, idempotency_key, "POST /v1/checkouts", body, create)


@router.get(
    "/checkouts/{checkout_id}",
    response_model=CheckoutOut,
    summary="The patient's own checkout",
    responses=problem_responses(401, 403, 404, 422),
)
def get_checkout(checkout_id: uuid.UUID, actor: ActorDep, context: ContextDep) -> Response:
    return model_response(context.checkout.get(actor, checkout_id))


@router.post(
    "/checkouts/{checkout_id}/complete",
    response_model=OrderOut,
    summary="Confirm capture with Integrated Payments and get the order (idempotent)",
    description=(
        "Confirms the capture through Integrated Payments' sync API, then creates the order. "
        "Repeated or concurrent calls (and the payments webhook) make exactly one order; every "
        "successful call returns it. A failed payment answers 402 `payment_failed` with the "
        "reason; retry through `POST /v1/checkouts/{id}/retry`."
    ),
    responses={
        **problem_responses(401, 403, 404, 409, 422, 503),
        402: {"model": Problem, "description": "The payment failed; retry via /retry"},
    },
)
def complete_checkout(checkout_id: uuid.UUID, actor: ActorDep, context: ContextDep) -> Response:
    return model_response(context.completion.complete_for_patient(actor, checkout_id))


@router.post(
    "/checkouts/{checkout_id}/retry",
    response_model=CheckoutOut,
    summary="A new payment attempt for a failed checkout (idempotent)",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
def retry_checkout(checkout_id: uuid.UUID, actor: ActorDep, context: ContextDep) -> Response:
    return model_response(context.checkout.retry(actor, checkout_id))


class WebhookAck(BaseModel):
    status: str


@router.post(
    "/webhooks/payments",
    response_model=WebhookAck,
    tags=["webhooks"],
    summary="Integrated Payments callbacks (Standard Webhooks signature required)",
    responses=problem_responses(400, 401),
)
async def payments_webhook(request: Request, context: ContextDep) -> JSONResponse:
    body = await request.body()
    try:
        message_id = verify(
            context.settings.webhook_secret.get_secret_value(),
            dict(request.headers),
            body,
            now=int(context.clock.now().timestamp()),
        )
    except SignatureError as exc:
        raise Unauthenticated(
            "The webhook signature is not valid.", code="invalid_signature"
        ) from exc
    try:
        event = json.loads(body)
        data = event["data"]
        intent_id, reference = str(data["intent_id"]), str(data["merchant_reference"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(
            "The webhook body is not a payment event.", code="malformed_webhook"
        ) from exc
    outcome = await run_in_threadpool(
        context.completion.handle_payment_webhook, message_id, intent_id, reference
    )
    return JSONResponse({"status": outcome})
