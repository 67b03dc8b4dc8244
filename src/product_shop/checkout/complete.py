"""Completing a checkout: the one place where an Order is born (spec §3.2, §5.2, §15.2).

Triggered by the patient app (`POST /v1/checkouts/{id}/complete`) and by Integrated Payments'
webhook. Either way: read the payment's status through the sync API (never trust a callback's
body alone), then, only for a confirmed capture, write in ONE transaction the capture record,
the order and its lines, the audit entries and the outbox events, and mark the checkout
completed. The checkout row is locked, and `orders.checkout_id` is unique, so any number of
concurrent or repeated completions make exactly one order; every successful call returns it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import and_, bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.audit.log import STREAM_HEAD, AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.model import (
    AvailabilityStatus,
    FulfilmentType,
    PracticeOffer,
    purchase_blocker,
)
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.checkout.cancellation import PRODUCT_UNAVAILABLE
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.service import check_owner, lock_checkout
from product_shop.checkout.tables import Checkout, CheckoutLine, PaymentCapture
from product_shop.core.clock import Clock
from product_shop.core.errors import BadGateway, Conflict, ProductShopError, ServiceUnavailable
from product_shop.core.ids import new_id
from product_shop.core.timing import timed
from product_shop.db.engine import Database
from product_shop.db.fast import Row, Statements
from product_shop.events import inbox
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.events.tables import OutboxEvent
from product_shop.integrations.payments import (
    IntegratedPayments,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    PaymentsUnavailable,
)
from product_shop.logging import get_logger
from product_shop.orders.model import LineState, OrderStatus, RefundStatus
from product_shop.orders.queries import build_order_document, order_document, patient_view
from product_shop.orders.schemas import OrderOut, PatientOrderOut
from product_shop.orders.tables import Order, OrderLine

log = get_logger("product_shop.checkout")

PAYMENTS_ACTOR = Actor(
    actor_id="integrated-payments",
    name="Integrated Payments",
    role=Role.SERVICE,
    practice_id=None,
    mfa=False,
    auth_time=None,
)
INBOX_SOURCE = "integrated_payments"
ORPHAN_SOURCE = "orphaned_capture"  # one record per captured intent that produced no order
T = TypeVar("T")
_ATTEMPTS = 4

# The completion's reads, compiled once (db.fast): the checkout (locked to write) and its lines.
_CHECKOUT = select(
    Checkout.checkout_id,
    Checkout.patient_id,
    Checkout.practice_id,
    Checkout.status,
    Checkout.currency,
    Checkout.total_minor,
    Checkout.amount_due_minor,
    Checkout.payment_intent_id,
    Checkout.redemption_ref,
    Checkout.order_id,
    Checkout.failure_code,
    Checkout.failure_reason,
    Checkout.version,
).where(Checkout.checkout_id == bindparam("checkout_id"))
_LOCKED_CHECKOUT = _CHECKOUT.with_for_update()
# The lines, with whether each product may still be bought at the checkout's practice (read in
# the same round trip: availability is re-checked when the order is born, spec §15.2 rule 7).
_LINES = (
    select(
        CheckoutLine.line_no,
        CheckoutLine.product_id,
        CheckoutLine.product_name,
        CheckoutLine.quantity,
        CheckoutLine.unit_price_minor,
        CheckoutLine.fulfilment_type,
        Product.availability_status,
        PracticeProductSetting.retail_price_minor,
        PracticeProductSetting.visible,
        PracticeProductSetting.in_clinic_stock_available,
    )
    .join(Checkout, Checkout.checkout_id == CheckoutLine.checkout_id)
    .join(Product, Product.product_id == CheckoutLine.product_id)
    .outerjoin(
        PracticeProductSetting,
        and_(
            PracticeProductSetting.practice_id == Checkout.practice_id,
            PracticeProductSetting.product_id == CheckoutLine.product_id,
        ),
    )
    .where(CheckoutLine.checkout_id == bindparam("checkout_id"))
    .order_by(CheckoutLine.line_no)
)


class PaymentFailed(ProductShopError):
    status = 402
    code = "payment_failed"
    title = "Payment failed"


class PaymentMismatch(Conflict):
    code = "payment_mismatch"
    title = "Payment does not match the checkout"


class ProductNoLongerAvailable(Conflict):
    code = PRODUCT_UNAVAILABLE
    title = "A product can no longer be bought"


class FulfilmentTrigger(Protocol):
    """Starts fulfilment for a new order, inside the order's transaction (fulfilment issue).
    The order and its lines are the rows being written (column names as keys). They reach the
    database after any ORM object the trigger adds (`Statements.flush(commit=True)` flushes the
    session first), so a row that references the new order must not be added through the ORM."""

    def order_created(
        self, session: Session, order: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]
    ) -> None: ...


class NoFulfilmentYet:
    def order_created(
        self, session: Session, order: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]
    ) -> None:
        return None


class CheckoutCompletion:
    def __init__(
        self,
        *,
        database: Database,
        payments: IntegratedPayments,
        audit: AuditLog,
        outbox: Outbox,
        clock: Clock,
        fulfilment: FulfilmentTrigger | None = None,
    ) -> None:
        self._database = database
        self._payments = payments
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._fulfilment = fulfilment or NoFulfilmentYet()

    # ---- entry points ----------------------------------------------------------------------

    def complete_for_patient(self, actor: Actor, checkout_id: uuid.UUID) -> PatientOrderOut:
        """The patient's order (their view of it) once the capture is confirmed."""
        return patient_view(self._complete(checkout_id, actor, message=None, owner=actor))

    def handle_payment_webhook(
        self, message_id: str, intent_id: str, merchant_reference: str
    ) -> str:
        """Process an authentic payments callback once. Returns what happened, for the response.

        The callback only says which intent to look at: its status is always read through the
        sync API. A capture on an earlier attempt of the checkout still completes it; a capture
        after the checkout already has its order is recorded as an orphaned capture for staff."""
        try:
            checkout_id = uuid.UUID(merchant_reference)
        except ValueError:
            return "ignored"
        with self._database.unit_of_work() as session:
            if inbox.seen(session, INBOX_SOURCE, message_id):
                return "duplicate"
            if Statements(session).one(_CHECKOUT, checkout_id=checkout_id) is None:
                inbox.record(session, INBOX_SOURCE, message_id, "payment", self._clock.now())
                return "ignored"
        try:
            self._complete(checkout_id, PAYMENTS_ACTOR, message=message_id, intent_id=intent_id)
        except PaymentFailed:
            return "payment_failed"
        except PaymentMismatch:
            return "payment_mismatch"
        except ProductNoLongerAvailable:
            return "payment_exception"
        except Conflict:
            return "not_captured"
        return "order_created"

    # ---- the use case -----------------------------------------------------------------------

    def _complete(
        self,
        checkout_id: uuid.UUID,
        actor: Actor,
        *,
        message: str | None,
        owner: Actor | None = None,
        intent_id: str | None = None,
    ) -> OrderOut:
        # A read with no transaction of its own (PostgreSQL: one round trip), unless a webhook's
        # message id may be recorded on the way.
        before = self._database.reading() if message is None else self._database.unit_of_work()
        with before as session:
            found = Statements(session).one(_CHECKOUT, checkout_id=checkout_id)
            if owner is not None:
                check_owner(owner, found["patient_id"] if found else None)  # 404 unless theirs
            assert found is not None
            checkout = found
            target = intent_id or checkout["payment_intent_id"]
            assert target is not None
            # Settled already? (The app asks about the current attempt; a callback may name an
            # earlier one.) A failed checkout is asked again: the patient may have paid with
            # another card on the same payment page.
            if (
                checkout["status"] == CheckoutStatus.COMPLETED
                and target == checkout["payment_intent_id"]
            ):
                done = self._settled(session, checkout, message)
                assert done is not None
                return done
            if checkout["status"] not in (
                CheckoutStatus.AWAITING_PAYMENT,
                CheckoutStatus.FAILED,
                CheckoutStatus.COMPLETED,
            ):
                self._settled(session, checkout, message)  # raises: expired, awaiting redemption
            expected = (checkout["amount_due_minor"], checkout["currency"])
        status = self._confirm(target)
        if status.merchant_reference != str(checkout_id):
            raise Conflict("The payment does not belong to this checkout.", code="payment_mismatch")
        if status.state is PaymentState.CAPTURED:
            if (status.amount_minor, status.currency) != expected:
                self._with_retries(
                    lambda s: self._record_orphaned_capture(
                        s, checkout_id, status, actor, message, reason="amount_mismatch"
                    )
                )
                raise PaymentMismatch(
                    "Integrated Payments captured a different amount than this checkout's; no "
                    "order was created and staff have been asked to refund it.",
                    captured_minor=status.amount_minor,
                    expected_minor=expected[0],
                )
            with timed("order-create"):
                order = self._with_retries(
                    lambda s: self._create_order(s, checkout_id, status, actor, message)
                )
            if order is None:
                raise ProductNoLongerAvailable(
                    "A product in this checkout can no longer be bought, so no order was "
                    "created. The practice has been asked to refund your payment."
                )
            if target != checkout["payment_intent_id"]:
                # Paid on an earlier attempt's page: close the current one so it takes nothing.
                self._cancel_quietly(checkout["payment_intent_id"])
            return order
        if status.state in (PaymentState.FAILED, PaymentState.CANCELLED):
            if status.state is PaymentState.FAILED:
                self._with_retries(
                    lambda s: self._record_failure(s, checkout_id, status, actor, message)
                )
            # A cancelled intent belongs to a checkout we stopped (retried, or a product that
            # can no longer be bought): answer with the checkout's own state.
            with self._database.unit_of_work() as session:
                settled = Statements(session).one(_CHECKOUT, checkout_id=checkout_id)
                assert settled is not None
                done = self._settled(session, settled, None)  # PaymentFailed when failed
                if done is not None:
                    return done
        raise Conflict(
            "The payment has not been made yet: complete it on the payment page first.",
            code="payment_not_captured",
        )

    def _cancel_quietly(self, intent_id: str | None) -> None:
        """Best effort, after commit: a page left open is still caught as an orphaned capture."""
        if intent_id is None:
            return
        try:
            self._payments.cancel_intent(intent_id)
        except (PaymentsUnavailable, PaymentRejected):
            log.warning("payment_intent_not_cancelled", intent_id=intent_id)

    def _confirm(self, intent_id: str) -> PaymentStatus:
        """The payment's status through Integrated Payments' sync API."""
        try:
            with timed("payment-confirm"):
                return self._payments.get_payment(intent_id)
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

    def _with_retries(self, work: Callable[[Session], T]) -> T:
        """Concurrent completions race on the checkout row (PostgreSQL: lock; SQLite: the
        single writer). The loser retries and finds the winner's order."""
        for attempt in range(_ATTEMPTS):
            try:
                with self._database.unit_of_work() as session:
                    return work(session)
            except (IntegrityError, OperationalError):
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _settled(self, session: Session, checkout: Row, message: str | None) -> OrderOut | None:
        """The answer when the checkout is already settled; None when it still awaits payment."""
        status = checkout["status"]
        if status == CheckoutStatus.COMPLETED and checkout["order_id"] is not None:
            if message is not None:  # idempotent: a message already seen stays as it was
                inbox.record(session, INBOX_SOURCE, message, "payment", self._clock.now())
            order = session.get(Order, checkout["order_id"])
            assert order is not None
            return order_document(session, order)
        if status == CheckoutStatus.FAILED:
            raise PaymentFailed(
                f"{checkout['failure_reason'] or 'The payment did not go through.'} "
                "No order was created. To try again, ask for a new payment page (retry_url); the "
                "previous page is then closed.",
                failure_code=checkout["failure_code"],
                retry_url=f"/v1/checkouts/{checkout['checkout_id']}/retry",
            )
        if status != CheckoutStatus.AWAITING_PAYMENT:
            raise Conflict(f"This checkout is {status}.", code=f"checkout_{status}")
        return None

    def _create_order(
        self,
        session: Session,
        checkout_id: uuid.UUID,
        status: PaymentStatus,
        actor: Actor,
        message: str | None,
    ) -> OrderOut | None:
        """The order's transaction. Its rows go out through `db.fast.Statements`: on PostgreSQL
        three round trips (psycopg's BEGIN, the reads, the writes with the COMMIT); see
        docs/benchmarks.md for why. None: the capture became a payment exception because a
        product can no longer be bought (no order)."""
        fast = Statements(session)
        by_checkout = {"checkout_id": checkout_id}
        checkouts, checkout_lines, heads = fast.many(
            (_LOCKED_CHECKOUT, by_checkout),
            (_LINES, by_checkout),
            (STREAM_HEAD, {"stream_type": "checkout", "stream_id": str(checkout_id)}),
        )
        checkout = checkouts[0]
        self._audit.note_head(session, "checkout", checkout_id, heads[0] if heads else None)
        if checkout["status"] == CheckoutStatus.COMPLETED:
            if checkout["payment_intent_id"] != status.intent_id:
                # A second capture for a checkout that already has its order.
                self._record_orphaned_capture(
                    session, checkout_id, status, actor, None, reason="duplicate_capture"
                )
            done = self._settled(session, checkout, message)
            assert done is not None
            return done
        if checkout["status"] not in (CheckoutStatus.AWAITING_PAYMENT, CheckoutStatus.FAILED):
            raise Conflict(
                f"This checkout is {checkout['status']}.", code=f"checkout_{checkout['status']}"
            )
        if checkout["failure_code"] == PRODUCT_UNAVAILABLE or _blocked(checkout_lines):
            self._record_orphaned_capture(
                session, checkout_id, status, actor, message, reason=PRODUCT_UNAVAILABLE
            )
            return None
        now = self._clock.now()
        assert status.transaction_ref is not None
        if message is not None:
            inbox.record(session, INBOX_SOURCE, message, "payment", now)
        capture: Row = {
            "transaction_ref": status.transaction_ref,
            "intent_id": status.intent_id,
            "checkout_id": checkout_id,
            "amount_minor": status.amount_minor,
            "currency": status.currency,
            "method": status.method or "card",
            "card_scheme": status.card_scheme,
            "card_last4": status.card_last4,
            "confirmed_at": now,
        }
        order_id = new_id()
        order: Row = {
            "order_id": order_id,
            "checkout_id": checkout_id,
            "patient_id": checkout["patient_id"],
            "practice_id": checkout["practice_id"],
            "status": OrderStatus.CREATED.value,
            "fulfilment_status": OrderStatus.CREATED.value,
            "refund_status": RefundStatus.NONE.value,
            "currency": checkout["currency"],
            "total_minor": checkout["total_minor"],
            "captured_minor": status.amount_minor,
            "refunded_minor": 0,
            "payment_ref": status.transaction_ref,
            "payment_method": capture["method"],
            "redemption_ref": checkout["redemption_ref"],
            "pms_invoice_ref": None,
            "created_by": str(checkout["patient_id"]),
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        lines = [_order_line(order_id, line, now) for line in checkout_lines]
        # Foreign keys set the order: capture, order, lines, then the checkout that points to it.
        fast.insert(PaymentCapture, [capture])
        fast.insert(Order, [order])
        fast.insert(OrderLine, lines)
        # A capture on any attempt of this checkout completes it, including an earlier attempt
        # confirmed late: the patient has paid, so the order exists.
        completed = transition(CheckoutStatus(checkout["status"]), CheckoutStatus.COMPLETED)
        fast.update(
            Checkout,
            {"checkout_id": checkout_id},
            {
                "status": completed.value,
                "payment_intent_id": status.intent_id,
                "order_id": order_id,
                "updated_at": now,
                "version": checkout["version"] + 1,
            },
        )
        trail = self._record_order_created(
            session, fast, checkout, completed, order, lines, capture, actor
        )
        self._fulfilment.order_created(session, order, lines)
        fast.flush(commit=True)  # the writes and the COMMIT: one round trip
        return build_order_document(order, lines, capture, trail)

    def _record_order_created(
        self,
        session: Session,
        fast: Statements,
        checkout: Row,
        completed: CheckoutStatus,
        order: Row,
        lines: list[Row],
        capture: Row,
        actor: Actor,
    ) -> list[Row]:
        """Audit entries and outbox events of a new order; returns the order's audit trail."""
        now = order["created_at"]
        order_id, practice_id = order["order_id"], order["practice_id"]
        who = actor.audit_actor()
        audit = self._audit.row
        entries = [
            audit(
                session,
                stream_type="checkout",
                stream_id=checkout["checkout_id"],
                action="checkout.completed",
                actor=who,
                practice_id=practice_id,
                before={"status": checkout["status"]},
                after={"status": completed.value, "order_id": str(order_id)},
                at=now,
            ),
            audit(
                session,
                stream_type="order",
                stream_id=order_id,
                new_stream=True,
                action="payment.captured",
                actor=who,
                practice_id=practice_id,
                after={
                    "payment_ref": capture["transaction_ref"],
                    "intent_id": capture["intent_id"],
                    "amount_minor": capture["amount_minor"],
                    "currency": capture["currency"],
                    "method": capture["method"],
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
                    "status": order["status"],
                    "created_by": order["created_by"],
                    "total_minor": order["total_minor"],
                },
                at=now,
            ),
        ]
        fast.insert(AuditEntry, entries)
        line_docs = [
            {
                "line_item_id": str(line["line_item_id"]),
                "product_id": str(line["product_id"]),
                "name": line["product_name"],
                "quantity": line["quantity"],
                "unit_price_minor": line["unit_price_minor"],
                "fulfilment_type": line["fulfilment_type"],
            }
            for line in lines
        ]
        ids = {
            "order_id": order_id,
            "checkout_id": order["checkout_id"],
            "patient_id": order["patient_id"],
            "practice_id": practice_id,
        }
        event = self._outbox.row
        events = [
            event(
                ev.ORDER_CREATED,
                aggregate_id=order_id,
                data={
                    **ids,
                    "status": order["status"],
                    "total_minor": order["total_minor"],
                    "currency": order["currency"],
                    "lines": line_docs,
                    "created_by": order["created_by"],
                    "created_at": now,
                    "notification": "order_confirmation",
                },
                at=now,
            ),
            event(
                ev.PAYMENT_RECEIPT,
                aggregate_id=order_id,
                data={
                    "order_id": order_id,
                    "patient_id": order["patient_id"],
                    "practice_id": practice_id,
                    "amount_minor": capture["amount_minor"],
                    "currency": capture["currency"],
                    "payment_ref": capture["transaction_ref"],
                    "payment_method": capture["method"],
                    "card_scheme": capture["card_scheme"],
                    "card_last4": capture["card_last4"],
                    "redemption_ref": order["redemption_ref"],
                    "paid_at": now,
                    "notification": "payment_receipt",
                },
                at=now,
            ),
            event(
                ev.REVENUE_SALE,
                aggregate_id=order_id,
                data={
                    "order_id": order_id,
                    "practice_id": practice_id,
                    "amount": order["total_minor"],
                    "currency": order["currency"],
                    "event_type": "sale",
                    "timestamp": now,
                },
                at=now,
            ),
            event(
                ev.FINANCE_ORDER_RECORDED,
                aggregate_id=order_id,
                data={
                    "order_id": order_id,
                    "practice_id": practice_id,
                    "patient_id": order["patient_id"],
                    "currency": order["currency"],
                    "total_minor": order["total_minor"],
                    "captured_minor": order["captured_minor"],
                    "payment_ref": order["payment_ref"],
                    "redemption_ref": order["redemption_ref"],
                    "pms_invoice_ref": None,
                    "lines": line_docs,
                    "created_at": now,
                },
                at=now,
            ),
            event(
                ev.PAYMENT_ORDER_REFERENCE,
                aggregate_id=order_id,
                data={
                    "order_id": order_id,
                    "intent_id": capture["intent_id"],
                    "payment_ref": capture["transaction_ref"],
                },
                at=now,
            ),
        ]
        fast.insert(OutboxEvent, events)
        return entries[1:]

    def _record_orphaned_capture(
        self,
        session: Session,
        checkout_id: uuid.UUID,
        status: PaymentStatus,
        actor: Actor,
        message: str | None,
        *,
        reason: str,
    ) -> None:
        """Money was captured but no order can come of it (a second capture, or the wrong
        amount). Record it once and ask staff to refund: system refunds are prohibited (§5.3)."""
        now = self._clock.now()
        if message is not None:
            inbox.record(session, INBOX_SOURCE, message, "payment", now)
        if not inbox.record(session, ORPHAN_SOURCE, status.intent_id, reason, now):
            return  # already recorded for this intent
        checkout = lock_checkout(session, checkout_id)
        if reason in _FAILS_CHECKOUT and checkout.status in (
            CheckoutStatus.AWAITING_PAYMENT,
            CheckoutStatus.FAILED,
        ):
            if checkout.status == CheckoutStatus.AWAITING_PAYMENT:
                checkout.status = transition(
                    CheckoutStatus.AWAITING_PAYMENT, CheckoutStatus.FAILED
                ).value
            checkout.failure_code, checkout.failure_reason = _FAILS_CHECKOUT[reason]
            checkout.updated_at = now
            checkout.version += 1
        data = {
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

    def _record_failure(
        self,
        session: Session,
        checkout_id: uuid.UUID,
        status: PaymentStatus,
        actor: Actor,
        message: str | None,
    ) -> None:
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
        checkout.failure_code = status.failure_code or "payment_failed"
        checkout.failure_reason = status.failure_message or "The payment did not go through."
        checkout.updated_at = now
        checkout.version += 1
        who = actor.audit_actor()
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout_id,
            action="checkout.payment_failed",
            actor=who,
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


# Orphaned captures that also fail the checkout: its failure code and reason.
_FAILS_CHECKOUT = {
    "amount_mismatch": ("payment_mismatch", "The amount captured did not match this checkout."),
    PRODUCT_UNAVAILABLE: (
        PRODUCT_UNAVAILABLE,
        "A product in this checkout can no longer be bought; the practice will refund the payment.",
    ),
}


def _blocked(lines: Sequence[Row]) -> bool:
    """Whether any line's product may no longer be bought at the checkout's practice."""
    for line in lines:
        offer = (
            PracticeOffer(
                line["retail_price_minor"],
                None,
                line["visible"],
                line["in_clinic_stock_available"],
            )
            if line["visible"] is not None
            else None
        )
        blocker = purchase_blocker(
            AvailabilityStatus(line["availability_status"]),
            FulfilmentType(line["fulfilment_type"]),
            offer,
        )
        if blocker is not None:
            return True
    return False


def _order_line(order_id: uuid.UUID, line: Row, now: datetime) -> Row:
    return {
        "line_item_id": new_id(),
        "order_id": order_id,
        "line_no": line["line_no"],
        "product_id": line["product_id"],
        "product_name": line["product_name"],
        "quantity": line["quantity"],
        "unit_price_minor": line["unit_price_minor"],
        "fulfilment_type": line["fulfilment_type"],
        "fulfilment_status": LineState.PENDING.value,
        "fulfilment_ref": None,
        "carrier": None,
        "tracking_number": None,
        "tracking_url": None,
        "updated_at": now,
    }
