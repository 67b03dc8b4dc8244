"""Finance's read API (spec §11.2: "order-level revenue and refund data for reconciliation and VAT
reporting"): every practice's orders and refunds in a date range, for the Finance module's
service identity only. JSON pages, or with `Accept: application/x-ndjson` the whole range as
JSON lines read a page at a time. docs/finance-api.md is the contract."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.context import AppContext
from product_shop.core.cursors import decode_cursor
from product_shop.core.moments import Day
from product_shop.db import tenancy
from product_shop.orders.finance import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    STREAM_PAGE,
    FinanceOrderPage,
    FinanceRange,
    FinanceRefundPage,
    Page,
    finance_orders,
    finance_range,
    finance_refunds,
    walk,
)
from product_shop.web.deps import ContextDep, SessionDep, permitted, tenant_scope
from product_shop.web.problems import problem_responses
from product_shop.web.responses import model_response

router = APIRouter(prefix="/v1", tags=["finance"])

NDJSON = "application/x-ndjson"
FinanceService = Annotated[Actor, Depends(permitted(Action.READ_FINANCE_DATA))]
DateFrom = Annotated[
    Day, Query(alias="from", description="First day of the range (UTC), inclusive: YYYY-MM-DD")
]
DateTo = Annotated[
    Day,
    Query(
        alias="to",
        description="Last day of the range (UTC), inclusive: YYYY-MM-DD; at most 366 days in all",
    ),
]
PracticeFilter = Annotated[
    uuid.UUID | None, Query(description="Only this practice's rows (default: every practice)")
]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description="Page size (JSON pages; the stream ignores it)")
]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="next_cursor of the previous page (JSON or stream)"),
]
Accept = Annotated[
    str | None,
    Header(description=f"`{NDJSON}` streams the whole range as JSON lines; otherwise JSON pages"),
]


def _streamed(accept: str | None) -> bool:
    return accept is not None and NDJSON in accept.lower()


def _ok(description: str) -> dict[int | str, dict[str, object]]:
    return {
        200: {
            "description": description,
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **problem_responses(400, 401, 403, 422),
    }


def _stream(
    context: AppContext,
    actor: Actor,
    read_page: Callable[[Session, str | None], Page],
    cursor: str | None,
) -> StreamingResponse:
    """The range from `cursor` on as JSON lines, each page read in a unit of work of its own
    under the caller's tenant scope (set per page: the stream's chunks are produced on pool
    threads after the route has returned)."""
    if cursor is not None:
        decode_cursor(cursor)  # a bad cursor is a 400 now, not a broken stream later
    scope = tenant_scope(actor)

    def page_at(position: str | None) -> Page:
        with tenancy.scoped(scope), context.database.unit_of_work() as session:
            return read_page(session, position)

    def lines() -> Iterator[bytes]:
        for page in walk(page_at, cursor):
            chunk = b"".join(item.model_dump_json().encode() + b"\n" for item in page.items)
            if chunk:
                yield chunk

    return StreamingResponse(lines(), media_type=NDJSON)


def _audited_orders(
    context: AppContext,
    session: Session,
    actor: Actor,
    window: FinanceRange,
    page: FinanceOrderPage,
) -> FinanceOrderPage:
    """Spec §8: a read of patient-bound order records is logged (which orders, who, the range)."""
    context.orders.record_read(
        session,
        actor,
        order_ids=[item.order_id for item in page.items],
        action="finance.orders_read",
        practice_id=window.practice_id,
        details={"range": window.details()},
    )
    return page


@router.get(
    "/finance/orders",
    operation_id="listFinanceOrders",
    response_model=FinanceOrderPage,
    summary="Orders placed in a date range, every practice or one (the Finance module only)",
    description=(
        "One item per order whose `created_at` falls on a day from `from` to `to` (UTC, both "
        "inclusive), oldest first by (`created_at`, `order_id`), keyset-paginated. With "
        f"`Accept: {NDJSON}` the whole range (from `cursor`, if given) is one stream of JSON "
        "lines, one item per line. Ids, amounts and payment references only: no personal "
        "data. The read is audited. docs/finance-api.md."
    ),
    responses=_ok("A page of orders (JSON), or every order of the range as JSON lines"),
)
def list_finance_orders(
    actor: FinanceService,
    session: SessionDep,
    context: ContextDep,
    date_from: DateFrom,
    date_to: DateTo,
    practice_id: PracticeFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    accept: Accept = None,
) -> Response:
    window = finance_range(date_from, date_to, practice_id)
    if _streamed(accept):

        def read(page_session: Session, position: str | None) -> FinanceOrderPage:
            page = finance_orders(page_session, actor, window, limit=STREAM_PAGE, cursor=position)
            return _audited_orders(context, page_session, actor, window, page)

        return _stream(context, actor, read, cursor)
    page = finance_orders(session, actor, window, limit=limit, cursor=cursor)
    return model_response(_audited_orders(context, session, actor, window, page))


@router.get(
    "/finance/refunds",
    operation_id="listFinanceRefunds",
    response_model=FinanceRefundPage,
    summary="Refunds initiated in a date range, every practice or one (the Finance module only)",
    description=(
        "One item per refund (of an order or of a payment exception; pending, succeeded or "
        "failed) whose `initiated_at` falls on a day from `from` to `to` (UTC, both "
        "inclusive), oldest first by (`initiated_at`, `refund_id`), keyset-paginated. With "
        f"`Accept: {NDJSON}` the whole range (from `cursor`, if given) is one stream of JSON "
        "lines. Ids, amounts and references only: no notes or names. docs/finance-api.md."
    ),
    responses=_ok("A page of refunds (JSON), or every refund of the range as JSON lines"),
)
def list_finance_refunds(
    actor: FinanceService,
    session: SessionDep,
    context: ContextDep,
    date_from: DateFrom,
    date_to: DateTo,
    practice_id: PracticeFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    accept: Accept = None,
) -> Response:
    window = finance_range(date_from, date_to, practice_id)
    if _streamed(accept):

        def read(page_session: Session, position: str | None) -> FinanceRefundPage:
            return finance_refunds(page_session, actor, window, limit=STREAM_PAGE, cursor=position)

        return _stream(context, actor, read, cursor)
    return model_response(finance_refunds(session, actor, window, limit=limit, cursor=cursor))
