"""Portal pages for fulfilment (spec §6, §10.2): the practice's open exceptions and in-clinic
collections, each line moved by a small form, and voucher redemption at the desk.

Every action goes through the API's own service calls (`web/fulfilment.py`): a line's move is
`update_line` in its own unit of work, a voucher `redeem_voucher`, so the transition table,
audit, notifications and the practice's isolation hold unchanged. A move the table refuses
comes back to the page with the problem shown, nothing changed.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from product_shop.access.isolation import scoped
from product_shop.access.policy import Action, allowed, require
from product_shop.catalogue.tables import PracticeProductSetting
from product_shop.core.errors import BadRequest, ProductShopError
from product_shop.fulfilment.schemas import FulfilmentUpdateIn, QueueItem, VoucherRedemptionIn
from product_shop.orders.tables import Order, OrderLine, Voucher
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.portal.auth import FormDep, PortalUser, PortalUserDep
from product_shop.web.portal.render import PREFIX, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 25
Cursor = Annotated[str | None, Query(max_length=200)]

# What the page says after each kind of save (`?saved=`); anything else is a plain "Saved."
SAVED = {
    "sent_to_supplier": "Sent to the supplier network again; the line is back in the queue "
    "if the supplier refuses it.",
    "delivered": "Marked delivered.",
    "exception": "Left for a refund: the exception has left the queue.",
    "ready_for_collection": "Marked ready for collection; the patient is told.",
    "collected": "Marked collected.",
    "voucher": "Voucher redeemed.",
}


def _stock_flags(
    session: Session, user: PortalUser, items: list[QueueItem]
) -> dict[uuid.UUID, bool]:
    """The practice's in-clinic stock flag for the products on the page, in one query."""
    product_ids = {item.product_id for item in items}
    if not product_ids:
        return {}
    rows = session.execute(
        select(
            PracticeProductSetting.product_id, PracticeProductSetting.in_clinic_stock_available
        ).where(
            scoped(PracticeProductSetting.practice_id, user.actor.practice_id),
            PracticeProductSetting.product_id.in_(product_ids),
        )
    ).all()
    return {product_id: bool(stock) for product_id, stock in rows}


def _redeemed(session: Session, user: PortalUser, voucher_id: str | None) -> dict[str, Any] | None:
    """What a redemption just took (its product, last four, when), for the notice after the
    redirect; only a redeemed voucher of the caller's practice."""
    try:
        wanted = uuid.UUID(voucher_id) if voucher_id else None
    except ValueError:
        return None
    if wanted is None:
        return None
    row = session.execute(
        select(OrderLine.product_name, Voucher.last_four, Voucher.redeemed_at, Voucher.order_id)
        .join(OrderLine, OrderLine.line_item_id == Voucher.line_item_id)
        .join(Order, Order.order_id == Voucher.order_id)
        .where(
            Voucher.voucher_id == wanted,
            Voucher.redeemed_at.is_not(None),
            scoped(Order.practice_id, user.actor.practice_id),
        )
    ).first()
    if row is None:
        return None
    return {
        "product_name": row.product_name,
        "last_four": row.last_four,
        "redeemed_at": row.redeemed_at,
        "order_id": row.order_id,
    }


def _paging(
    cursors: dict[str, str | None], exceptions_next: str | None, collections_next: str | None
) -> dict[str, dict[str, str]]:
    """The query of each paging link: one queue moves, the other stays where it is."""

    def query(**changed: str | None) -> dict[str, str]:
        return {k: v for k, v in {**cursors, **changed}.items() if v}

    return {
        "exceptions_first": query(exceptions_cursor=None),
        "exceptions_next": query(exceptions_cursor=exceptions_next),
        "collections_first": query(collections_cursor=None),
        "collections_next": query(collections_cursor=collections_next),
    }


def _queues_page(
    request: Request,
    user: PortalUser,
    session: Session,
    context: ContextDep,
    *,
    exceptions_cursor: str | None = None,
    collections_cursor: str | None = None,
    saved: str | None = None,
    voucher: str | None = None,
    problem: ProductShopError | None = None,
) -> Response:
    require(user.actor, Action.MANAGE_FULFILMENT)
    exceptions = context.fulfilment.exceptions(
        session, user.actor, limit=PAGE_SIZE, cursor=exceptions_cursor or None
    )
    collections = context.fulfilment.collections(
        session, user.actor, limit=PAGE_SIZE, cursor=collections_cursor or None
    )
    cursors = {"exceptions_cursor": exceptions_cursor, "collections_cursor": collections_cursor}
    return page(
        request,
        "fulfilment.html",
        {
            "exceptions": exceptions,
            "collections": collections,
            "stock": _stock_flags(session, user, collections.items),
            **cursors,
            "paging": _paging(cursors, exceptions.next_cursor, collections.next_cursor),
            "saved": (SAVED.get(saved, "Saved.") if saved else None),
            "redeemed": _redeemed(session, user, voucher) if saved == "voucher" else None,
            "problem": problem,
            "order_links": allowed(user.actor, Action.VIEW_PRACTICE_ORDERS),
        },
        status=problem.status if problem else 200,
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


def _shown_on_the_form(problem: ProductShopError) -> bool:
    """A problem the person can act on from the page (a refused move, a used voucher); the
    others (not signed in, not allowed, not this practice's line, a fault) are problem pages."""
    return problem.status < 500 and problem.status not in (401, 403, 404)


@router.get("/fulfilment")
def fulfilment_page(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    exceptions_cursor: Cursor = None,
    collections_cursor: Cursor = None,
    saved: Annotated[str | None, Query(max_length=40)] = None,
    voucher: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return _queues_page(
        request,
        user,
        session,
        context,
        exceptions_cursor=exceptions_cursor,
        collections_cursor=collections_cursor,
        saved=saved,
        voucher=voucher,
    )


def update_body(form: FormData) -> FulfilmentUpdateIn:
    """The form's `status` (and `resolution`) as the API's body; its own rules apply."""
    raw: dict[str, Any] = {}
    for name in ("status", "resolution"):
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            raw[name] = value.strip()
    try:
        return FulfilmentUpdateIn.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(
            "That is not a move this line can be given from here.", code="validation_failed"
        ) from exc


@router.post("/fulfilment/orders/{order_id}/lines/{line_item_id}")
def move_line(
    request: Request,
    order_id: uuid.UUID,
    line_item_id: uuid.UUID,
    user: PortalUserDep,
    form: FormDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    require(user.actor, Action.MANAGE_FULFILMENT)
    actor = user.actor
    try:
        body = update_body(form)

        def work(unit: Session) -> None:
            context.fulfilment.update_line(unit, actor, order_id, line_item_id, body)
            unit.flush()

        context.database.run(work)
    except ProductShopError as exc:
        if not _shown_on_the_form(exc):
            raise
        return _queues_page(request, user, session, context, problem=exc)
    return RedirectResponse(f"{PREFIX}/fulfilment?saved={body.status.value}", status_code=303)


@router.post("/fulfilment/vouchers")
def redeem_voucher(
    request: Request,
    user: PortalUserDep,
    form: FormDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    require(user.actor, Action.MANAGE_FULFILMENT)
    actor = user.actor
    code = form.get("code")
    try:
        try:
            body = VoucherRedemptionIn.model_validate(
                {"code": code if isinstance(code, str) else ""}
            )
        except ValidationError as exc:
            raise BadRequest(
                "Enter the voucher code as the patient shows it (8 to 40 characters).",
                code="validation_failed",
            ) from exc
        redeemed = context.database.run(
            lambda unit: context.fulfilment.redeem_voucher(unit, actor, body)
        )
    except ProductShopError as exc:
        # An unknown code is the person's to correct here, not a missing page.
        if exc.status != 404 and not _shown_on_the_form(exc):
            raise
        return _queues_page(request, user, session, context, problem=exc)
    return RedirectResponse(
        f"{PREFIX}/fulfilment?saved=voucher&voucher={redeemed.voucher_id}", status_code=303
    )
