"""Completing a checkout: the one place where an Order is born (spec §3.2, §5.2, §15.2).

Triggered by the patient app (`POST /v1/checkouts/{id}/complete`) and by Integrated Payments'
webhook, in three steps that the caller (the request, or a job) runs, each step's database work
in a unit of work of the caller's:

1. `begin`: read the checkout; answer at once when it already has its order.
2. `confirm`: read the payment's status through Integrated Payments' sync API (never trust a
   callback's body alone). No transaction is open meanwhile.
3. `record`: for a confirmed capture, add the capture record, the order and its lines, the audit
   entries and the outbox events, and mark the checkout completed; or record why no order came
   of it (a failed payment, an orphaned capture). The checkout row is locked and
   `orders.checkout_id` is unique, so concurrent or repeated completions make exactly one order.
   The step is safe to run again: the caller retries it when a concurrent completion won.
   The order itself is made in `checkout.order_creation`.

The `Outcome` says what happened; `outcomes.answer` turns it into the order or the problem.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.audit.log import AuditLog
from product_shop.checkout.fulfilment_port import (
    FulfilmentTrigger,
    NoFulfilment,
)
from product_shop.checkout.model import CheckoutStatus
from product_shop.checkout.order_creation import OrderCreation
from product_shop.checkout.outcomes import Outcome, Result
from product_shop.checkout.payment_exceptions import INBOX_SOURCE, PaymentExceptions
from product_shop.checkout.repository import CheckoutRow, check_owner, read_checkout
from product_shop.core.clock import Clock
from product_shop.core.errors import BadGateway, Conflict, ServiceUnavailable
from product_shop.core.timing import timed
from product_shop.events import inbox
from product_shop.events.outbox import Outbox
from product_shop.integrations.payments import (
    IntegratedPayments,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    PaymentsUnavailable,
)
from product_shop.logging import get_logger

log = get_logger("product_shop.checkout")

PAYMENTS_ACTOR = Actor(
    actor_id="integrated-payments",
    name="Integrated Payments",
    role=Role.SERVICE,
    practice_id=None,
    mfa=False,
    auth_time=None,
)


class Pending(NamedTuple):
    """A checkout to complete once its payment's status is known."""

    checkout: CheckoutRow
    intent_id: str  # the intent to confirm: the current one, or an earlier one a callback names


class CheckoutCompletion:
    def __init__(
        self,
        *,
        payments: IntegratedPayments,
        audit: AuditLog,
        outbox: Outbox,
        clock: Clock,
        fulfilment: FulfilmentTrigger | None = None,
    ) -> None:
        self._payments = payments
        self._clock = clock
        self._exceptions = PaymentExceptions(audit=audit, outbox=outbox, clock=clock)
        self._orders = OrderCreation(
            audit=audit,
            outbox=outbox,
            clock=clock,
            fulfilment=fulfilment or NoFulfilment(),
            exceptions=self._exceptions,
        )

    # ---- step 1 --------------------------------------------------------------------------

    def webhook_seen(self, session: Session, message_id: str, checkout_id: uuid.UUID) -> str | None:
        """Why a payments callback needs no work: "duplicate" (seen before) or "ignored" (for
        no checkout of ours; recorded as seen). None: it needs completing."""
        if inbox.seen(session, INBOX_SOURCE, message_id):
            return "duplicate"
        if read_checkout(session, checkout_id) is None:
            inbox.record(session, INBOX_SOURCE, message_id, "payment", self._clock.now())
            return "ignored"
        return None

    def begin(
        self,
        session: Session,
        checkout_id: uuid.UUID,
        *,
        owner: Actor | None = None,
        intent_id: str | None = None,
        message: str | None = None,
    ) -> Pending | Outcome:
        """The checkout to complete; or, when it already has its order for this intent, the
        outcome (the app asks about the current attempt; a callback may name an earlier one).
        A failed checkout is asked again: the patient may have paid with another card on the
        same payment page; so is an expired one, whose page may have been paid as it was closed
        (`record` makes that capture a payment exception, and answers anything else with 409
        `checkout_expired`). `owner`: the patient who must own it (404 for anyone else)."""
        checkout = read_checkout(session, checkout_id)
        if owner is not None:
            check_owner(owner, checkout.patient_id if checkout else None)
        assert checkout is not None
        target = intent_id or checkout.payment_intent_id
        if target is None:  # points not confirmed yet, or the payment for the rest not open
            raise Conflict(
                "No payment has been opened for this checkout yet.",
                code=f"checkout_{checkout.status}",
            )
        if checkout.status == CheckoutStatus.COMPLETED and target == checkout.payment_intent_id:
            return self._orders.settled(session, checkout, message)
        if checkout.status not in (
            CheckoutStatus.AWAITING_PAYMENT,
            CheckoutStatus.FAILED,
            CheckoutStatus.COMPLETED,
            CheckoutStatus.EXPIRED,
        ):
            raise Conflict(
                f"This checkout is {checkout.status}.", code=f"checkout_{checkout.status}"
            )
        return Pending(checkout, target)

    # ---- step 2 --------------------------------------------------------------------------

    def confirm(self, pending: Pending) -> PaymentStatus:
        """The payment's status through Integrated Payments' sync API."""
        try:
            with timed("payment-confirm"):
                status = self._payments.get_payment(pending.intent_id)
        except PaymentsUnavailable as exc:
            raise ServiceUnavailable(
                "We could not confirm the payment with Integrated Payments yet. No order was "
                "created and you will not be charged twice; try again in a moment.",
                code="payment_status_unknown",
            ) from exc
        except PaymentRejected as exc:
            raise BadGateway(
                "Integrated Payments could not tell us about this payment. No order was created; "
                "the payments team has the details.",
                code="payment_status_unavailable",
            ) from exc
        if status.merchant_reference != str(pending.checkout.checkout_id):
            raise Conflict("The payment does not belong to this checkout.", code="payment_mismatch")
        return status

    # ---- step 3 --------------------------------------------------------------------------

    def record(
        self,
        session: Session,
        pending: Pending,
        status: PaymentStatus,
        actor: Actor,
        message: str | None,
    ) -> Outcome:
        """What the payment's status means for the checkout, recorded in the caller's unit of
        work. Safe to run again (it reads everything it decides on)."""
        checkout_id = pending.checkout.checkout_id
        if (
            pending.checkout.status == CheckoutStatus.EXPIRED
            and status.state is not PaymentState.CAPTURED
        ):
            raise Conflict("This checkout is expired.", code="checkout_expired")
        if status.state is PaymentState.CAPTURED:
            expected = (pending.checkout.amount_due_minor, pending.checkout.currency)
            if (status.amount_minor, status.currency) != expected:
                self._exceptions.orphaned_capture(
                    session, checkout_id, status, actor, message, reason="amount_mismatch"
                )
                return Outcome(
                    Result.PAYMENT_MISMATCH,
                    checkout=pending.checkout,
                    captured_minor=status.amount_minor,
                )
            return self._orders.create(session, pending, status, actor, message)
        if status.state is PaymentState.FAILED:
            self._exceptions.payment_failed(session, checkout_id, status, actor, message)
        # Failed, or cancelled by us (a retry, a product no longer purchasable): the checkout's
        # own state answers.
        if status.state in (PaymentState.FAILED, PaymentState.CANCELLED):
            session.flush()
            now = read_checkout(session, checkout_id)
            assert now is not None
            if now.status == CheckoutStatus.FAILED:
                return Outcome(Result.PAYMENT_FAILED, checkout=now)
            if now.status == CheckoutStatus.COMPLETED:
                return self._orders.settled(session, now, None)
        return Outcome(Result.NOT_CAPTURED)

    def after_commit(self, outcome: Outcome) -> None:
        """Close a payment page left open (an order came from an earlier one). Best effort: a
        page still paid is caught as an orphaned capture."""
        if outcome.close_intent is None:
            return
        try:
            self._payments.cancel_intent(outcome.close_intent)
        except (PaymentsUnavailable, PaymentRejected):
            log.warning("payment_intent_not_cancelled", intent_id=outcome.close_intent)

    # ---- the order -----------------------------------------------------------------------

    def settle_with_points(
        self, session: Session, checkout_id: uuid.UUID, settlement_ref: str, actor: Actor
    ) -> Outcome:
        """The order of a checkout whose total a confirmed Rewards Manager redemption covers
        (spec §3.2, §5.4): no capture, the settlement reference instead. The caller has
        recorded the confirmed redemption in this unit of work."""
        checkout = read_checkout(session, checkout_id)
        assert checkout is not None
        return self._orders.create(
            session, Pending(checkout, ""), None, actor, None, settlement_ref=settlement_ref
        )
