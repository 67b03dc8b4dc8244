"""What a refund tells the other modules (spec §11.2, §15.2 rules 12, 14, 15): Communication
Hub's refund notice, Financial Insights' `refund` revenue event, Finance's refund data, and,
where points paid part of the order, Rewards Manager's request to reinstate the refund's share
of them (audited; Product Shop never changes a points balance)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.audit.log import AuditActor, AuditLog
from product_shop.checkout.tables import PointsRedemption
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import REDEMPTION_REVERSALS
from product_shop.orders.tables import Order, OrderLine
from product_shop.refunds.tables import PaymentException, Refund


class RefundNotices:
    def __init__(self, *, audit: AuditLog, outbox: Outbox) -> None:
        self._audit = audit
        self._outbox = outbox

    def order_refunded(
        self,
        session: Session,
        refund: Refund,
        order: Order,
        lines: list[tuple[OrderLine, int]],
        now: datetime,
    ) -> None:
        ids = {
            "order_id": order.order_id,
            "refund_id": refund.refund_id,
            "practice_id": order.practice_id,
        }
        money = {"amount_minor": refund.amount_minor, "currency": refund.currency}
        self._outbox.emit(
            session,
            ev.REFUND_ISSUED,
            aggregate_id=order.order_id,
            data={
                **ids,
                "patient_id": order.patient_id,
                **money,
                "payment_method": refund.payment_method,
                "refund_status": order.refund_status,
                "lines": [
                    {"product_name": line.product_name, "quantity": quantity}
                    for line, quantity in lines
                ],
                "notification": "refund_issued",
                "occurred_at": now,
            },
            at=now,
        )
        self._outbox.emit(
            session,
            ev.REVENUE_REFUND,
            aggregate_id=order.order_id,
            data={
                "order_id": order.order_id,
                "practice_id": order.practice_id,
                "refund_id": refund.refund_id,
                "amount": refund.amount_minor,
                "currency": refund.currency,
                "event_type": "refund",
                "timestamp": now,
            },
            at=now,
        )
        self._outbox.emit(
            session,
            ev.FINANCE_REFUND_RECORDED,
            aggregate_id=order.order_id,
            data={
                **ids,
                **money,
                "payment_ref": refund.payment_ref,
                "payment_method": refund.payment_method,
                "provider_refund_ref": refund.provider_refund_ref,
                "reason_code": refund.reason_code,
                "initiated_by": refund.initiated_by,
                "refunded_minor": order.refunded_minor,
                "captured_minor": order.captured_minor,
                "refund_status": order.refund_status,
                "refunded_at": now,
            },
            at=now,
        )
        if order.redemption_ref is not None:
            self._points_back(session, refund, order, now)

    def _points_back(self, session: Session, refund: Refund, order: Order, now: datetime) -> None:
        """Ask Rewards Manager to reinstate the refund's share of the points (spec §5.4, §15.2
        rule 14): all that is left with a full refund, else in proportion to the money refunded
        (counted over every refund so far, so small refunds add up). Never done by us."""
        redemption = session.get(PointsRedemption, order.redemption_ref, with_for_update=True)
        if redemption is None or order.captured_minor <= 0:
            return
        target = (
            redemption.points
            if order.refund_status == "full"
            else redemption.points * order.refunded_minor // order.captured_minor
        )
        before = (
            redemption.points * (order.refunded_minor - refund.amount_minor) // order.captured_minor
        )
        points = max(0, target - before)
        if points == 0:
            return
        amount = redemption.amount_minor * points // redemption.points
        data = {
            "order_id": order.order_id,
            "refund_id": refund.refund_id,
            "practice_id": order.practice_id,
            "checkout_id": order.checkout_id,
            "patient_id": order.patient_id,
            "redemption_ref": order.redemption_ref,
            "points": points,
            "amount_minor": amount,
            "reason": "refund",
            "refund_status": order.refund_status,
            "requested_at": now,
        }
        self._outbox.emit(
            session,
            ev.REDEMPTION_REVERSAL_REQUESTED,
            aggregate_id=order.order_id,
            data=data,
            at=now,
        )
        count_on_commit(session, REDEMPTION_REVERSALS, outcome="requested")
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="redemption.reversal_requested",
            actor=staff_of(refund),
            practice_id=order.practice_id,
            after={
                "redemption_ref": order.redemption_ref,
                "refund_id": str(refund.refund_id),
                "points": points,
                "amount_minor": amount,
                "reason": "refund",
            },
            at=now,
        )

    def exception_refunded(
        self, session: Session, refund: Refund, found: PaymentException, now: datetime
    ) -> None:
        self._outbox.emit(
            session,
            ev.PAYMENT_EXCEPTION_REFUNDED,
            aggregate_id=found.checkout_id,
            data={
                "payment_exception_id": found.exception_id,
                "refund_id": refund.refund_id,
                "checkout_id": found.checkout_id,
                "patient_id": found.patient_id,
                "practice_id": found.practice_id,
                "amount_minor": refund.amount_minor,
                "currency": refund.currency,
                "payment_ref": refund.payment_ref,
                "payment_method": refund.payment_method,
                "provider_refund_ref": refund.provider_refund_ref,
                "reason_code": refund.reason_code,
                "initiated_by": refund.initiated_by,
                "notification": "refund_issued",
                "refunded_at": now,
            },
            at=now,
        )


def staff_of(refund: Refund) -> AuditActor:
    """The named staff member a refund is attributed to, for every audit entry about it."""
    return AuditActor(
        actor_id=refund.initiated_by, role=refund.initiated_by_role, name=refund.initiated_by_name
    )


def actor_of(refund: Refund) -> Actor:
    return Actor(
        actor_id=refund.initiated_by,
        name=refund.initiated_by_name,
        role=Role(refund.initiated_by_role),
        practice_id=refund.practice_id,
        mfa=True,
        auth_time=refund.mfa_at,
    )
