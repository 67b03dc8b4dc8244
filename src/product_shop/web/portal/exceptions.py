"""Portal pages for what needs a person (spec §5.3, §15.4): payment exceptions (captures that
made no order, to refund) and the patients' cancellation requests (tasks for staff).

Each list reads what its API route reads (`GET /v1/payment-exceptions`,
`GET /v1/cancellation-requests`), with the same permission and practice scope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from product_shop.access.policy import Action, allowed, require
from product_shop.core.errors import BadRequest
from product_shop.refunds import queries
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.portal.auth import PortalUserDep
from product_shop.web.portal.render import PREFIX, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 25
CANCELLATION_STATUSES = ("open", "refunded", "closed")
Cursor = Annotated[str | None, Query(max_length=200)]


@router.get("/payment-exceptions")
def payment_exceptions(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    include_refunded: Annotated[str | None, Query(max_length=8)] = None,
    cursor: Cursor = None,
) -> Response:
    require(user.actor, Action.VIEW_REFUNDS)
    everything = include_refunded in ("1", "true", "on")
    found = queries.list_payment_exceptions(
        session, user.actor, include_refunded=everything, limit=PAGE_SIZE, cursor=cursor or None
    )
    query = {"include_refunded": "1"} if everything else {}
    return page(
        request,
        "payment_exceptions.html",
        {
            "exceptions": found.items,
            "next_cursor": found.next_cursor,
            "include_refunded": everything,
            "query": query,
        },
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


@router.get("/cancellations")
def cancellations(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    status: Annotated[str | None, Query(max_length=16)] = "open",
    cursor: Cursor = None,
) -> Response:
    require(user.actor, Action.VIEW_CANCELLATION_REQUESTS)
    if status and status not in CANCELLATION_STATUSES:
        raise BadRequest("Unknown cancellation request status.", code="invalid_filter")
    found = context.cancellations.list_requests(
        session, user.actor, status=status or None, limit=PAGE_SIZE, cursor=cursor or None
    )
    return page(
        request,
        "cancellations.html",
        {
            "requests": found.items,
            "status": status or "",
            "statuses": CANCELLATION_STATUSES,
            "next_cursor": found.next_cursor,
            "query": {"status": status or ""},
            "link_orders": allowed(user.actor, Action.VIEW_PRACTICE_ORDERS),
        },
        actor=user.actor,
        csrf_token=user.csrf_token,
    )
