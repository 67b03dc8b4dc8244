"""Checkout routes and the Integrated Payments webhook."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.checkout.return_urls import check_return_url
from product_shop.checkout.schemas import CheckoutIn, CheckoutOut
from product_shop.core.errors import BadRequest
from product_shop.core.moments import Timestamp
from product_shop.orders.schemas import OrderOut
from product_shop.web import checkout_flows as flows
from product_shop.web.abuse import checkout_rate_limit
from product_shop.web.deps import ActorDep, ContextDep, permitted
from product_shop.web.idempotency import (
    IDEMPOTENT_CREATE,
    IdempotencyKeyHeader,
    creating_responses,
    run_idempotent,
)
from product_shop.web.problems import Problem, problem_responses
from product_shop.web.responses import model_response
from product_shop.web.webhooks import WEBHOOK_GUARD_RESPONSES, verified_message_id

router = APIRouter(prefix="/v1", tags=["checkout"])


@router.post(
    "/checkouts",
    operation_id="createCheckout",
    response_model=CheckoutOut,
    status_code=201,
    summary="Start a checkout: prices from the catalogue now, a payment intent to pay in the app",
    responses=creating_responses(401, 403, 409, 422, 429, 503),
    dependencies=[Depends(checkout_rate_limit)],
    openapi_extra=IDEMPOTENT_CREATE,
)
def create_checkout(
    body: CheckoutIn,
    actor: Annotated[Actor, Depends(permitted(Action.CHECKOUT))],
    context: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    if body.return_url is not None:
        check_return_url(body.return_url, context.settings.payment_return_allowed())

    start = flows.CheckoutStart(context, actor, body)
    return run_idempotent(
        context,
        actor,
        idempotency_key,
        "POST /v1/checkouts",
        body,
        start.create,
        prepare=start.price,
    )


@router.get(
    "/checkouts/{checkout_id}",
    operation_id="getCheckout",
    response_model=CheckoutOut,
    summary="The patient's own checkout",
    responses=problem_responses(401, 403, 404, 422),
)
def get_checkout(checkout_id: uuid.UUID, actor: ActorDep, context: ContextDep) -> Response:
    return model_response(flows.get_checkout(context, actor, checkout_id))


@router.post(
    "/checkouts/{checkout_id}/complete",
    operation_id="completeCheckout",
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
    return model_response(flows.complete_for_patient(context, actor, checkout_id))


@router.post(
    "/checkouts/{checkout_id}/retry",
    operation_id="retryCheckout",
    response_model=CheckoutOut,
    summary="A new payment attempt for a failed checkout (idempotent)",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
def retry_checkout(checkout_id: uuid.UUID, actor: ActorDep, context: ContextDep) -> Response:
    return model_response(flows.retry_checkout(context, actor, checkout_id))


class WebhookAck(BaseModel):
    status: str


class PaymentEventData(BaseModel):
    """The payment intent the event is about, as Integrated Payments reports it."""

    model_config = ConfigDict(extra="allow")

    # Strict and shaped: an id is never a number, an object or a path (it names the intent we
    # then read at Integrated Payments).
    intent_id: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9_-]{1,128}$")]
    merchant_reference: Annotated[str, StringConstraints(strict=True, max_length=64)] = Field(
        description="The checkout id the intent was opened for"
    )
    status: str | None = Field(default=None, description="e.g. `captured`, `failed`")
    amount_minor: int | None = None
    currency: str | None = None
    transaction_ref: str | None = None


class PaymentEvent(BaseModel):
    """An Integrated Payments callback. Only `data.intent_id` and `data.merchant_reference` are
    read; the outcome is confirmed with Integrated Payments before anything changes."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, description="The event id (also sent as webhook-id)")
    type: Literal["payment.captured", "payment.failed"] | None = None
    created_at: Timestamp | None = None
    data: PaymentEventData


def _signature_header(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
        "example": example,
    }


# The route reads the raw body (the signature covers its exact bytes), so FastAPI cannot infer
# the body or the signature headers: they are declared here. PaymentEvent's schema is added to
# components by web/app.py.
PAYMENTS_WEBHOOK_OPENAPI: dict[str, Any] = {
    "parameters": [
        _signature_header(
            "webhook-id",
            "Standard Webhooks message id; a message seen before is acknowledged, not redone.",
            "evt_2f1c9a7e0b4d4e5f8a6b7c3d",
        ),
        _signature_header(
            "webhook-timestamp",
            "Standard Webhooks: Unix seconds when signed; refused beyond 5 minutes of now.",
            "1718000000",
        ),
        _signature_header(
            "webhook-signature",
            "Standard Webhooks: space-separated `v1,<base64 HMAC-SHA256>` signatures of "
            "`{webhook-id}.{webhook-timestamp}.{body}` keyed by the base64-decoded `whsec_` "
            "secret; one valid signature suffices.",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentEvent"}}},
    },
}


@router.post(
    "/webhooks/payments",
    operation_id="receivePaymentsWebhook",
    response_model=WebhookAck,
    tags=["webhooks"],
    summary="Integrated Payments callbacks (Standard Webhooks signature required)",
    responses={
        **WEBHOOK_GUARD_RESPONSES,
        400: {"model": Problem, "description": "Not a payment event (`malformed_webhook`)"},
        401: {
            "model": Problem,
            "description": "Missing, malformed or invalid signature, or a timestamp outside "
            "5 minutes (`invalid_signature`)",
        },
    },
    openapi_extra=PAYMENTS_WEBHOOK_OPENAPI,
)
async def payments_webhook(request: Request, context: ContextDep) -> JSONResponse:
    body = await request.body()
    message_id = verified_message_id(
        context, context.settings.webhook_secret, dict(request.headers), body
    )
    try:
        data = PaymentEventData.model_validate(json.loads(body)["data"])
        intent_id, reference = data.intent_id, data.merchant_reference
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise BadRequest(
            "The webhook body is not a payment event.", code="malformed_webhook"
        ) from exc
    outcome = await run_in_threadpool(
        flows.payment_callback, context, message_id, intent_id, reference
    )
    return JSONResponse({"status": outcome})
