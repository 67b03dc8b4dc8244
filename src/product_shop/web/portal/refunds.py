"""Portal pages for refunds (spec §5.3, §9, §15.4): start a refund from an order (the remaining
balance, an amount, or lines; a reason code from Integrated Payments' set; a note), and the
practice's refund list with its filters and CSV export.

A refund goes through the API's own request path (`web/refunds.py refund_request`: the same
Idempotency-Key handling, service, audit and MFA rule). The form carries a key of its own, so a
double submit refunds once. When the session's MFA is not fresh, the form is kept in the
session, the browser goes through Access Manager's step-up, and comes back to the form filled
in as it was left.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from product_shop.access import sessions
from product_shop.access.policy import Action, allowed, require
from product_shop.core.errors import BadRequest, Forbidden, ProductShopError
from product_shop.refunds import queries
from product_shop.refunds.schemas import RefundIn
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.portal.auth import FormDep, PortalUser, PortalUserDep
from product_shop.web.portal.forms import day, minor_units, whole_number
from product_shop.web.portal.render import PREFIX, page
from product_shop.web.refunds import refund_request

router = APIRouter(prefix=PREFIX, include_in_schema=False)

FIELDS = ("mode", "amount", "reason_code", "note", "idempotency_key")


def _fields(form: FormData) -> dict[str, str]:
    """The form as entered (strings only), for re-showing it and keeping it across MFA."""
    kept = {name: form.get(name) for name in FIELDS}
    kept.update({k: v for k, v in form.items() if k.startswith("qty_")})
    return {k: v for k, v in kept.items() if isinstance(v, str)}


def refund_body(fields: dict[str, str]) -> RefundIn:
    mode = fields.get("mode", "balance")
    raw: dict[str, Any] = {"reason_code": fields.get("reason_code") or None}
    if fields.get("note", "").strip():
        raw["note"] = fields["note"].strip()
    if mode == "amount":
        raw["amount_minor"] = minor_units(
            fields.get("amount", ""), help_text="Enter the amount in pounds and pence, e.g. 12.50."
        )
    elif mode == "lines":
        lines = []
        for name, value in fields.items():
            if name.startswith("qty_") and value.strip() not in ("", "0"):
                quantity = whole_number(value)
                if quantity is None:
                    raise BadRequest("Quantities are whole numbers.", code="invalid_input")
                lines.append({"line_item_id": name[4:], "quantity": quantity})
        if not lines:
            raise BadRequest("Choose at least one line to refund.", code="invalid_input")
        raw["lines"] = lines
    elif mode != "balance":
        raise BadRequest("Choose what to refund.", code="invalid_input")
    try:
        return RefundIn.model_validate(raw)
    except ValidationError as exc:
        problems = {str(e["loc"][0]) if e["loc"] else "form" for e in exc.errors()}
        raise BadRequest(
            "Check the refund: " + ", ".join(sorted(problems)).replace("_", " ") + ".",
            code="validation_failed",
        ) from exc


def _may_refund(user: PortalUser, context: ContextDep) -> None:
    """The role check without the MFA one (that is asked for at submit)."""
    require(user.actor, Action.INITIATE_REFUND)
    if user.actor.role.value not in context.settings.refund_roles:
        raise Forbidden(f"The role '{user.actor.role.value}' may not refund at this practice.")


def _form_page(
    request: Request,
    user: PortalUser,
    session: SessionDep,
    context: ContextDep,
    order_id: uuid.UUID,
    fields: dict[str, str],
    *,
    problem: ProductShopError | None = None,
    resumed: bool = False,
) -> Response:
    order = context.orders.read_for_refund(session, user.actor, order_id)
    return page(
        request,
        "refund_form.html",
        {
            "order": order,
            "reasons": context.refunds.reasons.all(),
            "fields": fields,
            "problem": problem,
            "resumed": resumed,
        },
        status=problem.status if problem else 200,
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


@router.get("/orders/{order_id}/refund")
def refund_form(
    request: Request,
    order_id: uuid.UUID,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    resume: bool = False,
) -> Response:
    _may_refund(user, context)
    target = f"{PREFIX}/orders/{order_id}/refund"
    pending = user.pending or {}
    if resume and pending.get("target") == target:
        fields = dict(pending.get("fields") or {})
    else:
        resume = False
        fields = {"mode": "balance", "idempotency_key": str(uuid.uuid4())}
    return _form_page(request, user, session, context, order_id, fields, resumed=resume)


@router.post("/orders/{order_id}/refund")
def submit_refund(
    request: Request,
    order_id: uuid.UUID,
    user: PortalUserDep,
    form: FormDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    _may_refund(user, context)
    fields = _fields(form)
    target = f"{PREFIX}/orders/{order_id}/refund"
    try:
        body = refund_body(fields)
        context.refunds.authorise(user.actor)
    except Forbidden as exc:
        if exc.code != "mfa_required":
            raise
        with context.database.unit_of_work() as kept:
            sessions.keep_pending(kept, user.session_token, {"target": target, "fields": fields})
        next_path = quote(f"{target}?resume=1")
        return RedirectResponse(f"{PREFIX}/login?stepup=1&next={next_path}", status_code=303)
    except BadRequest as exc:
        return _form_page(request, user, session, context, order_id, fields, problem=exc)
    key = fields.get("idempotency_key") or None
    try:
        refund_request(
            context,
            user.actor,
            key,
            f"POST /v1/orders/{order_id}/refunds",
            body,
            lambda unit, codes: context.refunds.reserve_order_refund(
                unit, user.actor, order_id, body, codes
            ),
        )
    except ProductShopError as exc:
        if exc.status >= 500 or exc.status in (401, 403, 404):
            raise
        return _form_page(request, user, session, context, order_id, fields, problem=exc)
    with context.database.unit_of_work() as kept:
        sessions.keep_pending(kept, user.session_token, None)
    if allowed(user.actor, Action.VIEW_PRACTICE_ORDERS):
        return RedirectResponse(f"{PREFIX}/orders/{order_id}?saved=refund", status_code=303)
    return RedirectResponse(f"{PREFIX}/refunds?saved=refund", status_code=303)  # finance


Text = Annotated[str | None, Query(max_length=64)]


def refund_filters(
    date_from: Text, date_to: Text, reason_code: Text, initiated_by: Text, status: Text
) -> queries.RefundFilters:
    if status and status not in ("pending", "succeeded", "failed"):
        raise BadRequest("Unknown refund status.", code="invalid_filter")
    if reason_code and not re.fullmatch(r"[a-z0-9_]+", reason_code):
        raise BadRequest("Unknown reason code.", code="invalid_filter")
    return queries.RefundFilters(
        date_from=day(date_from, "from"),
        date_to=day(date_to, "to"),
        reason_code=reason_code or None,
        initiated_by=(initiated_by or "").strip() or None,
        status=status or None,
    )


@router.get("/refunds/start")
def start_refund(
    user: PortalUserDep,
    context: ContextDep,
    order_id: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """The refunds page's "refund an order" box: to that order's refund form (finance reach
    orders by their id, from a patient's request or a statement, not by browsing them)."""
    _may_refund(user, context)
    try:
        target = uuid.UUID(order_id.strip())
    except ValueError as exc:
        raise BadRequest(
            "Enter the order's id, as shown on its receipt.", code="invalid_input"
        ) from exc
    return RedirectResponse(f"{PREFIX}/orders/{target}/refund", status_code=303)


@router.get("/refunds")
def refund_list(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    date_from: Text = None,
    date_to: Text = None,
    reason_code: Text = None,
    initiated_by: Text = None,
    status: Text = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    saved: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    entered = {
        "date_from": date_from or "",
        "date_to": date_to or "",
        "reason_code": reason_code or "",
        "initiated_by": initiated_by or "",
        "status": status or "",
    }
    filters = refund_filters(date_from, date_to, reason_code, initiated_by, status)
    refunds = queries.list_refunds(session, user.actor, filters, limit=25, cursor=cursor or None)
    return page(
        request,
        "refunds.html",
        {
            "refunds": refunds.items,
            "next_cursor": refunds.next_cursor,
            "filters": entered,
            "query": {k: v for k, v in entered.items() if v},
            "reasons": context.refunds.reasons.all(),
            "saved": saved,
            # Finance refunds orders without browsing them (spec §9): links go to the refund
            # form for those who may refund, to the order for those who may view it.
            "orders_visible": allowed(user.actor, Action.VIEW_PRACTICE_ORDERS),
            "refund_allowed": allowed(user.actor, Action.INITIATE_REFUND)
            and user.actor.role.value in context.settings.refund_roles,
        },
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


@router.get("/refunds.csv")
def refund_csv(
    user: PortalUserDep,
    session: SessionDep,
    date_from: Text = None,
    date_to: Text = None,
    reason_code: Text = None,
    initiated_by: Text = None,
    status: Text = None,
) -> Response:
    filters = refund_filters(date_from, date_to, reason_code, initiated_by, status)
    return Response(
        queries.refunds_csv(queries.all_refunds(session, user.actor, filters)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="refunds.csv"'},
    )
