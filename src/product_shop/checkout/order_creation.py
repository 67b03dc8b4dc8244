"""Making the order of a paid checkout (by a capture or a points settlement), and reading the
order a completed checkout already has (spec §3.2, §5.2, §5.4). Called by `checkout.complete`.

The checkout is read again under its row lock and checked once more: already completed, expired,
no longer payable, holding a product that can no longer be bought, or its points gone back. A
capture that cannot become the order is recorded as a payment exception instead. Otherwise the
capture, the order and its lines, the checkout's completion, three audit entries and the order's
outbox events are queued through `db.fast.Statements`, with fulfilment's own rows; on PostgreSQL
they go with the COMMIT in one round trip (docs/benchmarks.md). The order is counted once the
unit of work commits.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.audit.log import AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.checkout.cancellation import PRODUCT_UNAVAILABLE
from product_shop.checkout.fulfilment_port import FulfilmentTrigger
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.outcomes import Outcome, Result
from product_shop.checkout.payment_exceptions import INBOX_SOURCE, PaymentExceptions
from product_shop.checkout.repository import CheckoutLineRow, CheckoutRow, read_for_completion
from product_shop.checkout.tables import Checkout, PaymentCapture, PointsRedemption
from product_shop.core.clock import Clock
from product_shop.core.errors import Conflict
from product_shop.core.ids import new_id
from product_shop.db.fast import Statements
from product_shop.events import inbox
from product_shop.events.outbox import Outbox
from product_shop.events.tables import OutboxEvent
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import CHECKOUT_STAGES, ORDERS_CREATED, PAYMENT_CAPTURES
from product_shop.integrations.payments import ACCEPTED_METHODS, PaymentStatus
from product_shop.orders.events import CaptureRow, OrderLineRow, OrderRow, order_created_events
from product_shop.orders.model import LineState, OrderStatus, RefundStatus
from product_shop.orders.queries import build_order_document, order_document
from product_shop.orders.tables import Order, OrderLine

if TYPE_CHECKING:
    from product_shop.checkout.complete import Pending

CHECKOUT_EXPIRED = "checkout_expired"  # the payment exception of a capture after the expiry


class OrderCreation:
    """The order of a paid checkout, for `CheckoutCompletion`; adds rows to the session it is
    given and never commits."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        outbox: Outbox,
        clock: Clock,
        fulfilment: FulfilmentTrigger,
        exceptions: PaymentExceptions,
    ) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._fulfilment = fulfilment
        self._exceptions = exceptions

    def settled(self, session: Session, checkout: CheckoutRow, message: str | None) -> Outcome:
        """The order of a completed checkout."""
        if message is not None:  # idempotent: a message already seen stays as it was
            inbox.record(session, INBOX_SOURCE, message, "payment", self._clock.now())
        assert checkout.order_id is not None
        order = session.get(Order, checkout.order_id)
        assert order is not None
        return Outcome(Result.ORDER, order=order_document(session, order))

    def create(
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
            return self.settled(session, checkout, message)
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
