"""The gateway's API, as `integrations.payments_http` speaks it: payment intents (create, get,
cancel, order reference), refunds and refund reasons. Bearer API key on every route."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from product_shop.simulators.payments.common import (
    Sim,
    after,
    before,
    intent_not_found,
    problem,
    unauthorised,
)
from product_shop.simulators.payments.state import WALLETS, Intent

REFUND_REASONS = (
    ("customer_request", "The patient asked for a refund (distance selling / change of mind)."),
    ("damaged_item", "The item arrived damaged or faulty."),
    ("item_not_received", "The item did not arrive."),
    ("wrong_item", "The wrong item was supplied."),
    ("clinical_advice", "The clinician advised against the product after purchase."),
    ("duplicate_payment", "The patient was charged twice."),
    ("order_error", "The order was placed in error."),
)

# Two routers only so that the app lists them around the hosted page, as it always has (the
# simulator's OpenAPI document is unchanged).
payment_intents = APIRouter()
refunds = APIRouter()


class IntentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_minor: int = Field(gt=0, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    merchant_reference: str = Field(min_length=1, max_length=64)
    payment_methods: list[str] = Field(default_factory=lambda: ["card"])
    capture: Literal["immediate"] = "immediate"
    # Where the hosted page sends the browser after a payment (an absolute http(s) URL).
    return_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://[^\s]+$")


class OrderReferenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(min_length=1, max_length=64)


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transaction_ref: str
    amount_minor: int = Field(gt=0, strict=True)
    currency: str
    reason_code: str
    initiated_by: str = Field(min_length=1)
    merchant_reference: str | None = Field(default=None, min_length=1, max_length=64)


def _key_reused() -> JSONResponse:
    return problem(422, "idempotency_key_reused", "Idempotency-Key reused with another body.")


@payment_intents.post("/v1/payment-intents", status_code=201)
async def create_intent(
    body: IntentIn,
    state: Sim,
    authorization: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    refused = set(body.payment_methods) - {"card", *WALLETS}
    if refused:
        return problem(422, "method_not_supported", f"Not accepted: {', '.join(sorted(refused))}.")
    stop, late = await before(state, "create_intent")
    if stop:
        return stop
    with state.lock:  # re-entrant: the key check and the store are one atomic step
        digest, seen = state.idempotent(idempotency_key, body.model_dump())
        if seen == "mismatch":
            return _key_reused()
        if seen is not None:
            intent = state.intents[seen]
        else:
            intent_id = "pi_" + secrets.token_hex(12)
            intent = Intent(
                intent_id=intent_id,
                amount_minor=body.amount_minor,
                currency=body.currency,
                merchant_reference=body.merchant_reference,
                created_at=datetime.now(UTC).isoformat(),
                return_url=body.return_url,
            )
            state.intents[intent_id] = intent
            if idempotency_key and digest:
                state.idempotency[idempotency_key] = (digest, intent_id)
        document = {
            **intent.public(),
            "payment_url": f"{state.config.public_url}/pay/{intent.intent_id}",
        }
    await after(late)
    return JSONResponse(document, status_code=201)


@payment_intents.get("/v1/payment-intents/{intent_id}")
async def get_intent(
    intent_id: str, state: Sim, authorization: str | None = Header(default=None)
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    stop, late = await before(state, "get_payment")
    if stop:
        return stop
    with state.lock:
        intent = state.intents.get(intent_id)
        document = intent.public() if intent else None
    await after(late)
    if document is None:
        return intent_not_found()
    return JSONResponse(document)


@payment_intents.post("/v1/payment-intents/{intent_id}/cancel")
async def cancel_intent(
    intent_id: str, state: Sim, authorization: str | None = Header(default=None)
) -> JSONResponse:
    """Close an unpaid intent: its hosted page refuses every later payment, as a real
    gateway's does. Idempotent; a captured intent cannot be cancelled (refund it instead)."""
    if not state.authorised(authorization):
        return unauthorised()
    stop, late = await before(state, "cancel_intent")
    if stop:
        return stop
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return intent_not_found()
        if intent.status == "captured":
            return problem(409, "intent_captured", "This payment was captured; refund it instead.")
        intent.status = "cancelled"
        document = intent.public()
    await after(late)
    return JSONResponse(document)


@payment_intents.put("/v1/payment-intents/{intent_id}/order-reference")
async def set_order_reference(
    intent_id: str,
    body: OrderReferenceIn,
    state: Sim,
    authorization: str | None = Header(default=None),
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    stop, late = await before(state, "set_order_reference")
    if stop:
        return stop
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return intent_not_found()
        if intent.status != "captured":
            return problem(409, "not_captured", "Only a captured payment takes an order reference.")
        if intent.order_reference not in (None, body.order_id):
            return problem(
                409, "order_reference_set", "A different order reference is already set."
            )
        intent.order_reference = body.order_id
        document = intent.public()
    await after(late)
    return JSONResponse(document)


@refunds.get("/v1/refund-reasons")
async def refund_reasons(
    state: Sim, authorization: str | None = Header(default=None)
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    return JSONResponse({"reasons": [{"code": c, "description": d} for c, d in REFUND_REASONS]})


@refunds.get("/v1/refunds")
async def find_refunds(
    state: Sim,
    merchant_reference: str,
    authorization: str | None = Header(default=None),
) -> JSONResponse:
    """The refunds made under a merchant's reference (how an unknown outcome is settled)."""
    if not state.authorised(authorization):
        return unauthorised()
    stop, late = await before(state, "get_refund")
    if stop:
        return stop
    with state.lock:
        found = [
            document
            for document in state.refunds.values()
            if document.get("merchant_reference") == merchant_reference
        ]
    await after(late)
    return JSONResponse({"refunds": found})


@refunds.post("/v1/refunds", status_code=201)
async def refund(
    body: RefundIn,
    state: Sim,
    authorization: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    if body.reason_code not in {c for c, _ in REFUND_REASONS}:
        return problem(422, "unknown_reason_code", "Use a reason code from /v1/refund-reasons.")
    stop, late = await before(state, "refund")
    if stop:
        return stop
    with state.lock:  # re-entrant: the key check and the store are one atomic step
        digest, seen = state.idempotent(idempotency_key, body.model_dump())
        if seen == "mismatch":
            return _key_reused()
        if seen is not None:
            document = state.refunds[seen]
        else:
            intent_id = state.by_transaction.get(body.transaction_ref)
            intent = state.intents.get(intent_id) if intent_id else None
            if intent is None:
                return problem(404, "transaction_not_found", "No such transaction.")
            if intent.status != "captured":
                return problem(409, "not_captured", "Only a captured payment can be refunded.")
            if body.currency != intent.currency:
                return problem(422, "currency_mismatch", "Refund in the payment's currency.")
            if intent.refunded_minor + body.amount_minor > intent.amount_minor:
                return problem(
                    422, "refund_exceeds_capture", "Refunds would exceed the captured amount."
                )
            intent.refunded_minor += body.amount_minor
            refund_ref = "DNA-RF-" + secrets.token_hex(6).upper()
            document = {
                "refund_ref": refund_ref,
                "transaction_ref": body.transaction_ref,
                "amount_minor": body.amount_minor,
                "currency": body.currency,
                "reason_code": body.reason_code,
                "status": "succeeded",
                "merchant_reference": body.merchant_reference,
                "method": intent.method,  # always back to the original payment method
                "initiated_by": body.initiated_by,
                "created_at": datetime.now(UTC).isoformat(),
            }
            state.refunds[refund_ref] = document
            if idempotency_key and digest:
                state.idempotency[idempotency_key] = (digest, refund_ref)
    await after(late)
    return JSONResponse(document, status_code=201)
