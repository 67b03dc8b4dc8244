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

The `Outcome` says what happened; `outcomes.answer` turns it into the order or the problem.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.audit.log import AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.checkout.cancellation import PRODUCT_UNAVAILABLE
from product_shop.checkout.fulfilment_port import (
    FulfilmentTrigger,
    NoFulfilment,
)
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.outcomes import Outcome, Result
from product_shop.checkout.payment_exceptions import INBOX_SOURCE, PaymentExceptions
from product_shop.checkout.repository import (
    CheckoutLineRow,
    CheckoutRow,
    check_owner,
    read_checkout,
    read_for_completion,
)
from product_shop.checkout.tables import Checkout, PaymentCapture, PointsRedemption
from product_shop.core.clock import Clock
from product_shop.core.errors import BadGateway, Conflict, ServiceUnavailable
from product_shop.core.ids import new_id
from product_shop.core.timing import timed
from product_shop.db.fast import Statements
from product_shop.events import inbox
from product_shop.events.outbox import Outbox
from product_shop.events.tables import OutboxEvent
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import CHECKOUT_STAGES, ORDERS_CREATED, PAYMENT_CAPTURES
from product_shop.integrations.payments import (
    ACCEPTED_METHODS,
    IntegratedPayments,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    PaymentsUnavailable,
)
from product_shop.logging import get_logger
from product_shop.orders.events import CaptureRow, OrderLineRow, OrderRow, order_created_events
from product_shop.orders.model import LineState, OrderStatus, RefundStatus
from product_shop.orders.queries import build_order_document, order_document
from product_shop.orders.tables import Order, OrderLine

log = get_logger("product_shop.checkout")

CHECKOUT_EXPIRED = "checkout_expired"  # the payment exception of a capture after the expiry

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
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._fulfilment = fulfilment or NoFulfilment()
        self._exceptions = PaymentExceptions(audit=audit, outbox=outbox, clock=clock)

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
            return self._settled(session, checkout, message)
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
            return self._create_order(session, pending, status, actor, message)
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
                return self._settled(session, now, None)
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

    def _settled(self, session: Session, checkout: CheckoutRow, message: str | None) -> Outcome:
        """The order of a completed checkout."""
        if message is not None:  # idempotent: a message already seen stays as it was
            inbox.record(session, INBOX_SOURCE, message, "payment", self._clock.now())
        assert checkout.order_id is not None
        order = session.get(Order, checkout.order_id)
        assert order is not None
        return Outcome(Result.ORDER, order=order_document(session, order))

    def settle_with_points(
        self, session: Session, checkout_id: uuid.UUID, settlement_ref: str, actor: Actor
    ) -> Outcome:
        """The order of a checkout whose total a confirmed Rewards Manager redemption covers
        (spec §3.2, §5.4): no capture, the settlement reference instead. The caller has
        recorded the confirmed redemption in this unit of work."""
        checkout = read_checkout(session, checkout_id)
        assert checkout is not None
        return self._create_order(
            session, Pending(checkout, ""), None, actor, None, settlement_ref=settlement_ref
        )

    def _create_order(
        self,
        session: Session,
        pending: Pending,
        status: PaymentStatus | None,
        actor: Actor,
        message: str | None,
        *,
        settlement_ref: str | None = None,
    ) -> Outcome:
        """The order's rows, queued through `db.fast.Statements`: on PostgreSQL the unit of
        work sends them with its COMMIT in one round trip (docs/benchmarks.md). Paid by the
        capture `status`, or (no capture) by the points settlement `settlement_ref`."""
        checkout_id = pending.checkout.checkout_id
        read = read_for_completion(session, checkout_id)
        checkout = read.checkout
        self._audit.note_head(session, "checkout", checkout_id, read.audit_head)
        if checkout.status == CheckoutStatus.COMPLETED:
            if status is not None and checkout.payment_intent_id != status.intent_id:
                # A second capture for a checkout that already has its order.
                self._exceptions.orphaned_capture(
                    session, checkout_id, status, actor, None, reason="duplicate_capture"
                )
            return self._settled(session, checkout, message)
        if status is not None and checkout.status == CheckoutStatus.EXPIRED:
            # Its page was closed before it expired (`jobs/checkout_expiry.py`), yet the gateway
            # took the money (authorised as the cancellation arrived): no order from an expired
            # checkout, whose points may have gone back; recorded once for a staff refund.
            self._exceptions.orphaned_capture(
                session, checkout_id, status, actor, message, reason=CHECKOUT_EXPIRED
            )
            return Outcome(Result.CHECKOUT_EXPIRED)
        payable = (
            (CheckoutStatus.AWAITING_PAYMENT, CheckoutStatus.FAILED)
            if status is not None
            else (CheckoutStatus.AWAITING_REDEMPTION,)
        )
        if checkout.status not in payable:
            raise Conflict(
                f"This checkout is {checkout.status}.", code=f"checkout_{checkout.status}"
            )
        if checkout.failure_code == PRODUCT_UNAVAILABLE or not all(
            line.purchasable for line in read.lines
        ):
            if status is not None:
                self._exceptions.orphaned_capture(
                    session, checkout_id, status, actor, message, reason=PRODUCT_UNAVAILABLE
                )
            return Outcome(Result.PRODUCT_UNAVAILABLE)
        if status is not None and checkout.redemption_ref is not None:
            redemption = session.get(PointsRedemption, checkout.redemption_ref)
            if redemption is not None and redemption.status != "confirmed":
                # The points went back after an earlier failure: this capture cannot make the
                # order at the discount; staff refund it (spec §5.4).
                self._exceptions.orphaned_capture(
                    session, checkout_id, status, actor, message, reason="redemption_reversed"
                )
                return Outcome(Result.POINTS_RETURNED)
        now = self._clock.now()
        if message is not None:
            inbox.record(session, INBOX_SOURCE, message, "payment", now)
        capture = None
        if status is not None:
            assert status.transaction_ref is not None
            capture = CaptureRow(
                transaction_ref=status.transaction_ref,
                intent_id=status.intent_id,
                checkout_id=checkout_id,
                amount_minor=status.amount_minor,
                currency=status.currency,
                method=status.method or "card",
                card_scheme=status.card_scheme,
                card_last4=status.card_last4,
                confirmed_at=now,
            )
        order_id = new_id()
        order = OrderRow(
            order_id=order_id,
            checkout_id=checkout_id,
            patient_id=checkout.patient_id,
            practice_id=checkout.practice_id,
            status=OrderStatus.CREATED.value,
            fulfilment_status=OrderStatus.CREATED.value,
            refund_status=RefundStatus.NONE.value,
            currency=checkout.currency,
            total_minor=checkout.total_minor,
            captured_minor=capture.amount_minor if capture else 0,
            refunded_minor=0,
            payment_ref=capture.transaction_ref if capture else None,
            payment_method=capture.method if capture else "points",
            redemption_ref=checkout.redemption_ref,
            pms_invoice_ref=None,
            created_by=str(checkout.patient_id),
            created_at=now,
            updated_at=now,
            version=1,
            redeemed_minor=checkout.redemption_amount_minor,
            settlement_ref=settlement_ref,
        )
        lines = [_order_line(order_id, line, now) for line in read.lines]
        started = self._fulfilment.order_created(order, lines, checkout, read.lines, now)
        order_row = started.order._asdict()
        line_rows = [line._asdict() for line in started.lines]
        # A capture on any attempt of this checkout completes it, including an earlier attempt
        # confirmed late: the patient has paid, so the order exists.
        completed = transition(CheckoutStatus(checkout.status), CheckoutStatus.COMPLETED)
        fast = Statements(session)
        # Foreign keys set the order: capture, order, lines, then the checkout that points to it.
        if capture is not None:
            fast.insert(PaymentCapture, [capture._asdict()])
        fast.insert(Order, [order_row])
        fast.insert(OrderLine, line_rows)
        fast.update(
            Checkout,
            {"checkout_id": checkout_id},
            {
                "status": completed.value,
                "payment_intent_id": status.intent_id if status else checkout.payment_intent_id,
                "order_id": order_id,
                "updated_at": now,
                "version": checkout.version + 1,
            },
        )
        trail = self._record_order_created(
            session, fast, checkout, completed, order, capture, actor
        )
        fast.insert(
            OutboxEvent,
            [
                self._outbox.row(
                    event.event_type, aggregate_id=event.aggregate_id, data=event.data, at=now
                )
                for event in order_created_events(order, lines, capture)
            ],
        )
        trail += started.follow_up(session, fast)
        _count_order(session, capture)
        document = build_order_document(
            order_row, line_rows, capture._asdict() if capture else None, trail, started.vouchers
        )
        current = pending.checkout.payment_intent_id
        paid_with = status.intent_id if status else None
        return Outcome(
            Result.ORDER,
            order=document,
            close_intent=current if current not in (None, paid_with) else None,
        )

    def _record_order_created(
        self,
        session: Session,
        fast: Statements,
        checkout: CheckoutRow,
        completed: CheckoutStatus,
        order: OrderRow,
        capture: CaptureRow | None,
        actor: Actor,
    ) -> list[dict[str, Any]]:
        """The audit entries of a new order; returns the order's audit trail."""
        now, order_id, practice_id = order.created_at, order.order_id, order.practice_id
        who = actor.audit_actor()
        audit = self._audit.row
        entries = [
            audit(
                session,
                stream_type="checkout",
                stream_id=checkout.checkout_id,
                action="checkout.completed",
                actor=who,
                practice_id=practice_id,
                before={"status": checkout.status},
                after={"status": completed.value, "order_id": str(order_id)},
                at=now,
            ),
            audit(
                session,
                stream_type="order",
                stream_id=order_id,
                new_stream=True,
                action="payment.captured" if capture else "redemption.settled",
                actor=who,
                practice_id=practice_id,
                after={
                    "payment_ref": capture.transaction_ref,
                    "intent_id": capture.intent_id,
                    "amount_minor": capture.amount_minor,
                    "currency": capture.currency,
                    "method": capture.method,
                    "redemption_ref": order.redemption_ref,
                    "redeemed_minor": order.redeemed_minor,
                }
                if capture
                else {
                    "settlement_ref": order.settlement_ref,
                    "redemption_ref": order.redemption_ref,
                    "redeemed_minor": order.redeemed_minor,
                    "currency": order.currency,
                },
                at=now,
            ),
            audit(
                session,
                stream_type="order",
                stream_id=order_id,
                action="order.created",
                actor=who,
                practice_id=practice_id,
                before={"status": None},
                after={
                    "status": order.status,
                    "created_by": order.created_by,
                    "total_minor": order.total_minor,
                },
                at=now,
            ),
        ]
        fast.insert(AuditEntry, entries)
        return entries[1:]


def _count_order(session: Session, capture: CaptureRow | None) -> None:
    """The funnel's `captured` (a capture that made the order) and `completed`, and the order,
    counted once the unit of work commits."""
    if capture is not None:
        count_on_commit(session, PAYMENT_CAPTURES, outcome="success", reason="")
        count_on_commit(session, CHECKOUT_STAGES, stage="captured")
        paid_by = capture.method if capture.method in ACCEPTED_METHODS else "other"
    else:
        paid_by = "points"
    count_on_commit(session, CHECKOUT_STAGES, stage="completed")
    count_on_commit(session, ORDERS_CREATED, paid_by=paid_by)


def _order_line(order_id: uuid.UUID, line: CheckoutLineRow, now: Any) -> OrderLineRow:
    return OrderLineRow(
        line_item_id=new_id(),
        order_id=order_id,
        line_no=line.line_no,
        product_id=line.product_id,
        product_name=line.product_name,
        quantity=line.quantity,
        unit_price_minor=line.unit_price_minor,
        fulfilment_type=line.fulfilment_type,
        fulfilment_status=LineState.PENDING.value,
        fulfilment_ref=None,
        carrier=None,
        tracking_number=None,
        tracking_url=None,
        updated_at=now,
    )
