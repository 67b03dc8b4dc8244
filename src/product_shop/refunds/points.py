"""A refund of an order paid wholly with points (spec §5.4, §15.2 rule 14): there is no money to
return, so Rewards Manager is asked to reinstate all the points, in the refund's own unit of
work (no call to Integrated Payments), with the same named staff member, reason code, audit
entries and line stops as any refund. `orders.points_returned` carries the Refunded overlay."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.audit.log import AuditLog
from product_shop.checkout.tables import PointsRedemption
from product_shop.core.clock import Clock
from product_shop.core.errors import Conflict, Unprocessable
from product_shop.core.ids import new_id
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import REDEMPTION_REVERSALS, REFUNDS
from product_shop.orders.model import OrderStatus, order_status
from product_shop.orders.model import refund_status as refund_status_of
from product_shop.orders.tables import Order, OrderLine
from product_shop.refunds.cancellation import resolve_open_requests
from product_shop.refunds.holds import hold_units, settle_units
from product_shop.refunds.reasons import check_reason
from product_shop.refunds.schemas import RefundIn
from product_shop.refunds.stops import RefundedLines
from product_shop.refunds.tables import Refund, RefundLine


class PointsRefunds:
    def __init__(
        self, *, audit: AuditLog, outbox: Outbox, clock: Clock, stops: RefundedLines
    ) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._stops = stops

    def return_points(
        self,
        session: Session,
        actor: Actor,
        order: Order,
        lines: list[OrderLine],
        body: RefundIn,
        reason_codes: Collection[str],
    ) -> Refund:
        """An order paid wholly with points has no money to return: its refund asks Rewards
        Manager to reinstate the points (spec §5.4, §15.2 rule 14), whole, made and recorded in
        this unit of work (no call to Integrated Payments), with the same named staff member,
        reason code, audit entry and line stops as any refund."""
        if body.amount_minor is not None or body.lines is not None:
            raise Unprocessable(
                "This order was paid with points only: it is refunded whole (send only the "
                "reason code); Rewards Manager reinstates the points.",
                code="points_refund_whole",
            )
        check_reason(body.reason_code, reason_codes)
        redemption = session.get(PointsRedemption, order.redemption_ref, with_for_update=True)
        if order.points_returned or redemption is None or redemption.status != "confirmed":
            raise Conflict(
                "The points of this order were asked back already.", code="nothing_to_refund"
            )
        now = self._clock.now()
        assert actor.auth_time is not None
        refund = Refund(
            refund_id=new_id(),
            order_id=order.order_id,
            practice_id=order.practice_id,
            patient_id=order.patient_id,
            payment_ref=order.settlement_ref or redemption.redemption_ref,
            payment_method="points",
            amount_minor=0,
            points=redemption.points,
            currency=order.currency,
            reason_code=body.reason_code,
            note=body.note,
            kind="points",
            status="succeeded",
            initiated_by=actor.actor_id,
            initiated_by_name=actor.name,
            initiated_by_role=actor.role.value,
            initiated_at=now,
            mfa_at=actor.auth_time,
            completed_at=now,
        )
        session.add(refund)
        session.flush()
        count_on_commit(session, REFUNDS, outcome="succeeded", reason_code=body.reason_code)
        count_on_commit(session, REDEMPTION_REVERSALS, outcome="requested")
        refunded_lines = []
        for line in lines:
            left = line.quantity - line.refunded_quantity - line.refund_pending_quantity
            if left <= 0:
                continue
            session.add(
                RefundLine(
                    refund_id=refund.refund_id,
                    line_item_id=line.line_item_id,
                    quantity=left,
                    amount_minor=0,
                )
            )
            hold_units(session, line.line_item_id, left)
            settle_units(session, line, left, refunded=True)
            line.updated_at = now
            refunded_lines.append((line, left))
        before = {"status": order.status, "refund_status": order.refund_status}
        order.points_returned = True
        overlay = refund_status_of(order.captured_minor, order.refunded_minor, points_returned=True)
        order.refund_status = overlay.value
        order.status = order_status(OrderStatus(order.fulfilment_status), overlay).value
        order.updated_at, order.version = now, order.version + 1
        redemption.status, redemption.reversal_requested_at = "reversal_requested", now
        entry = self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="refund.succeeded",
            actor=actor.audit_actor(),
            practice_id=order.practice_id,
            before=before,
            after={
                "refund_id": str(refund.refund_id),
                "kind": "points",
                "amount_minor": 0,
                "points": redemption.points,
                "currency": order.currency,
                "reason_code": body.reason_code,
                "has_note": bool(body.note),
                "payment_ref": refund.payment_ref,
                "payment_method": "points",
                "redemption_ref": redemption.redemption_ref,
                "mfa_at": actor.auth_time,
                "status": order.status,
                "refund_status": order.refund_status,
                "lines": [
                    {"line_item_id": str(line.line_item_id), "quantity": quantity}
                    for line, quantity in refunded_lines
                ],
            },
            at=now,
        )
        self._outbox.emit(
            session,
            ev.REFUND_ISSUED,
            aggregate_id=order.order_id,
            data={
                "order_id": order.order_id,
                "refund_id": refund.refund_id,
                "practice_id": order.practice_id,
                "patient_id": order.patient_id,
                "amount_minor": 0,
                "points": redemption.points,
                "currency": order.currency,
                "payment_method": "points",
                "refund_status": order.refund_status,
                "lines": [
                    {"product_name": line.product_name, "quantity": quantity}
                    for line, quantity in refunded_lines
                ],
                "notification": "refund_issued",
                "occurred_at": now,
            },
            at=now,
        )
        self._outbox.emit(
            session,
            ev.REDEMPTION_REVERSAL_REQUESTED,
            aggregate_id=order.order_id,
            data={
                "order_id": order.order_id,
                "refund_id": refund.refund_id,
                "checkout_id": order.checkout_id,
                "practice_id": order.practice_id,
                "patient_id": order.patient_id,
                "redemption_ref": redemption.redemption_ref,
                "points": redemption.points,
                "amount_minor": redemption.amount_minor,
                "reason": "refund",
                "refund_status": order.refund_status,
                "requested_at": now,
            },
            at=now,
        )
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="redemption.reversal_requested",
            actor=actor.audit_actor(),
            practice_id=order.practice_id,
            after={
                "redemption_ref": redemption.redemption_ref,
                "refund_id": str(refund.refund_id),
                "points": redemption.points,
                "amount_minor": redemption.amount_minor,
                "reason": "refund",
            },
            at=now,
        )
        for line, quantity in refunded_lines:
            self._stops.stop(session, order, line, quantity, actor, now)
        resolve_open_requests(session, order.order_id, refund.refund_id, now)
        session.flush()
        refund.audit_entry_id, refund.audit_entry_hash = entry.entry_id, entry.entry_hash
        return refund
