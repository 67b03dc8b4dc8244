"""An order's refund, once Integrated Payments has made it (refunds/service.py, `succeeded`):
the amount and units settled, the order's Refunded overlay (partial or full), the audit entry
naming the staff member, what other modules are told, the refunded lines stopped where they can,
and the patient's open cancellation requests resolved. Also a refund's lines, locked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog
from product_shop.orders.model import OrderStatus, order_status
from product_shop.orders.model import refund_status as refund_status_of
from product_shop.orders.tables import Order, OrderLine
from product_shop.refunds.cancellation import resolve_open_requests
from product_shop.refunds.holds import settle_hold, settle_units
from product_shop.refunds.notices import RefundNotices, actor_of, staff_of
from product_shop.refunds.stops import RefundedLines
from product_shop.refunds.tables import Refund, RefundLine


def refund_lines(session: Session, refund: Refund) -> list[tuple[OrderLine, int]]:
    """The refund's order lines, locked, with the units it refunds of each."""
    rows = session.execute(
        select(OrderLine, RefundLine.quantity)
        .join(RefundLine, RefundLine.line_item_id == OrderLine.line_item_id)
        .where(RefundLine.refund_id == refund.refund_id)
        .order_by(OrderLine.line_no)
        .with_for_update(of=OrderLine)
    ).all()
    return [(line, quantity) for line, quantity in rows]


class RefundedOrders:
    def __init__(self, *, audit: AuditLog, notices: RefundNotices, stops: RefundedLines) -> None:
        self._audit = audit
        self._notices = notices
        self._stops = stops

    def record(
        self,
        session: Session,
        refund: Refund,
        order: Order,
        outcome: dict[str, Any],
        now: datetime,
    ) -> Any:
        before = {
            "status": order.status,
            "refund_status": order.refund_status,
            "refunded_minor": order.refunded_minor,
        }
        settle_hold(
            session, Order, Order.order_id == order.order_id, refund.amount_minor, refunded=True
        )
        session.refresh(order, ["refunded_minor", "refund_pending_minor"])
        overlay = refund_status_of(order.captured_minor, order.refunded_minor)
        order.refund_status = overlay.value
        order.status = order_status(OrderStatus(order.fulfilment_status), overlay).value
        order.updated_at = now
        order.version += 1
        refunded_lines = []
        for line, quantity in refund_lines(session, refund):
            settle_units(session, line, quantity, refunded=True)
            line.updated_at = now
            refunded_lines.append((line, quantity))
        entry = self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="refund.succeeded",
            actor=staff_of(refund),
            practice_id=order.practice_id,
            before=before,
            after={
                **outcome,
                "status": order.status,
                "refund_status": order.refund_status,
                "refunded_minor": order.refunded_minor,
                "refundable_minor": order.captured_minor - order.refunded_minor,
                "lines": [
                    {"line_item_id": str(line.line_item_id), "quantity": quantity}
                    for line, quantity in refunded_lines
                ],
            },
            at=now,
        )
        self._notices.order_refunded(session, refund, order, refunded_lines, now)
        staff = actor_of(refund)
        for line, quantity in refunded_lines:
            self._stops.stop(session, order, line, quantity, staff, now)
        resolve_open_requests(session, order.order_id, refund.refund_id, now)
        return entry
