"""Payments that did not become orders: declined payments and orphaned captures.

A declined or failed payment fails the checkout (no order; the patient may retry, spec §5.2). A
capture that cannot become an order — a second capture for a checkout that has its order, the
wrong amount, a product that can no longer be bought, or a checkout that expired (its page
closed as the payment was taken) — is recorded once per intent as a
payment exception for a staff refund: system refunds are prohibited (spec §5.3). It is listed for
staff (`GET /v1/payment-exceptions`) until refunded through the staff-only path. Each adds its
audit entry and its outbox event to the caller's unit of work.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.audit.log import AuditLog
from product_shop.checkout.cancellation import PRODUCT_UNAVAILABLE
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.repository import lock_checkout
from product_shop.checkout.reversals import RedemptionReversals
from product_shop.core.clock import Clock
from product_shop.core.ids import new_id
from product_shop.events import inbox
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import CHECKOUT_STAGES, PAYMENT_CAPTURES
from product_shop.integrations.payments import PaymentStatus
from product_shop.refunds.tables import PaymentException

INBOX_SOURCE = "integrated_payments"
ORPHAN_SOURCE = "orphaned_capture"  # one record per captured intent that produced no order

# Orphaned captures that also fail the checkout: its failure code and reason.
_FAILS_CHECKOUT = {
    "amount_mismatch": ("payment_mismatch", "The amount captured did not match this checkout."),
    PRODUCT_UNAVAILABLE: (
        PRODUCT_UNAVAILABLE,
        "A product in this checkout can no longer be bought; the practice will refund the payment.",
    ),
}


class PaymentExceptions:
    def __init__(self, *, audit: AuditLog, outbox: Outbox, clock: Clock) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._reversals = RedemptionReversals(audit=audit, outbox=outbox, clock=clock)

    def orphaned_capture(
        self,
        session: Session,
        checkout_id: uuid.UUID,
        status: PaymentStatus,
        actor: Actor,
        message: str | None,
        *,
        reason: str,
    ) -> None:
        """Money was captured but no order can come of it: record it once and ask staff to
        refund."""
        now = self._clock.now()
        if message is not None:
            inbox.record(session, INBOX_SOURCE, message, "payment", now)
        if not inbox.record(session, ORPHAN_SOURCE, status.intent_id, reason, now):
            return  # already recorded for this intent
        # The money was captured (a success at Integrated Payments) though no order came of it;
        # the checkout reached `captured` unless it has its order from another capture.
        count_on_commit(session, PAYMENT_CAPTURES, outcome="success", reason="")
        if reason != "duplicate_capture":
            count_on_commit(session, CHECKOUT_STAGES, stage="captured")
        checkout = lock_checkout(session, checkout_id)
        if reason in _FAILS_CHECKOUT and checkout.status in (
            CheckoutStatus.AWAITING_PAYMENT,
            CheckoutStatus.FAILED,
        ):
            if checkout.status == CheckoutStatus.AWAITING_PAYMENT:
                checkout.status = transition(
                    CheckoutStatus.AWAITING_PAYMENT, CheckoutStatus.FAILED
                ).value
                count_on_commit(session, CHECKOUT_STAGES, stage="failed")
            checkout.failure_code, checkout.failure_reason = _FAILS_CHECKOUT[reason]
            checkout.updated_at = now
            checkout.version += 1
            self._reversals.after_failure(session, checkout, "checkout_not_payable")
        exception_id = new_id()
        assert status.transaction_ref is not None  # only a captured payment is orphaned
        session.add(
            PaymentException(
                exception_id=exception_id,
                checkout_id=checkout_id,
                practice_id=checkout.practice_id,
                patient_id=checkout.patient_id,
                intent_id=status.intent_id,
                payment_ref=status.transaction_ref,
                payment_method=status.method,
                amount_minor=status.amount_minor,
                currency=status.currency,
                expected_amount_minor=checkout.amount_due_minor,
                reason=reason,
                recorded_at=now,
            )
        )
        data = {
            "payment_exception_id": exception_id,
            "checkout_id": checkout_id,
            "patient_id": checkout.patient_id,
            "practice_id": checkout.practice_id,
            "intent_id": status.intent_id,
            "payment_ref": status.transaction_ref,
            "amount_minor": status.amount_minor,
            "currency": status.currency,
            "expected_amount_minor": checkout.amount_due_minor,
            "reason": reason,
            "action_required": "staff_refund",
            "notification": "payment_exception",
        }
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout_id,
            action="payment.orphaned_capture",
            actor=actor.audit_actor(),
            practice_id=checkout.practice_id,
            after=data,
            at=now,
        )
        self._outbox.emit(
            session, ev.PAYMENT_ORPHANED_CAPTURE, aggregate_id=checkout_id, data=data, at=now
        )

    def payment_failed(
        self,
        session: Session,
        checkout_id: uuid.UUID,
        status: PaymentStatus,
        actor: Actor,
        message: str | None,
    ) -> None:
        """The current attempt failed: the checkout fails (a failure of an earlier attempt, or
        of a checkout no longer awaiting payment, changes nothing)."""
        checkout = lock_checkout(session, checkout_id)
        now = self._clock.now()
        if message is not None:  # idempotent: a message already seen stays as it was
            inbox.record(session, INBOX_SOURCE, message, "payment", now)
        if (
            checkout.status != CheckoutStatus.AWAITING_PAYMENT
            or checkout.payment_intent_id != status.intent_id
        ):
            return
        checkout.status = transition(CheckoutStatus.AWAITING_PAYMENT, CheckoutStatus.FAILED).value
        # Points confirmed for this checkout go back to the patient (spec §5.4, rule 13).
        self._reversals.after_failed_payment(session, checkout)
        checkout.failure_code = status.failure_code or "payment_failed"
        count_on_commit(
            session, PAYMENT_CAPTURES, outcome="failure", reason=checkout.failure_code[:64]
        )
        count_on_commit(session, CHECKOUT_STAGES, stage="failed")
        checkout.failure_reason = status.failure_message or "The payment did not go through."
        checkout.updated_at = now
        checkout.version += 1
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout_id,
            action="checkout.payment_failed",
            actor=actor.audit_actor(),
            practice_id=checkout.practice_id,
            before={"status": CheckoutStatus.AWAITING_PAYMENT.value},
            after={
                "status": checkout.status,
                "failure_code": checkout.failure_code,
                "intent_id": status.intent_id,
            },
            at=now,
        )
        self._outbox.emit(
            session,
            ev.CHECKOUT_PAYMENT_FAILED,
            aggregate_id=checkout_id,
            data={
                "checkout_id": checkout_id,
                "patient_id": checkout.patient_id,
                "practice_id": checkout.practice_id,
                "intent_id": status.intent_id,
                "failure_code": checkout.failure_code,
                "failure_reason": checkout.failure_reason,
                "amount_minor": checkout.amount_due_minor,
                "currency": checkout.currency,
                "attempt": checkout.payment_attempts,
                "notification": "payment_exception",
            },
            at=now,
        )
