"""Refund routes (spec §5.3, §9, §15.4): staff refund an order or a payment exception (named,
with fresh MFA), list refunds, read the reason codes; patients ask to cancel an order."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.context import AppContext
from product_shop.core.errors import Unprocessable
from product_shop.core.moments import Day
from product_shop.idempotency.store import Claim
from product_shop.jobs.refund_settlement import Settled
from product_shop.refunds import queries
from product_shop.refunds.pending import PendingRefund
from product_shop.refunds.schemas import (
    CancellationIn,
    CancellationRequestOut,
    CancellationRequestPage,
    ExceptionRefundIn,
    PaymentExceptionOut,
    PaymentExceptionPage,
    RefundIn,
    RefundOut,
    RefundPage,
    RefundReasonList,
    RefundReasonOut,
)
from product_shop.web.deps import ActorDep, ContextDep, SessionDep, permitted
from product_shop.web.idempotency import (
    IDEMPOTENT_CREATE,
    IdempotencyKeyHeader,
    creating_responses,
    run_idempotent,
)
from product_shop.web.problems import problem_responses
from product_shop.web.responses import model_response

router = APIRouter(prefix="/v1", tags=["refunds"])

Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="next_cursor of the previous page")
]
CSV_MEDIA_TYPE = "text/csv"


async def refunder(actor: ActorDep, context: ContextDep) -> Actor:
    """A named staff member whose role may refund and whose MFA is fresh (403, `mfa_required`
    for the step-up), checked before the body is read."""
    context.refunds.authorise(actor)
    return actor


RefunderDep = Annotated[Actor, Depends(refunder)]

REFUND_CREATED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: Integrated Payments has not answered yet; the refund is "
        "`pending` and is settled by reading its status (never refunded twice). Follow "
        "Location.",
        "model": RefundOut,
    }
}


def _refund_answer(settled: Settled) -> RefundOut:
    if settled.rejected is not None:
        raise Unprocessable(
            f"Integrated Payments refused the refund: {settled.rejected.message} Nothing was "
            "refunded.",
            code="refund_rejected",
            payments_code=settled.rejected.code,
            refund_id=str(settled.refund.refund_id),
        )
    return settled.refund


def refund_request(
    context: AppContext,
    actor: Actor,
    idempotency_key: str | None,
    operation: str,
    body: BaseModel,
    reserve: Callable[[Session, frozenset[str]], PendingRefund],
) -> Response:
    """A refund request under its Idempotency-Key (201 made, 202 pending, or the replay)."""
    return run_idempotent(
        context,
        actor,
        idempotency_key,
        operation,
        body,
        lambda claim: _make_refund(context, claim, reserve),
        status_of=_status_of,
    )


def _make_refund(
    context: AppContext,
    claim: Claim,
    reserve: Callable[[Session, frozenset[str]], PendingRefund],
) -> tuple[RefundOut, str]:
    """The steps of a refund request (docs/architecture.md, "Who owns a transaction"): read the
    reason codes (Integrated Payments, cached; nothing open), reserve (`Database.run`), send and
    record with the idempotent response (`jobs/refund_settlement.py`); a refund still pending
    stores its 202 answer in a unit of work of its own."""
    codes = context.refunds.reasons.codes()  # before anything is locked: it may call out

    def reserved(session: Session) -> tuple[PendingRefund, RefundOut]:
        # The key answers "pending" from the moment the refund exists: whatever happens after,
        # a replay finds this refund (settled by the job), never makes a second one. A points
        # refund is made here already (201).
        pending = reserve(session, codes)
        session.flush()
        document = queries.refund_document(session, pending.refund_id)
        context.idempotency.complete(
            session,
            claim,
            201 if pending.settled else 202,
            document.model_dump(mode="json"),
            _location(pending),
        )
        return pending, document

    pending, document = context.database.run(reserved)
    location = _location(pending)
    if pending.settled:
        return document, location

    def store(session: Session, document: RefundOut) -> None:
        context.idempotency.complete(
            session, claim, 201, document.model_dump(mode="json"), location
        )

    settled = context.refund_settlement.send(pending, on_record=store)
    if settled.rejected is not None:  # nothing was refunded: the key is free to try again
        context.database.run(
            lambda session: context.idempotency.release(session, claim, answered=True)
        )
    return _refund_answer(settled), location


def _location(pending: PendingRefund) -> str:
    return f"/v1/refunds/{pending.refund_id}"


def _status_of(model: Any) -> int:
    return 202 if isinstance(model, RefundOut) and model.status == "pending" else 201


@router.get(
    "/refund-reason-codes",
    operation_id="listRefundReasonCodes",
    response_model=RefundReasonList,
    summary="Integrated Payments' refund reason codes (one is required on every refund)",
    responses=problem_responses(401, 403, 422, 503),
)
def refund_reason_codes(
    actor: Annotated[Actor, Depends(permitted(Action.INITIATE_REFUND))], context: ContextDep
) -> RefundReasonList:
    return RefundReasonList(
        reasons=[
            RefundReasonOut(code=reason.code, description=reason.description)
            for reason in context.refunds.reasons.all()
        ]
    )


@router.post(
    "/orders/{order_id}/refunds",
    operation_id="refundOrder",
    response_model=RefundOut,
    status_code=201,
    summary="Refund an order, in full or in part, through Integrated Payments (staff, MFA)",
    description=(
        "Body: `{reason_code, amount_minor}` (partial by amount), `{reason_code, lines: "
        "[{line_item_id, quantity}]}` (by lines) or `{reason_code}` (the whole remaining "
        "balance), with an optional `note`. Named staff of the order's practice whose role may "
        "refund, with MFA within the step-up window (403 `mfa_required` otherwise). The refund "
        "references the original DNA Payments transaction and payment method. Refunded lines "
        "stop where they can (supplier cancellation, in-clinic collection withdrawn)."
    ),
    responses={**creating_responses(401, 403, 404, 409, 422, 503), **REFUND_CREATED},
    openapi_extra=IDEMPOTENT_CREATE,
)
def refund_order(
    order_id: uuid.UUID,
    body: RefundIn,
    actor: RefunderDep,
    context: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    return refund_request(
        context,
        actor,
        idempotency_key,
        f"POST /v1/orders/{order_id}/refunds",
        body,
        lambda session, codes: context.refunds.reserve_order_refund(
            session, actor, order_id, body, codes
        ),
    )


@router.get(
    "/orders/{order_id}/refunds",
    operation_id="listOrderRefunds",
    response_model=list[RefundOut],
    summary="An order's refunds (practice admin, finance)",
    responses=problem_responses(401, 403, 404, 422),
)
def order_refunds(
    order_id: uuid.UUID,
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_REFUNDS))],
    session: SessionDep,
) -> list[RefundOut]:
    return queries.order_refunds(session, actor, order_id)


@router.get(
    "/refunds",
    operation_id="listRefunds",
    response_model=RefundPage,
    summary="The practice's refunds, filtered (spec §15.4), paginated; CSV with Accept: text/csv",
    responses={
        **problem_responses(400, 401, 403, 422),
        200: {
            "description": "A page of refunds (JSON), or every matching refund as CSV",
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
    },
)
def list_refunds(
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_REFUNDS))],
    session: SessionDep,
    date_from: Annotated[
        Day | None, Query(alias="from", description="Inclusive date (UTC), by initiated_at")
    ] = None,
    date_to: Annotated[Day | None, Query(alias="to", description="Inclusive date (UTC)")] = None,
    reason_code: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9_]+$")] = None,
    initiated_by: Annotated[
        str | None, Query(max_length=64, description="The staff member's Access Manager id")
    ] = None,
    status: Literal["pending", "succeeded", "failed"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    filters = queries.RefundFilters(
        date_from=date_from,
        date_to=date_to,
        reason_code=reason_code,
        initiated_by=initiated_by,
        status=status,
    )
    if accept is not None and CSV_MEDIA_TYPE in accept.lower():
        return Response(
            queries.refunds_csv(queries.all_refunds(session, actor, filters)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="refunds.csv"'},
        )
    return model_response(queries.list_refunds(session, actor, filters, limit=limit, cursor=cursor))


@router.get(
    "/refunds/{refund_id}",
    operation_id="getRefund",
    response_model=RefundOut,
    summary="One refund (practice admin, finance)",
    responses=problem_responses(401, 403, 404, 422),
)
def get_refund(
    refund_id: uuid.UUID,
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_REFUNDS))],
    session: SessionDep,
) -> Response:
    return model_response(queries.read_refund(session, actor, refund_id))


@router.get(
    "/payment-exceptions",
    operation_id="listPaymentExceptions",
    response_model=PaymentExceptionPage,
    summary="Captures that made no order, for a staff refund (spec §5.3)",
    responses=problem_responses(400, 401, 403, 422),
)
def payment_exceptions(
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_REFUNDS))],
    session: SessionDep,
    include_refunded: bool = False,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    return model_response(
        queries.list_payment_exceptions(
            session, actor, include_refunded=include_refunded, limit=limit, cursor=cursor
        )
    )


@router.get(
    "/payment-exceptions/{exception_id}",
    operation_id="getPaymentException",
    response_model=PaymentExceptionOut,
    summary="One payment exception",
    responses=problem_responses(401, 403, 404, 422),
)
def payment_exception(
    exception_id: uuid.UUID,
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_REFUNDS))],
    session: SessionDep,
) -> Response:
    return model_response(queries.read_payment_exception(session, actor, exception_id))


@router.post(
    "/payment-exceptions/{exception_id}/refund",
    operation_id="refundPaymentException",
    response_model=RefundOut,
    status_code=201,
    summary="Refund a capture that made no order (staff, MFA), through Integrated Payments",
    responses={**creating_responses(401, 403, 404, 409, 422, 503), **REFUND_CREATED},
    openapi_extra=IDEMPOTENT_CREATE,
)
def refund_payment_exception(
    exception_id: uuid.UUID,
    body: ExceptionRefundIn,
    actor: RefunderDep,
    context: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    return refund_request(
        context,
        actor,
        idempotency_key,
        f"POST /v1/payment-exceptions/{exception_id}/refund",
        body,
        lambda session, codes: context.refunds.reserve_exception_refund(
            session, actor, exception_id, body, codes
        ),
    )


@router.post(
    "/orders/{order_id}/cancellation-requests",
    operation_id="requestCancellation",
    response_model=CancellationRequestOut,
    status_code=201,
    summary="The patient asks to cancel their order (distance selling); staff make any refund",
    description=(
        "An undispatched drop-ship line may be cancelled at once; anything else within the "
        "cancellation period after delivery or collection. Creates a task for the practice's "
        "staff and an audit entry; refunds nothing by itself. Each line says whether this path "
        "covers it (digital vouchers already used are not refundable by this path)."
    ),
    responses=creating_responses(401, 403, 404, 409, 422),
    openapi_extra=IDEMPOTENT_CREATE,
)
def request_cancellation(
    order_id: uuid.UUID,
    body: CancellationIn,
    actor: Annotated[Actor, Depends(permitted(Action.REQUEST_CANCELLATION))],
    context: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    def create(claim: Claim) -> tuple[CancellationRequestOut, str]:
        def work(session: Session) -> CancellationRequestOut:
            request = context.cancellations.request(session, actor, order_id, body)
            location = f"/v1/cancellation-requests/{request.request_id}"
            context.idempotency.complete(
                session, claim, 201, request.model_dump(mode="json"), location
            )
            return request

        request = context.database.run(work)
        return request, f"/v1/cancellation-requests/{request.request_id}"

    return run_idempotent(
        context,
        actor,
        idempotency_key,
        f"POST /v1/orders/{order_id}/cancellation-requests",
        body,
        create,
    )


@router.get(
    "/cancellation-requests",
    operation_id="listCancellationRequests",
    response_model=CancellationRequestPage,
    summary="The practice's cancellation requests, oldest first, a page at a time (staff)",
    responses=problem_responses(400, 401, 403, 422),
)
def cancellation_requests(
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_CANCELLATION_REQUESTS))],
    session: SessionDep,
    context: ContextDep,
    status: Literal["open", "refunded", "closed"] | None = "open",
    limit: Limit = 200,
    cursor: Cursor = None,
) -> Response:
    return model_response(
        context.cancellations.list_requests(
            session, actor, status=status, limit=limit, cursor=cursor
        )
    )


@router.get(
    "/cancellation-requests/{request_id}",
    operation_id="getCancellationRequest",
    response_model=CancellationRequestOut,
    summary="One cancellation request: the patient who made it, or staff of the practice",
    responses=problem_responses(401, 403, 404, 422),
)
def cancellation_request(
    request_id: uuid.UUID, actor: ActorDep, session: SessionDep, context: ContextDep
) -> Response:
    return model_response(context.cancellations.get(session, actor, request_id))
