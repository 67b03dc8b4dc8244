"""Reading orders: who may see which, the order document, and filtered pages for staff."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import same, scoped
from product_shop.access.policy import Action, allowed, require
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.tables import PaymentCapture
from product_shop.core.cursors import decode_cursor, encode_cursor
from product_shop.core.errors import NotFound, Unprocessable
from product_shop.db.fast import columns_of
from product_shop.fulfilment.vouchers import masked
from product_shop.orders.model import PATIENT_TIMELINE, LineState, OrderStatus, RefundStatus
from product_shop.orders.schemas import (
    AuditTrailEntry,
    OrderLineOut,
    OrderOut,
    OrderPage,
    OrderSummary,
    OrderSummaryItem,
    PatientOrderOut,
    PatientRefundSummary,
    PaymentOut,
    RefundSummary,
    TimelineEntry,
    Tracking,
    VoucherOut,
)
from product_shop.orders.tables import Order, OrderLine, Voucher
from product_shop.refunds.queries import refunds_of_order
from product_shop.refunds.schemas import PatientRefundOut, RefundOut

MAX_PAGE = 200


def load_visible(session: Session, actor: Actor, order_id: uuid.UUID) -> Order:
    """The order if this caller may see it: the patient who owns it, or staff of its practice.
    Anyone else gets the same 404 as for an order that does not exist."""
    if not (allowed(actor, Action.VIEW_OWN_ORDERS) or allowed(actor, Action.VIEW_PRACTICE_ORDERS)):
        require(actor, Action.VIEW_PRACTICE_ORDERS)  # raises 403 for roles with no order access
    order = session.get(Order, order_id)
    if order is None or not _may_see(actor, order):
        raise NotFound("No such order.")
    return order


def _may_see(actor: Actor, order: Order) -> bool:
    if actor.is_patient:
        return same(order.patient_id, actor.patient_id)
    return allowed(actor, Action.VIEW_PRACTICE_ORDERS) and same(
        order.practice_id, actor.practice_id
    )


def order_document_for(
    session: Session,
    actor: Actor,
    order: Order,
    reveal: Callable[[uuid.UUID], str] | None = None,
) -> OrderOut | PatientOrderOut:
    """The order as this caller may see it: patients get their view (with their voucher codes
    through `reveal`), staff the full one (codes masked)."""
    if actor.is_patient:
        return patient_view(order_document(session, order), reveal)
    return order_document(session, order)


def order_document(session: Session, order: Order) -> OrderOut:
    """The order as the practice's staff see it."""
    lines = list(
        session.scalars(
            select(OrderLine)
            .where(OrderLine.order_id == order.order_id)
            .order_by(OrderLine.line_no)
        )
    )
    capture = session.get(PaymentCapture, order.payment_ref) if order.payment_ref else None
    trail = list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.stream_type == "order", AuditEntry.stream_id == str(order.order_id))
            .order_by(AuditEntry.stream_seq)
        )
    )
    vouchers = session.scalars(select(Voucher).where(Voucher.order_id == order.order_id))
    return build_order_document(
        columns_of(order),
        [columns_of(line) for line in lines],
        columns_of(capture) if capture else None,
        [columns_of(entry) for entry in trail],
        [columns_of(voucher) for voucher in vouchers],
        refunds_of_order(session, order.order_id),
    )


def build_order_document(
    order: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    capture: Mapping[str, Any] | None,
    trail: Sequence[Mapping[str, Any]],
    vouchers: Sequence[Mapping[str, Any]] = (),
    refunds: Sequence[RefundOut] = (),
) -> OrderOut:
    """The staff's order JSON from rows in hand (column names as keys): read from the database,
    or just written by the completion (a new order: no refunds, none in flight). `patient_view`
    derives what the patient sees."""
    pending = order.get("refund_pending_minor") or 0
    return OrderOut(
        order_id=order["order_id"],
        checkout_id=order["checkout_id"],
        patient_id=order["patient_id"],
        practice_id=order["practice_id"],
        status=OrderStatus(order["status"]),
        fulfilment_status=OrderStatus(order["fulfilment_status"]),
        refund_status=RefundStatus(order["refund_status"]),
        currency=order["currency"],
        total_minor=order["total_minor"],
        payment=PaymentOut(
            payment_ref=order["payment_ref"] or order.get("settlement_ref"),
            method=order["payment_method"],
            card_scheme=capture["card_scheme"] if capture else None,
            card_last4=capture["card_last4"] if capture else None,
            captured_minor=order["captured_minor"],
            redeemed_minor=order.get("redeemed_minor") or 0,
            provider="DNA Payments via Integrated Payments"
            if order["payment_ref"]
            else "Rewards Manager points",
        ),
        redemption_ref=order["redemption_ref"],
        pms_invoice_ref=order["pms_invoice_ref"],
        created_by=order["created_by"],
        version=order["version"],
        created_at=order["created_at"],
        updated_at=order["updated_at"],
        lines=[
            OrderLineOut(
                line_item_id=line["line_item_id"],
                line_no=line["line_no"],
                product_id=line["product_id"],
                name=line["product_name"],
                quantity=line["quantity"],
                unit_price_minor=line["unit_price_minor"],
                line_total_minor=line["unit_price_minor"] * line["quantity"],
                fulfilment_type=FulfilmentType(line["fulfilment_type"]),
                fulfilment_status=LineState(line["fulfilment_status"]),
                fulfilment_ref=line["fulfilment_ref"],
                tracking=Tracking(
                    carrier=line["carrier"],
                    tracking_number=line["tracking_number"],
                    tracking_url=line["tracking_url"],
                )
                if line["tracking_number"] or line["carrier"]
                else None,
                dispatched_at=line["dispatched_at"],
                delivered_at=line["delivered_at"],
                collected_at=line["collected_at"],
                exception_reason=line["exception_reason"],
                vouchers=[
                    VoucherOut(
                        voucher_id=voucher["voucher_id"],
                        unit_no=voucher["unit_no"],
                        code=masked(voucher["last_four"]),
                        last_four=voucher["last_four"],
                    )
                    for voucher in sorted(vouchers, key=lambda v: v["unit_no"])
                    if voucher["line_item_id"] == line["line_item_id"]
                ]
                if line["fulfilment_type"] == FulfilmentType.DIGITAL
                else None,
                refunded_quantity=line.get("refunded_quantity") or 0,
                cancellation=line.get("cancellation"),
            )
            for line in lines
        ],
        refunds=RefundSummary(
            refund_status=RefundStatus(order["refund_status"]),
            refunded_minor=order["refunded_minor"],
            refund_pending_minor=pending,
            refundable_minor=order["captured_minor"] - order["refunded_minor"] - pending,
            items=list(refunds),
        ),
        audit_trail=[
            AuditTrailEntry(
                at=entry["recorded_at"],
                action=entry["action"],
                actor_id=entry["actor_id"],
                actor_role=entry["actor_role"],
                actor_name=entry["actor_name"],
                before=entry["before"],
                after=entry["after"],
            )
            for entry in trail
        ],
        timeline=[
            TimelineEntry(
                at=entry["recorded_at"],
                event=shown[0],
                description=shown[1].format(product=(entry["after"] or {}).get("product_name")),
            )
            for entry in trail
            if (shown := PATIENT_TIMELINE.get(entry["action"])) is not None
        ],
    )


def patient_view(
    order: OrderOut, reveal: Callable[[uuid.UUID], str] | None = None
) -> PatientOrderOut:
    """What the patient sees of their order: the staff document without the audit trail, the
    PMS invoice reference, or anything else only the practice's staff may read; with `reveal`
    (the voucher code of a voucher id), the full codes of their vouchers."""
    fields = {name: getattr(order, name) for name in PatientOrderOut.model_fields if name != "view"}
    # Their refunds without the staff's reason codes, notes or names.
    fields["refunds"] = PatientRefundSummary(
        refund_status=order.refunds.refund_status,
        refunded_minor=order.refunds.refunded_minor,
        refund_pending_minor=order.refunds.refund_pending_minor,
        refundable_minor=order.refunds.refundable_minor,
        items=[
            PatientRefundOut(**refund.model_dump(include=set(PatientRefundOut.model_fields)))
            for refund in order.refunds.items
            if refund.status != "failed"
        ],
    )
    if reveal is not None and any(line.vouchers for line in order.lines):
        fields["lines"] = [
            line.model_copy(
                update={
                    "vouchers": [
                        voucher.model_copy(update={"code": reveal(voucher.voucher_id)})
                        if voucher.last_four  # "" once erased (`orders/retention.py`)
                        else voucher
                        for voucher in line.vouchers
                    ]
                }
            )
            if line.vouchers
            else line
            for line in order.lines
        ]
    return PatientOrderOut.model_construct(**fields)


class ActiveOrderReferences:
    """Orders still being fulfilled that contain a product (the deprecation check, spec §3.1)."""

    def active_order_batches(
        self, session: Session, product_id: uuid.UUID, *, batch_size: int
    ) -> Iterator[list[uuid.UUID]]:
        """Ascending order ids in keyset batches: one bounded query per batch."""
        statement = (
            select(OrderLine.order_id)
            .join(Order, Order.order_id == OrderLine.order_id)
            .where(
                OrderLine.product_id == product_id,
                Order.fulfilment_status != OrderStatus.COMPLETED.value,
            )
            .distinct()
            .order_by(OrderLine.order_id)
            .limit(batch_size)
        )
        last: uuid.UUID | None = None
        while True:
            page = (  # the bound on both sides lets a merge join start at the cursor
                statement
                if last is None
                else statement.where(OrderLine.order_id > last, Order.order_id > last)
            )
            batch = list(session.scalars(page))
            if batch:
                yield batch
            if len(batch) < batch_size:
                return
            last = batch[-1]


@dataclass(frozen=True, slots=True)
class OrderFilters:
    status: OrderStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    fulfilment_type: FulfilmentType | None = None
    patient_id: uuid.UUID | None = None


def list_orders(
    session: Session,
    actor: Actor,
    filters: OrderFilters,
    *,
    limit: int = 50,
    cursor: str | None = None,
    own: bool = False,
) -> OrderPage:
    """Newest first, keyset-paginated. `own`: the patient's orders; otherwise the practice's."""
    if own:
        require(actor, Action.VIEW_OWN_ORDERS)
        scope = scoped(Order.patient_id, actor.patient_id)
    else:
        require(actor, Action.VIEW_PRACTICE_ORDERS)
        scope = scoped(Order.practice_id, actor.practice_id)
    if (
        filters.created_from is not None
        and filters.created_to is not None
        and filters.created_from > filters.created_to
    ):
        raise Unprocessable(
            "created_from must not be after created_to.",
            code="invalid_date_range",
            errors=[{"loc": ["query", "created_from"], "type": "invalid_date_range"}],
        )
    statement = select(Order).where(scope)
    if filters.status is OrderStatus.REFUNDED:
        statement = statement.where(Order.refund_status != RefundStatus.NONE.value)
    elif filters.status is not None:
        statement = statement.where(
            Order.fulfilment_status == filters.status.value,
            Order.refund_status == RefundStatus.NONE.value,
        )
    if filters.created_from is not None:
        statement = statement.where(Order.created_at >= filters.created_from)
    if filters.created_to is not None:
        statement = statement.where(Order.created_at < filters.created_to)
    if filters.patient_id is not None:
        statement = statement.where(Order.patient_id == filters.patient_id)
    if filters.fulfilment_type is not None:
        statement = statement.where(
            exists().where(
                OrderLine.order_id == Order.order_id,
                OrderLine.fulfilment_type == filters.fulfilment_type.value,
            )
        )
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        statement = statement.where(
            or_(Order.created_at < at, and_(Order.created_at == at, Order.order_id < last_id))
        )
    limit = max(1, min(limit, MAX_PAGE))
    orders = list(
        session.scalars(
            statement.order_by(Order.created_at.desc(), Order.order_id.desc()).limit(limit + 1)
        )
    )
    page, more = orders[:limit], len(orders) > limit
    lines_by_order: dict[uuid.UUID, list[OrderLine]] = {}
    if page:
        for line in session.scalars(
            select(OrderLine).where(OrderLine.order_id.in_([o.order_id for o in page]))
        ):
            lines_by_order.setdefault(line.order_id, []).append(line)
    items = [
        OrderSummary(
            order_id=o.order_id,
            patient_id=o.patient_id,
            status=OrderStatus(o.status),
            fulfilment_status=OrderStatus(o.fulfilment_status),
            refund_status=RefundStatus(o.refund_status),
            currency=o.currency,
            total_minor=o.total_minor,
            fulfilment_types=sorted(
                {
                    FulfilmentType(line.fulfilment_type)
                    for line in lines_by_order.get(o.order_id, [])
                }
            ),
            line_count=len(lines_by_order.get(o.order_id, [])),
            items=[
                OrderSummaryItem(
                    product_id=line.product_id, name=line.product_name, quantity=line.quantity
                )
                for line in sorted(lines_by_order.get(o.order_id, []), key=lambda x: x.line_no)
            ],
            created_at=o.created_at,
        )
        for o in page
    ]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].order_id) if more else None
    return OrderPage(items=items, next_cursor=next_cursor)
