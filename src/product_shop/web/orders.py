"""Order routes: the patient's own orders, the practice's orders for staff, one order."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.catalogue.model import FulfilmentType
from product_shop.core.moments import Timestamp
from product_shop.orders.model import OrderStatus
from product_shop.orders.queries import OrderFilters, order_document
from product_shop.orders.schemas import AnyOrderOut, OrderOut, OrderPage, PmsInvoiceRefIn
from product_shop.web.deps import ActorDep, ContextDep, IfMatchDep, SessionDep, permitted
from product_shop.web.docs import response_headers
from product_shop.web.problems import problem_responses
from product_shop.web.responses import model_response

router = APIRouter(prefix="/v1", tags=["orders"])

Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="next_cursor of the previous page")
]


@router.get(
    "/orders/{order_id}",
    operation_id="getOrder",
    response_model=AnyOrderOut,
    summary="One order: the patient who owns it (patient view), or staff of its practice",
    description=(
        "Patients get `view: patient` (what happened and when, as `timeline`); staff of the "
        "practice get `view: staff`, which adds the audit trail, the PMS invoice reference and "
        "the `version` (also the ETag, for If-Match on writes)."
    ),
    responses={**problem_responses(401, 403, 404, 422), 200: response_headers("ETag")},
)
def get_order(
    order_id: uuid.UUID, actor: ActorDep, session: SessionDep, context: ContextDep
) -> Response:
    order = context.orders.read_order(session, actor, order_id)
    headers = {"ETag": f'"{order.version}"'} if isinstance(order, OrderOut) else None
    return model_response(order, headers=headers)


@router.get(
    "/me/orders",
    operation_id="listMyOrders",
    response_model=OrderPage,
    summary="The patient's own orders, newest first",
    responses=problem_responses(400, 401, 403, 422),
)
def my_orders(
    actor: ActorDep,
    session: SessionDep,
    context: ContextDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> OrderPage:
    return context.orders.list_orders(
        session, actor, OrderFilters(), limit=limit, cursor=cursor, own=True
    )


@router.get(
    "/orders",
    operation_id="listPracticeOrders",
    response_model=OrderPage,
    summary="The practice's orders (practice admin, clinician), filtered and paginated",
    responses=problem_responses(400, 401, 403, 422),
)
def practice_orders(
    actor: ActorDep,
    session: SessionDep,
    context: ContextDep,
    status: OrderStatus | None = None,
    created_from: Annotated[
        Timestamp | None, Query(description="Inclusive, ISO 8601 with a time zone")
    ] = None,
    created_to: Annotated[
        Timestamp | None, Query(description="Exclusive, ISO 8601 with a time zone")
    ] = None,
    fulfilment_type: FulfilmentType | None = None,
    patient_id: uuid.UUID | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> OrderPage:
    filters = OrderFilters(
        status=status,
        created_from=created_from,
        created_to=created_to,
        fulfilment_type=fulfilment_type,
        patient_id=patient_id,
    )
    return context.orders.list_orders(
        session, actor, filters, limit=limit, cursor=cursor, own=False
    )


@router.put(
    "/orders/{order_id}/pms-invoice-ref",
    operation_id="setPmsInvoiceRef",
    response_model=OrderOut,
    summary="Record (or clear) the optional PMS invoice reference; nothing is written to any PMS",
    responses={**problem_responses(400, 401, 403, 404, 412, 422), 200: response_headers("ETag")},
)
def set_pms_invoice_ref(
    order_id: uuid.UUID,
    body: PmsInvoiceRefIn,
    actor: Annotated[Actor, Depends(permitted(Action.SET_PMS_INVOICE_REF))],
    context: ContextDep,
    expected_version: IfMatchDep,
) -> Response:
    def work(session: Session) -> OrderOut:
        order = context.orders.set_pms_invoice_ref(
            session, actor, order_id, body.pms_invoice_ref, expected_version=expected_version
        )
        session.flush()
        return order_document(session, order)

    document = context.database.run(work)  # a deadlock or serialization failure is retried
    return model_response(document, headers={"ETag": f'"{document.version}"'})
