"""Reading refunds and payment exceptions: one refund, the practice's refund list with the spec
filters (§15.4: date range, reason code, initiating staff member), an order's refunds, and the
open payment exceptions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import same, scoped
from product_shop.access.policy import Action, require
from product_shop.core.csv_export import csv_document
from product_shop.core.cursors import decode_cursor, encode_cursor
from product_shop.core.errors import NotFound, Unprocessable
from product_shop.orders.tables import Order
from product_shop.refunds.schemas import (
    PaymentExceptionOut,
    PaymentExceptionPage,
    RefundLineOut,
    RefundOut,
    RefundPage,
)
from product_shop.refunds.tables import PaymentException, Refund, RefundLine

MAX_PAGE = 200
# What each payment exception reason means, for the staff list.
EXCEPTION_REASONS = {
    "duplicate_capture": "A second payment for a checkout that already has its order.",
    "amount_mismatch": "The amount captured did not match the checkout.",
    "product_unavailable": "A product could no longer be bought when the payment arrived.",
    "redemption_reversed": "A payment after the checkout's points were returned (its earlier "
    "payment had failed).",
    "checkout_expired": "A payment that arrived after its checkout had expired.",
}
CSV_COLUMNS = (
    "refund_id",
    "order_id",
    "payment_exception_id",
    "status",
    "kind",
    "amount_minor",
    "currency",
    "reason_code",
    "payment_ref",
    "payment_method",
    "provider_refund_ref",
    "initiated_by",
    "initiated_by_name",
    "initiated_by_role",
    "initiated_at",
    "completed_at",
)


@dataclass(frozen=True, slots=True)
class RefundFilters:
    date_from: date | None = None  # inclusive, by initiated_at (UTC)
    date_to: date | None = None  # inclusive
    reason_code: str | None = None
    initiated_by: str | None = None
    status: str | None = None


def refund_out(refund: Refund, lines: Iterable[RefundLine] = ()) -> RefundOut:
    return RefundOut(
        refund_id=refund.refund_id,
        order_id=refund.order_id,
        payment_exception_id=refund.payment_exception_id,
        practice_id=refund.practice_id,
        patient_id=refund.patient_id,
        status=refund.status,
        kind=refund.kind,
        amount_minor=refund.amount_minor,
        points=refund.points,
        currency=refund.currency,
        reason_code=refund.reason_code,
        note=refund.note,
        payment_ref=refund.payment_ref,
        payment_method=refund.payment_method,
        provider_refund_ref=refund.provider_refund_ref,
        initiated_by=refund.initiated_by,
        initiated_by_name=refund.initiated_by_name,
        initiated_by_role=refund.initiated_by_role,
        initiated_at=refund.initiated_at,
        completed_at=refund.completed_at,
        failure_code=refund.failure_code,
        failure_message=refund.failure_message,
        lines=[
            RefundLineOut(
                line_item_id=line.line_item_id,
                quantity=line.quantity,
                amount_minor=line.amount_minor,
            )
            for line in lines
        ],
    )


def _documents(session: Session, refunds: list[Refund]) -> list[RefundOut]:
    by_refund: dict[uuid.UUID, list[RefundLine]] = {}
    if refunds:
        for line in session.scalars(
            select(RefundLine).where(RefundLine.refund_id.in_([r.refund_id for r in refunds]))
        ):
            by_refund.setdefault(line.refund_id, []).append(line)
    return [refund_out(refund, by_refund.get(refund.refund_id, [])) for refund in refunds]


def refunds_of_order(session: Session, order_id: uuid.UUID) -> list[RefundOut]:
    """An order's refunds, oldest first (every attempt: pending, succeeded or failed)."""
    refunds = list(
        session.scalars(
            select(Refund)
            .where(Refund.order_id == order_id)
            .order_by(Refund.initiated_at, Refund.refund_id)
        )
    )
    return _documents(session, refunds)


def order_refunds(session: Session, actor: Actor, order_id: uuid.UUID) -> list[RefundOut]:
    """An order's refunds for practice admin and finance of its practice."""
    require(actor, Action.VIEW_REFUNDS)
    order = session.get(Order, order_id)
    if order is None or not same(order.practice_id, actor.practice_id):
        raise NotFound("No such order.")
    return refunds_of_order(session, order_id)


def all_refunds(session: Session, actor: Actor, filters: RefundFilters) -> Iterator[RefundOut]:
    """Every refund the filters match, newest first, a page at a time (the CSV export)."""
    cursor: str | None = None
    while True:
        page = list_refunds(session, actor, filters, limit=MAX_PAGE, cursor=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def read_refund(session: Session, actor: Actor, refund_id: uuid.UUID) -> RefundOut:
    require(actor, Action.VIEW_REFUNDS)
    refund = session.get(Refund, refund_id)
    if refund is None or not same(refund.practice_id, actor.practice_id):
        raise NotFound("No such refund.")
    return _documents(session, [refund])[0]


def list_refunds(
    session: Session,
    actor: Actor,
    filters: RefundFilters,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> RefundPage:
    """The practice's refunds, newest first, keyset-paginated."""
    require(actor, Action.VIEW_REFUNDS)
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        raise Unprocessable(
            "from must not be after to.",
            code="invalid_date_range",
            errors=[{"loc": ["query", "from"], "type": "invalid_date_range"}],
        )
    statement = select(Refund).where(scoped(Refund.practice_id, actor.practice_id))
    if filters.date_from is not None:
        statement = statement.where(
            Refund.initiated_at >= datetime.combine(filters.date_from, time.min, UTC)
        )
    if filters.date_to is not None:
        end = datetime.combine(filters.date_to + timedelta(days=1), time.min, UTC)
        statement = statement.where(Refund.initiated_at < end)
    if filters.reason_code is not None:
        statement = statement.where(Refund.reason_code == filters.reason_code)
    if filters.initiated_by is not None:
        statement = statement.where(Refund.initiated_by == filters.initiated_by)
    if filters.status is not None:
        statement = statement.where(Refund.status == filters.status)
    if cursor is not None:
        at, last = decode_cursor(cursor)
        statement = statement.where(
            or_(Refund.initiated_at < at, and_(Refund.initiated_at == at, Refund.refund_id < last))
        )
    limit = max(1, min(limit, MAX_PAGE))
    rows = list(
        session.scalars(
            statement.order_by(Refund.initiated_at.desc(), Refund.refund_id.desc()).limit(limit + 1)
        )
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1].initiated_at, page[-1].refund_id) if more else None
    return RefundPage(items=_documents(session, page), next_cursor=next_cursor)


def refunds_csv(refunds: Iterable[RefundOut]) -> str:
    """The refund list as CSV (one row per refund; the lines are in the JSON form)."""
    documents = (refund.model_dump(mode="json") for refund in refunds)
    return csv_document(CSV_COLUMNS, ([d[column] for column in CSV_COLUMNS] for d in documents))


# ---- payment exceptions -------------------------------------------------------------------------


def exception_out(found: PaymentException) -> PaymentExceptionOut:
    left = found.amount_minor - found.refunded_minor - found.refund_pending_minor
    status = (
        "refunded"
        if found.refunded_minor >= found.amount_minor
        else "refund_pending"
        if found.refund_pending_minor > 0
        else "open"
    )
    return PaymentExceptionOut(
        exception_id=found.exception_id,
        checkout_id=found.checkout_id,
        patient_id=found.patient_id,
        practice_id=found.practice_id,
        reason=found.reason,
        description=EXCEPTION_REASONS.get(found.reason, "A capture that made no order."),
        intent_id=found.intent_id,
        payment_ref=found.payment_ref,
        payment_method=found.payment_method,
        amount_minor=found.amount_minor,
        expected_amount_minor=found.expected_amount_minor,
        currency=found.currency,
        refunded_minor=found.refunded_minor,
        refund_pending_minor=found.refund_pending_minor,
        refundable_minor=left,
        status=status,
        recorded_at=found.recorded_at,
    )


def list_payment_exceptions(
    session: Session,
    actor: Actor,
    *,
    include_refunded: bool,
    limit: int = 50,
    cursor: str | None = None,
) -> PaymentExceptionPage:
    """The practice's payment exceptions, newest first: those still to refund, or all."""
    require(actor, Action.VIEW_REFUNDS)
    statement = select(PaymentException).where(
        scoped(PaymentException.practice_id, actor.practice_id)
    )
    if not include_refunded:
        statement = statement.where(PaymentException.refunded_minor < PaymentException.amount_minor)
    if cursor is not None:
        at, last = decode_cursor(cursor)
        statement = statement.where(
            or_(
                PaymentException.recorded_at < at,
                and_(PaymentException.recorded_at == at, PaymentException.exception_id < last),
            )
        )
    limit = max(1, min(limit, MAX_PAGE))
    rows = list(
        session.scalars(
            statement.order_by(
                PaymentException.recorded_at.desc(), PaymentException.exception_id.desc()
            ).limit(limit + 1)
        )
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1].recorded_at, page[-1].exception_id) if more else None
    return PaymentExceptionPage(items=[exception_out(row) for row in page], next_cursor=next_cursor)


def read_payment_exception(
    session: Session, actor: Actor, exception_id: uuid.UUID
) -> PaymentExceptionOut:
    require(actor, Action.VIEW_REFUNDS)
    found = session.get(PaymentException, exception_id)
    if found is None or not same(found.practice_id, actor.practice_id):
        raise NotFound("No such payment exception.")
    return exception_out(found)


def refund_document(session: Session, refund_id: uuid.UUID) -> RefundOut:
    """One refund as stored now (no access check: for the code that just wrote it)."""
    refund = session.get(Refund, refund_id, populate_existing=True)
    if refund is None:
        raise NotFound("No such refund.")
    return _documents(session, [refund])[0]
