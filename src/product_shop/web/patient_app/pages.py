"""The patient app preview's pages (spec §10.1): what the care team recommended, buying it on
Integrated Payments' hosted page, and the patient's own orders with tracking and a request to
cancel. Every action calls what the JSON API route calls (the same idempotency, audit and
access rules); nothing here is a second code path.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from product_shop.access.policy import Action, require
from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.outcomes import PaymentFailed
from product_shop.checkout.schemas import CheckoutIn, CheckoutLineIn, DeliveryAddress
from product_shop.core.errors import ProductShopError, Unprocessable
from product_shop.idempotency.store import Claim
from product_shop.orders.queries import OrderFilters
from product_shop.recommendations.schemas import PatientRecommendationOut
from product_shop.refunds.schemas import CancellationIn, CancellationRequestOut
from product_shop.web import checkout_flows as flows
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.idempotency import run_idempotent
from product_shop.web.patient_app.render import PREFIX, page
from product_shop.web.patient_app.site import AppFormDep, AppUserDep
from product_shop.web.portal.auth import PortalUser, public_base
from product_shop.web.portal.forms import whole_number

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 25
ADDRESS_FIELDS = ("recipient_name", "line1", "line2", "city", "postcode")
KEY_PROBLEMS = frozenset(
    {"idempotency_key_required", "idempotency_key_invalid", "idempotency_key_reused"}
)


def _values(user: PortalUser, **values: Any) -> dict[str, Any]:
    return {"actor": user.actor, "csrf_token": user.csrf_token, **values}


@router.get("")
def home(
    request: Request,
    user: AppUserDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    """Recommended by your care team: only what a clinician recommended (spec §4.1: no shop
    front, no retail discovery)."""
    recommendations = context.recommendations.for_patient(session, user.actor).items
    values = {"recommendations": recommendations, "title": "Recommended by your care team"}
    return page(request, "home.html", _values(user, **values))


def _buy_page(
    request: Request,
    user: PortalUser,
    recommendation: PatientRecommendationOut,
    form: FormData | None = None,
    problem: ProductShopError | None = None,
) -> Response:
    fields = (
        {name: str(form.get(name) or "") for name in ("quantity", *ADDRESS_FIELDS)} if form else {}
    )
    values = {
        "recommendation": recommendation,
        "product": recommendation.product,
        "drop_ship": recommendation.product.fulfilment_type == FulfilmentType.DROP_SHIP,
        "fields": fields,
        "idempotency_key": _key_for(form, problem),
        "problem": problem,
    }
    status = problem.status if problem else 200
    return page(request, "buy.html", _values(user, **values), status=status)


def _key_for(form: FormData | None, problem: ProductShopError | None) -> str:
    """A new key per form shown, kept when the form comes back with a problem: sending the same
    form twice buys once (the API's idempotency). A fresh one when the key itself was the
    problem (missing, or already used for other details after going back and changing them)."""
    sent = form.get("idempotency_key") if form else None
    if isinstance(sent, str) and sent and not (problem and problem.code in KEY_PROBLEMS):
        return sent
    return str(uuid.uuid4())


@router.get("/recommendations/{recommendation_id}/buy")
def buy_form(
    request: Request,
    recommendation_id: uuid.UUID,
    user: AppUserDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    recommendation = context.recommendations.one_for_patient(session, user.actor, recommendation_id)
    return _buy_page(request, user, recommendation)


def _checkout_in(
    form: FormData,
    product_id: uuid.UUID,
    recommendation_id: uuid.UUID,
    *,
    drop_ship: bool,
    return_url: str,
) -> CheckoutIn:
    quantity = whole_number(str(form.get("quantity") or "1"))
    if quantity is None:
        raise Unprocessable("Enter how many you want, as a number.", code="validation_failed")
    address = None
    if drop_ship:
        given = {name: str(form.get(name) or "").strip() for name in ADDRESS_FIELDS}
        try:
            address = DeliveryAddress(**{k: v for k, v in given.items() if v})
        except ValidationError as exc:
            raise Unprocessable(
                "Enter the delivery address: name, first line, town or city and postcode.",
                code="validation_failed",
            ) from exc
    try:
        return CheckoutIn(
            lines=[
                CheckoutLineIn(
                    product_id=product_id,
                    quantity=quantity,
                    recommendation_id=recommendation_id,
                )
            ],
            delivery_address=address,
            return_url=return_url,
        )
    except ValidationError as exc:
        raise Unprocessable(
            "That quantity cannot be bought; enter a smaller number.", code="validation_failed"
        ) from exc


@router.post("/recommendations/{recommendation_id}/buy")
def buy(
    request: Request,
    recommendation_id: uuid.UUID,
    user: AppUserDep,
    form: AppFormDep,
    context: ContextDep,
) -> Response:
    """Start the checkout as `POST /v1/checkouts` does (its Idempotency-Key from the form),
    then send the browser to Integrated Payments' hosted page, which sends it back to
    `/app/checkouts/return`."""
    actor = user.actor
    with context.database.reading() as session:
        recommendation = context.recommendations.one_for_patient(session, actor, recommendation_id)
    try:
        require(actor, Action.CHECKOUT)
        body = _checkout_in(
            form,
            recommendation.product.product_id,
            recommendation_id,
            drop_ship=recommendation.product.fulfilment_type == FulfilmentType.DROP_SHIP,
            return_url=f"{public_base(request, context)}{PREFIX}/checkouts/return",
        )
        key = str(form.get("idempotency_key") or "") or None

        start = flows.CheckoutStart(context, actor, body)
        answer = run_idempotent(
            context, actor, key, "POST /v1/checkouts", body, start.create, prepare=start.price
        )
    except ProductShopError as exc:
        if exc.code == "idempotency_key_reused":
            exc = Unprocessable(
                "You changed the details after starting to pay. Check them and continue again.",
                code=exc.code,
            )
        return _buy_page(request, user, recommendation, form, exc)
    checkout = json.loads(bytes(answer.body))
    payment = checkout.get("payment") or {}
    if not payment.get("payment_url"):
        # Points checkouts open their payment later; the app preview does not redeem points.
        return RedirectResponse(f"{PREFIX}/orders", status_code=303)
    return RedirectResponse(payment["payment_url"], status_code=303)


@router.get("/checkouts/return")
def payment_return(
    request: Request,
    user: AppUserDep,
    context: ContextDep,
    merchant_reference: Annotated[uuid.UUID, Query()],
) -> Response:
    """Back from the hosted page: complete the checkout as `POST /v1/checkouts/{id}/complete`
    does (the capture confirmed with Integrated Payments, never taken from this address), then
    the order. `merchant_reference` is the checkout id the intent was opened for."""
    try:
        order = flows.complete_for_patient(context, user.actor, merchant_reference)
    except PaymentFailed as exc:
        # Spec §5.2, §15.2: the patient is offered a retry through Integrated Payments' page.
        values = _values(
            user, checkout_id=merchant_reference, failure_code=exc.extra.get("failure_code")
        )
        return page(request, "payment_failed.html", values, status=exc.status)
    return RedirectResponse(f"{PREFIX}/orders/{order.order_id}?saved=order", status_code=303)


@router.post("/checkouts/{checkout_id}/retry")
def retry_payment(
    checkout_id: uuid.UUID,
    user: AppUserDep,
    form: AppFormDep,
    context: ContextDep,
) -> Response:
    """A new payment page for a checkout whose payment failed, as `POST
    /v1/checkouts/{id}/retry` (the previous page is closed first); the browser goes to it."""
    checkout = flows.retry_checkout(context, user.actor, checkout_id)
    if checkout.payment is None or not checkout.payment.payment_url:
        return RedirectResponse(f"{PREFIX}/orders", status_code=303)
    return RedirectResponse(checkout.payment.payment_url, status_code=303)


@router.get("/orders")
def orders(
    request: Request,
    user: AppUserDep,
    session: SessionDep,
    context: ContextDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    found = context.orders.list_orders(
        session, user.actor, OrderFilters(), limit=PAGE_SIZE, cursor=cursor, own=True
    )
    return page(request, "orders.html", _values(user, page=found))


def _order_page(
    request: Request,
    user: PortalUser,
    session: Session,
    context: Any,
    order_id: uuid.UUID,
    *,
    cancellation: CancellationRequestOut | None = None,
    saved: str | None = None,
    problem: ProductShopError | None = None,
    reason: str = "",
) -> Response:
    order = context.orders.read_order(session, user.actor, order_id)
    values = {
        "order": order,
        "cancellation": cancellation,
        "saved": saved,
        "problem": problem,
        "reason": reason,
        "idempotency_key": str(uuid.uuid4()),
    }
    status = problem.status if problem else 200
    return page(request, "order.html", _values(user, **values), status=status)


@router.get("/orders/{order_id}")
def order(
    request: Request,
    order_id: uuid.UUID,
    user: AppUserDep,
    session: SessionDep,
    context: ContextDep,
    saved: Annotated[str | None, Query(max_length=40)] = None,
    request_id: Annotated[uuid.UUID | None, Query(alias="request")] = None,
) -> Response:
    cancellation = None
    if request_id is not None:
        cancellation = context.cancellations.get(session, user.actor, request_id)
        if cancellation.order_id != order_id:
            cancellation = None
    return _order_page(
        request, user, session, context, order_id, cancellation=cancellation, saved=saved
    )


@router.post("/orders/{order_id}/cancellation")
def ask_to_cancel(
    request: Request,
    order_id: uuid.UUID,
    user: AppUserDep,
    form: AppFormDep,
    context: ContextDep,
) -> Response:
    """Ask to cancel (distance selling), as `POST /v1/orders/{id}/cancellation-requests`
    does: a task for the practice's staff; nothing is refunded by this."""
    actor = user.actor
    reason = str(form.get("reason") or "").strip()
    try:
        require(actor, Action.REQUEST_CANCELLATION)
        try:
            body = CancellationIn(reason=reason or None)
        except ValidationError as exc:
            raise Unprocessable(
                "The reason is too long or holds characters that cannot be kept.",
                code="validation_failed",
            ) from exc

        def create(claim: Claim) -> tuple[CancellationRequestOut, str]:
            def work(session: Session) -> CancellationRequestOut:
                made = context.cancellations.request(session, actor, order_id, body)
                location = f"/v1/cancellation-requests/{made.request_id}"
                context.idempotency.complete(
                    session, claim, 201, made.model_dump(mode="json"), location
                )
                return made

            made = context.database.run(work)
            return made, f"/v1/cancellation-requests/{made.request_id}"

        key = str(form.get("idempotency_key") or "") or None
        operation = f"POST /v1/orders/{order_id}/cancellation-requests"
        answer = run_idempotent(context, actor, key, operation, body, create)
    except ProductShopError as exc:
        with context.database.reading() as session:
            return _order_page(
                request, user, session, context, order_id, problem=exc, reason=reason
            )
    made_id = json.loads(bytes(answer.body))["request_id"]
    target = f"{PREFIX}/orders/{order_id}?saved=cancellation&request={made_id}"
    return RedirectResponse(target, status_code=303)
