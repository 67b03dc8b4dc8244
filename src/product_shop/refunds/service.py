"""Refunds (spec §5.3, §3.3, §9): the database steps around the call to Integrated Payments.

A refund is made in three steps, and the request (or the reconciliation job) owns each unit of
work (docs/architecture.md, "Who owns a transaction"):

1. `reserve_*`: the named staff member's role and fresh MFA are checked, the order (or payment
   exception) is locked, the request becomes a plan within what is left, and a `pending` refund
   row holds its amount (`refund_pending_minor`, and the line units): a concurrent refund sees the
   hold, and the database refuses any total above the capture.
2. Integrated Payments is called with the refund id as Idempotency-Key and reference, outside
   any transaction.
3. `succeeded` writes, in one transaction: the refund's outcome, the order's overlay (Refunded,
   partial or full, refunded and refundable amounts), the audit entry naming the staff member, the
   events (Communication Hub, Financial Insights, Finance, Rewards Manager where points were
   used), and stops refunded lines where they can (an order's part: `refunded_orders.py`).
   `failed` releases the hold and says why. An unknown outcome leaves the refund `pending` until
   its status is read (`jobs/refund_settlement.py`).

No code path refunds without a staff actor: every refund row names the staff member who asked,
and the reservation refuses anyone else.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.access.isolation import same
from product_shop.access.policy import require_refunder
from product_shop.audit.log import AuditLog
from product_shop.core.clock import Clock
from product_shop.core.errors import Conflict, NotFound
from product_shop.core.ids import new_id
from product_shop.events.outbox import Outbox
from product_shop.fulfilment.lines import LineFulfilment
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import REFUNDED_MINOR_UNITS, REFUNDS
from product_shop.integrations.payments import RefundResult
from product_shop.orders.tables import Order, OrderLine
from product_shop.refunds.holds import (
    hold,
    hold_units,
    leave_pending,
    settle_hold,
    settle_units,
)
from product_shop.refunds.model import LineHolding, RefundPlan, plan_refund, refundable
from product_shop.refunds.notices import RefundNotices, staff_of
from product_shop.refunds.pending import PendingRefund, pending_of
from product_shop.refunds.points import PointsRefunds
from product_shop.refunds.reasons import RefundReasons, check_reason
from product_shop.refunds.refunded_orders import RefundedOrders, refund_lines
from product_shop.refunds.schemas import ExceptionRefundIn, RefundIn
from product_shop.refunds.stops import RefundedLines
from product_shop.refunds.tables import PaymentException, Refund, RefundLine


class RefundService:
    def __init__(
        self,
        *,
        audit: AuditLog,
        outbox: Outbox,
        clock: Clock,
        lines: LineFulfilment,
        reasons: RefundReasons,
        roles: Collection[Role],
        mfa_max_age: timedelta,
    ) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._lines = lines
        self._reasons = reasons
        self._stops = RefundedLines(lines=lines, audit=audit, outbox=outbox)
        self._notices = RefundNotices(audit=audit, outbox=outbox)
        self._points = PointsRefunds(audit=audit, outbox=outbox, clock=clock, stops=self._stops)
        self._orders = RefundedOrders(audit=audit, notices=self._notices, stops=self._stops)
        self._roles = frozenset(roles)
        self._mfa_max_age = mfa_max_age

    @property
    def reasons(self) -> RefundReasons:
        return self._reasons

    def authorise(self, actor: Actor) -> None:
        """A named staff member with a refunding role and fresh MFA, or 403."""
        require_refunder(
            actor, roles=self._roles, now=self._clock.now(), mfa_max_age=self._mfa_max_age
        )

    # ---- 1. reserve ------------------------------------------------------------------------

    def reserve_order_refund(
        self,
        session: Session,
        actor: Actor,
        order_id: uuid.UUID,
        body: RefundIn,
        reason_codes: Collection[str],
    ) -> PendingRefund:
        """Check and hold an order's refund (`reason_codes`: Integrated Payments' set, read by
        the caller before the unit of work, so no network call is made while the order is
        locked)."""
        self.authorise(actor)
        order = session.get(Order, order_id, with_for_update=True)
        if order is None or not same(order.practice_id, actor.practice_id):
            raise NotFound("No such order.")
        lines = list(
            session.scalars(
                select(OrderLine)
                .where(OrderLine.order_id == order_id)
                .order_by(OrderLine.line_no)
                .with_for_update()
            )
        )
        if order.captured_minor == 0 and order.redemption_ref is not None:
            refunded = self._points.return_points(session, actor, order, lines, body, reason_codes)
            return replace(pending_of(refunded), settled=True)
        plan = plan_refund(
            refundable_minor=refundable(
                order.captured_minor, order.refunded_minor, order.refund_pending_minor
            ),
            captured_minor=order.captured_minor,
            total_minor=order.total_minor,
            lines=[
                LineHolding(
                    line.line_item_id,
                    line.quantity,
                    line.unit_price_minor,
                    line.refunded_quantity,
                    line.refund_pending_quantity,
                )
                for line in lines
            ],
            amount_minor=body.amount_minor,
            requested=[(line.line_item_id, line.quantity) for line in body.lines]
            if body.lines is not None
            else None,
        )
        check_reason(body.reason_code, reason_codes)
        assert order.payment_ref is not None  # an order exists only once paid
        refund = self._new_refund(
            actor,
            order_id=order.order_id,
            exception_id=None,
            practice_id=order.practice_id,
            patient_id=order.patient_id,
            payment_ref=order.payment_ref,
            payment_method=order.payment_method or "card",
            currency=order.currency,
            plan=plan,
            reason_code=body.reason_code,
            note=body.note,
        )
        session.add(refund)
        hold(session, Order, Order.order_id == order.order_id, plan.amount_minor)
        session.flush()  # the refund row exists before its lines refer to it
        for planned in plan.lines:
            hold_units(session, planned.line_item_id, planned.quantity)
            session.add(
                RefundLine(
                    refund_id=refund.refund_id,
                    line_item_id=planned.line_item_id,
                    quantity=planned.quantity,
                    amount_minor=planned.amount_minor,
                )
            )
        return pending_of(refund)

    def reserve_exception_refund(
        self,
        session: Session,
        actor: Actor,
        exception_id: uuid.UUID,
        body: ExceptionRefundIn,
        reason_codes: Collection[str],
    ) -> PendingRefund:
        self.authorise(actor)
        found = session.get(PaymentException, exception_id, with_for_update=True)
        if found is None or not same(found.practice_id, actor.practice_id):
            raise NotFound("No such payment exception.")
        plan = plan_refund(
            refundable_minor=refundable(
                found.amount_minor, found.refunded_minor, found.refund_pending_minor
            ),
            captured_minor=found.amount_minor,
            total_minor=found.amount_minor,
            lines=[],
            amount_minor=body.amount_minor,
            requested=None,
        )
        check_reason(body.reason_code, reason_codes)
        refund = self._new_refund(
            actor,
            order_id=None,
            exception_id=found.exception_id,
            practice_id=found.practice_id,
            patient_id=found.patient_id,
            payment_ref=found.payment_ref,
            payment_method=found.payment_method or "card",
            currency=found.currency,
            plan=plan,
            reason_code=body.reason_code,
            note=body.note,
        )
        session.add(refund)
        hold(
            session,
            PaymentException,
            PaymentException.exception_id == found.exception_id,
            plan.amount_minor,
        )
        return pending_of(refund)

    def _new_refund(
        self,
        actor: Actor,
        *,
        order_id: uuid.UUID | None,
        exception_id: uuid.UUID | None,
        practice_id: uuid.UUID,
        patient_id: uuid.UUID,
        payment_ref: str,
        payment_method: str,
        currency: str,
        plan: RefundPlan,
        reason_code: str,
        note: str | None,
    ) -> Refund:
        assert actor.auth_time is not None  # authorise() checked the MFA step-up
        return Refund(
            refund_id=new_id(),
            order_id=order_id,
            payment_exception_id=exception_id,
            practice_id=practice_id,
            patient_id=patient_id,
            payment_ref=payment_ref,
            payment_method=payment_method,
            amount_minor=plan.amount_minor,
            currency=currency,
            reason_code=reason_code,
            note=note,
            kind=plan.kind,
            status="pending",
            initiated_by=actor.actor_id,
            initiated_by_name=actor.name,
            initiated_by_role=actor.role.value,
            initiated_at=self._clock.now(),
            mfa_at=actor.auth_time,
        )

    # ---- 3. the outcome ----------------------------------------------------------------------

    def succeeded(
        self, session: Session, refund_id: uuid.UUID, result: RefundResult, *, settled_by: str
    ) -> Refund:
        """Integrated Payments made the refund: record it all in this unit of work (idempotent:
        a refund already recorded is returned as it is)."""
        refund, subject = self._lock(session, refund_id)
        now = self._clock.now()
        if not leave_pending(
            session, refund, "succeeded", now, provider_refund_ref=result.refund_ref
        ):
            if refund.status == "succeeded":
                return refund  # settled already (by the request, or the settlement job)
            raise Conflict("This refund was recorded as failed.", code="refund_not_pending")
        count_on_commit(session, REFUNDS, outcome="succeeded", reason_code=refund.reason_code)
        count_on_commit(
            session,
            REFUNDED_MINOR_UNITS,
            refund.amount_minor,
            currency=refund.currency,
            reason_code=refund.reason_code,
        )
        outcome = {
            "refund_id": str(refund.refund_id),
            "amount_minor": refund.amount_minor,
            "currency": refund.currency,
            "reason_code": refund.reason_code,
            "kind": refund.kind,
            "payment_ref": refund.payment_ref,
            "payment_method": refund.payment_method,
            "provider_refund_ref": result.refund_ref,
            "initiated_at": refund.initiated_at,
            "mfa_at": refund.mfa_at,
            "settled_by": settled_by,
            # whether staff wrote a note, never its text: the log is never rewritten, so it
            # keeps no personal free text (the note itself is encrypted, refunds.note)
            "has_note": bool(refund.note),
        }
        if isinstance(subject, PaymentException):
            settle_hold(
                session,
                PaymentException,
                PaymentException.exception_id == subject.exception_id,
                refund.amount_minor,
                refunded=True,
            )
            entry = self._audit.record(
                session,
                stream_type="checkout",
                stream_id=subject.checkout_id,
                action="refund.succeeded",
                actor=staff_of(refund),
                practice_id=refund.practice_id,
                after={**outcome, "payment_exception_id": str(subject.exception_id)},
                at=now,
            )
            self._notices.exception_refunded(session, refund, subject, now)
        else:
            entry = self._orders.record(session, refund, subject, outcome, now)
        session.flush()
        refund.audit_entry_id, refund.audit_entry_hash = entry.entry_id, entry.entry_hash
        return refund

    def failed(self, session: Session, refund_id: uuid.UUID, code: str, message: str) -> Refund:
        """Integrated Payments refused the refund: nothing is refunded; the hold is released and
        the attempt stays on record (audited) with the reason."""
        refund, subject = self._lock(session, refund_id)
        now = self._clock.now()
        if not leave_pending(
            session, refund, "failed", now, failure_code=code[:64], failure_message=message
        ):
            return refund
        count_on_commit(session, REFUNDS, outcome="failed", reason_code=refund.reason_code)
        if isinstance(subject, Order):
            settle_hold(session, Order, Order.order_id == subject.order_id, refund.amount_minor)
            for line, quantity in refund_lines(session, refund):
                settle_units(session, line, quantity)
        else:
            settle_hold(
                session,
                PaymentException,
                PaymentException.exception_id == subject.exception_id,
                refund.amount_minor,
            )
        stream = (
            ("order", subject.order_id)
            if isinstance(subject, Order)
            else ("checkout", subject.checkout_id)
        )
        entry = self._audit.record(
            session,
            stream_type=stream[0],
            stream_id=stream[1],
            action="refund.failed",
            actor=staff_of(refund),
            practice_id=refund.practice_id,
            after={
                "refund_id": str(refund.refund_id),
                "amount_minor": refund.amount_minor,
                "currency": refund.currency,
                "reason_code": refund.reason_code,
                "payment_ref": refund.payment_ref,
                "failure_code": refund.failure_code,
                "failure_message": message,
            },
            at=now,
        )
        session.flush()
        refund.audit_entry_id, refund.audit_entry_hash = entry.entry_id, entry.entry_hash
        return refund

    def _lock(
        self, session: Session, refund_id: uuid.UUID
    ) -> tuple[Refund, Order | PaymentException]:
        """The refund and what it refunds, locked in the one order every writer uses: the order
        (or payment exception) first, then the refund."""
        found = session.get(Refund, refund_id)
        if found is None:
            raise NotFound("No such refund.")
        subject: Order | PaymentException | None
        if found.order_id is not None:
            subject = session.get(Order, found.order_id, with_for_update=True)
        else:
            subject = session.get(
                PaymentException, found.payment_exception_id, with_for_update=True
            )
        assert subject is not None
        refund = session.get(Refund, refund_id, with_for_update=True, populate_existing=True)
        assert refund is not None
        return refund, subject
