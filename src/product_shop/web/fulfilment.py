"""Fulfilment routes: staff move lines and work their lists; the supplier network calls back."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.core.errors import BadRequest
from product_shop.fulfilment.schemas import (
    FulfilmentUpdateIn,
    QueuePage,
    VoucherRedemptionIn,
    VoucherRedemptionOut,
)
from product_shop.fulfilment.shipments import parse_update
from product_shop.orders.queries import order_document
from product_shop.orders.schemas import OrderOut
from product_shop.web.deps import ContextDep, SessionDep, permitted
from product_shop.web.docs import response_headers
from product_shop.web.problems import Problem, problem_responses
from product_shop.web.responses import model_response
from product_shop.web.webhooks import (
    SIGNED_JSON_WEBHOOK,
    WEBHOOK_GUARD_RESPONSES,
    verified_message_id,
)

router = APIRouter(prefix="/v1", tags=["fulfilment"])

Staff = Annotated[Actor, Depends(permitted(Action.MANAGE_FULFILMENT))]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="next_cursor of the previous page")
]


@router.post(
    "/orders/{order_id}/lines/{line_item_id}/fulfilment",
    operation_id="updateLineFulfilment",
    response_model=OrderOut,
    summary="Move a line of the practice's order through fulfilment (staff)",
    description=(
        "In-clinic: `preparing` → `ready_for_collection` (the patient is told) → `collected`. "
        "Drop-ship: record or correct tracking by hand (`dispatched` with `carrier` and "
        "`tracking_number`), mark `delivered`, or resolve an `exception`: `sent_to_supplier` "
        "resends it, `delivered`, or `exception` with `resolution: refund`. A move the "
        "transition table does not allow is 409 `invalid_fulfilment_transition`; repeating "
        "the current status changes nothing."
    ),
    responses={
        **problem_responses(400, 401, 403, 404, 409, 422),
        200: response_headers("ETag"),
    },
)
def update_line_fulfilment(
    order_id: uuid.UUID,
    line_item_id: uuid.UUID,
    body: FulfilmentUpdateIn,
    actor: Staff,
    context: ContextDep,
) -> Response:
    def work(session: Session) -> OrderOut:
        order = context.fulfilment.update_line(session, actor, order_id, line_item_id, body)
        session.flush()
        return order_document(session, order)

    document = context.database.run(work)
    return model_response(document, headers={"ETag": f'"{document.version}"'})


@router.get(
    "/fulfilment/exceptions",
    operation_id="listFulfilmentExceptions",
    response_model=QueuePage,
    summary="The practice's open fulfilment exceptions, oldest first (staff)",
    responses=problem_responses(400, 401, 403, 422),
)
def fulfilment_exceptions(
    actor: Staff,
    session: SessionDep,
    context: ContextDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> QueuePage:
    return context.fulfilment.exceptions(session, actor, limit=limit, cursor=cursor)


@router.get(
    "/fulfilment/collections",
    operation_id="listCollections",
    response_model=QueuePage,
    summary="In-clinic lines being prepared or ready for collection, oldest first (staff)",
    responses=problem_responses(400, 401, 403, 422),
)
def collections(
    actor: Staff,
    session: SessionDep,
    context: ContextDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> QueuePage:
    return context.fulfilment.collections(session, actor, limit=limit, cursor=cursor)


@router.post(
    "/vouchers/redemptions",
    operation_id="redeemVoucher",
    response_model=VoucherRedemptionOut,
    summary="Take a patient's digital voucher at the practice (used once; staff)",
    description=(
        "A code of another practice is 404 `voucher_not_found`; a used one 409 `voucher_used`; "
        "a refunded one 409 `voucher_void`. Repeating a redemption is refused, so it is not a "
        "creating POST and takes no Idempotency-Key."
    ),
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
def redeem_voucher(body: VoucherRedemptionIn, actor: Staff, context: ContextDep) -> Response:
    document = context.database.run(
        lambda session: context.fulfilment.redeem_voucher(session, actor, body)
    )
    return model_response(document)


class SupplierWebhookAck(BaseModel):
    status: str


@router.post(
    "/webhooks/suppliers",
    operation_id="receiveSupplierWebhook",
    response_model=SupplierWebhookAck,
    tags=["webhooks"],
    summary="Supplier network shipment updates (Standard Webhooks signature required)",
    description=(
        "Body: `{id, type, created_at, data}` with `data` a shipment update (see "
        "`integrations/suppliers.py`). Deduplicated by event id; an older update (by "
        "`sequence`) changes nothing; an update for an unknown shipment is acknowledged and "
        "recorded for investigation."
    ),
    responses={
        **WEBHOOK_GUARD_RESPONSES,
        400: {"model": Problem, "description": "Not a shipment update (`malformed_webhook`)"},
        401: {"model": Problem, "description": "Invalid signature (`invalid_signature`)"},
    },
    openapi_extra=SIGNED_JSON_WEBHOOK,
)
async def supplier_webhook(request: Request, context: ContextDep) -> JSONResponse:
    body = await request.body()
    message_id = verified_message_id(
        context, context.settings.supplier_webhook_secret, dict(request.headers), body
    )
    try:
        data = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(
            "The webhook body is not a shipment update.", code="malformed_webhook"
        ) from exc
    update = parse_update(data)

    def apply() -> str:
        return context.database.run(
            lambda session: context.supplier_updates.apply(session, message_id, update)
        )

    return JSONResponse({"status": await run_in_threadpool(apply)})
