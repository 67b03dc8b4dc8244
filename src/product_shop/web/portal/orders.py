"""Portal pages for orders (spec §10.2, §15.4): the practice's order list with the spec filters
(status, date range, fulfilment type, patient), paging and CSV export; one order with its lines,
tracking, refunds, audit trail and PMS invoice reference.

Every page calls the same services as the JSON API (`context.orders`), so access rules, audit
and row-level security are the API's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from product_shop.access.policy import Action, allowed
from product_shop.catalogue.model import FulfilmentType
from product_shop.core.csv_export import csv_document
from product_shop.core.errors import BadRequest, PreconditionFailed, ProductShopError
from product_shop.orders.model import OrderStatus
from product_shop.orders.queries import OrderFilters
from product_shop.orders.schemas import OrderOut, OrderSummary, PmsInvoiceRefIn
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.portal.auth import FormDep, PortalUser, PortalUserDep
from product_shop.web.portal.forms import day, form_version
from product_shop.web.portal.render import PREFIX, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 25
# A CSV export reads the matching orders a page at a time, up to this many.
CSV_MAX_ROWS = 10_000
E = TypeVar("E", OrderStatus, FulfilmentType)
Text = Annotated[str | None, Query(max_length=200)]


def _choice(kind: type[E], value: str | None, what: str) -> E | None:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError as exc:
        raise BadRequest(f"{value!r} is not a {what}.", code="invalid_filter") from exc


def order_filters(
    status: Text = None,
    date_from: Text = None,
    date_to: Text = None,
    fulfilment_type: Text = None,
    patient_id: Text = None,
) -> tuple[OrderFilters, dict[str, str]]:
    """The filter form's fields (empty means any) as the service's filters, and as entered.
    Dates are whole UTC days, `to` included."""
    start, end = day(date_from, "from"), day(date_to, "to")
    if start and end and end < start:
        raise BadRequest("The 'to' date is before the 'from' date.", code="invalid_filter")
    patient = None
    if patient_id:
        try:
            patient = uuid.UUID(patient_id.strip())
        except ValueError as exc:
            raise BadRequest("The patient must be a patient id.", code="invalid_filter") from exc
    filters = OrderFilters(
        status=_choice(OrderStatus, status, "known order status"),
        created_from=datetime.combine(start, time.min, UTC) if start else None,
        created_to=datetime.combine(end + timedelta(days=1), time.min, UTC) if end else None,
        fulfilment_type=_choice(FulfilmentType, fulfilment_type, "known fulfilment type"),
        patient_id=patient,
    )
    entered = {
        "status": status or "",
        "date_from": date_from or "",
        "date_to": date_to or "",
        "fulfilment_type": fulfilment_type or "",
        "patient_id": patient_id or "",
    }
    return filters, entered


FiltersDep = Annotated[tuple[OrderFilters, dict[str, str]], Depends(order_filters)]


@router.get("/orders")
def order_list(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    found: FiltersDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    filters, entered = found
    orders = context.orders.list_orders(
        session, user.actor, filters, limit=PAGE_SIZE, cursor=cursor or None, own=False
    )
    query = {k: v for k, v in entered.items() if v}
    return page(
        request,
        "orders.html",
        {
            "orders": orders.items,
            "next_cursor": orders.next_cursor,
            "filters": entered,
            "query": query,
            "statuses": list(OrderStatus),
            "fulfilment_types": list(FulfilmentType),
        },
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


CSV_COLUMNS = (
    "order_id",
    "created_at",
    "patient_id",
    "status",
    "fulfilment_status",
    "refund_status",
    "fulfilment_types",
    "items",
    "currency",
    "total_minor",
)


def _csv_row(order: OrderSummary) -> list[str]:
    items = "; ".join(f"{item.quantity} x {item.name}" for item in order.items)
    return [
        str(order.order_id),
        order.created_at.isoformat(),
        str(order.patient_id),
        order.status.value,
        order.fulfilment_status.value,
        order.refund_status.value,
        " ".join(t.value for t in order.fulfilment_types),
        items,
        order.currency,
        str(order.total_minor),
    ]


@router.get("/orders.csv")
def order_csv(
    user: PortalUserDep, session: SessionDep, context: ContextDep, found: FiltersDep
) -> Response:
    filters, _ = found
    rows: list[list[str]] = []
    cursor: str | None = None
    while len(rows) < CSV_MAX_ROWS:
        batch = context.orders.list_orders(
            session, user.actor, filters, limit=200, cursor=cursor, own=False
        )
        rows.extend(_csv_row(order) for order in batch.items)
        cursor = batch.next_cursor
        if cursor is None:
            break
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    return Response(
        csv_document(CSV_COLUMNS, rows[:CSV_MAX_ROWS]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="orders-{stamp}.csv"'},
    )


def _order_page(
    request: Request,
    user: PortalUser,
    session: SessionDep,
    context: ContextDep,
    order_id: uuid.UUID,
    *,
    saved: str | None = None,
    problem: ProductShopError | None = None,
    pms_entered: str | None = None,
    pms_version: str | None = None,
) -> Response:
    order = context.orders.read_order(session, user.actor, order_id)
    assert isinstance(order, OrderOut)  # staff get the staff view
    stale = isinstance(problem, PreconditionFailed)
    return page(
        request,
        "order.html",
        {
            "order": order,
            "saved": saved,
            "problem": problem,
            # The PMS form shown again after a problem: what was typed, at the version the form
            # was read at (after a 412 the current one: saving again is a deliberate choice).
            "stale": stale,
            "pms_entered": pms_entered,
            "pms_version": str(order.version) if stale or pms_version is None else pms_version,
            "pms_allowed": allowed(user.actor, Action.SET_PMS_INVOICE_REF),
            "refund_allowed": allowed(user.actor, Action.INITIATE_REFUND)
            and user.actor.role.value in context.settings.refund_roles,
        },
        status=problem.status if problem else 200,
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


@router.get("/orders/{order_id}")
def order_page(
    request: Request,
    order_id: uuid.UUID,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    saved: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return _order_page(request, user, session, context, order_id, saved=saved)


@router.post("/orders/{order_id}/pms-invoice-ref")
def set_pms_invoice_ref(
    request: Request,
    order_id: uuid.UUID,
    user: PortalUserDep,
    form: FormDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    raw, version = form.get("pms_invoice_ref"), form.get("version")
    entered = raw if isinstance(raw, str) else ""
    version_text = version if isinstance(version, str) else ""
    try:
        expected = form_version(version_text)
        try:  # the API's own rules for the field
            body = PmsInvoiceRefIn.model_validate({"pms_invoice_ref": entered.strip() or None})
        except ValidationError as exc:
            raise BadRequest(
                "The PMS invoice reference must be 1 to 120 characters of text.",
                code="validation_failed",
            ) from exc
        # As the API's write: its own unit of work, retried on a deadlock; the request's session
        # only reads (the page shown again after a problem).
        context.database.run(
            lambda unit: context.orders.set_pms_invoice_ref(
                unit, user.actor, order_id, body.pms_invoice_ref, expected_version=expected
            )
        )
    except ProductShopError as exc:
        if exc.status >= 500 or exc.status in (401, 403, 404):
            raise
        return _order_page(
            request,
            user,
            session,
            context,
            order_id,
            problem=exc,
            pms_entered=entered,
            pms_version=version_text,
        )
    return RedirectResponse(f"{PREFIX}/orders/{order_id}?saved=pms", status_code=303)
