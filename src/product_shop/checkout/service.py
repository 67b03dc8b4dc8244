"""Checkout use cases: start one (priced from the catalogue now, with a payment intent), read it,
retry a failed payment.

Each use case that calls Integrated Payments comes in steps, so that no transaction is open
while another module is called: the caller (the request) runs the database steps in units of
work of its own and the network steps between them. The steps only add rows to the session they
are given; they never begin, commit or roll back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.pricing import PricedLine, price_lines
from product_shop.checkout.repository import load_lines, load_owned, lock_checkout
from product_shop.checkout.schemas import CheckoutIn, CheckoutLineIn, CheckoutOut
from product_shop.checkout.tables import Checkout, CheckoutLine
from product_shop.checkout.views import checkout_view, view
from product_shop.core.clock import Clock
from product_shop.core.errors import (
    BadGateway,
    Conflict,
    ServiceUnavailable,
    Unprocessable,
)
from product_shop.core.ids import new_id
from product_shop.core.timing import timed
from product_shop.db.fast import Statements
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import CHECKOUT_STAGES
from product_shop.integrations.payments import (
    ACCEPTED_METHODS,
    IntegratedPayments,
    PaymentIntent,
    PaymentRejected,
    PaymentsUnavailable,
)
from product_shop.logging import get_logger
from product_shop.recommendations.conversion import check_recommended_lines

log = get_logger("product_shop.checkout")

PERMITTED_GATEWAYS = frozenset({"integrated_payments", "dna_payments"})


@dataclass(frozen=True, slots=True)
class NewCheckout:
    """A checkout priced and ready to pay for, not stored yet."""

    checkout_id: uuid.UUID
    patient_id: uuid.UUID
    practice_id: uuid.UUID
    lines: list[PricedLine]
    currency: str
    total_minor: int
    delivery_address: dict[str, Any] | None
    patient_first_name: str | None
    return_url: str | None = None  # the hosted payment page's way back (the app's page)


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed checkout to pay again: its current intent is closed before a new one opens."""

    checkout_id: uuid.UUID
    previous_intent_id: str | None
    attempt: int
    amount_minor: int
    currency: str
    version: int
    return_url: str | None = None


class CheckoutService:
    def __init__(
        self,
        *,
        payments: IntegratedPayments,
        audit: AuditLog,
        clock: Clock,
        ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self._payments = payments
        self._audit = audit
        self._clock = clock
        self._ttl = ttl

    # ---- starting a checkout -----------------------------------------------------------------

    def price(self, session: Session, actor: Actor, body: CheckoutIn) -> NewCheckout:
        """Prices and availability from the catalogue now (invariant 7); refuses what cannot be
        bought and any other payment path before anything is charged."""
        require(actor, Action.CHECKOUT)
        _refuse_other_payment_paths(body)
        assert actor.practice_id is not None
        assert actor.patient_id is not None
        lines, currency = price_lines(session, actor.practice_id, body.lines)
        check_recommended_lines(session, actor, lines)
        if body.delivery_address is None and any(
            line.fulfilment_type is FulfilmentType.DROP_SHIP for line in lines
        ):
            raise Unprocessable(
                "A delivery address is required for products delivered to you.",
                code="delivery_address_required",
            )
        return NewCheckout(
            checkout_id=new_id(),
            patient_id=actor.patient_id,
            practice_id=actor.practice_id,
            lines=lines,
            currency=currency,
            total_minor=sum(line.total_minor for line in lines),
            delivery_address=body.delivery_address.model_dump() if body.delivery_address else None,
            patient_first_name=_first_name(actor.name),
            return_url=body.return_url,
        )

    def open_intent(self, checkout: NewCheckout) -> PaymentIntent:
        """The payment intent at Integrated Payments (network; no transaction open)."""
        return self._open_intent(
            checkout.checkout_id,
            checkout.total_minor,
            checkout.currency,
            attempt=1,
            return_url=checkout.return_url,
        )

    def record_new(
        self,
        session: Session,
        actor: Actor,
        checkout: NewCheckout,
        intent: PaymentIntent | None,
        *,
        points: tuple[int, int] | None = None,
    ) -> CheckoutOut:
        """The checkout, its lines and its audit entry, added to the caller's unit of work:
        awaiting payment on `intent`, or, with `points` (points, their money value), awaiting
        Rewards Manager's confirmation of the redemption, with no payment intent yet (spec
        §5.4: no capture before the confirmation)."""
        now = self._clock.now()
        redeemed_points, redeemed_minor = points or (None, 0)
        row: dict[str, Any] = {
            "checkout_id": checkout.checkout_id,
            "patient_id": checkout.patient_id,
            "practice_id": checkout.practice_id,
            "status": transition(
                CheckoutStatus.OPEN,
                CheckoutStatus.AWAITING_PAYMENT
                if points is None
                else CheckoutStatus.AWAITING_REDEMPTION,
            ).value,
            "currency": checkout.currency,
            "total_minor": checkout.total_minor,
            "amount_due_minor": checkout.total_minor - redeemed_minor,
            "delivery_address": checkout.delivery_address,
            "patient_first_name": checkout.patient_first_name,
            "payment_intent_id": intent.intent_id if intent else None,
            "payment_url": intent.payment_url if intent else None,
            "return_url": checkout.return_url,
            "payment_attempts": 1 if intent else 0,
            "failure_code": None,
            "failure_reason": None,
            "redemption_ref": None,
            "redemption_points": redeemed_points,
            "redemption_amount_minor": redeemed_minor,
            "order_id": None,
            "created_at": now,
            "updated_at": now,
            "expires_at": now + self._ttl,
            "version": 1,
        }
        lines = [
            {
                "checkout_id": checkout.checkout_id,
                "line_no": line.line_no,
                "product_id": line.product_id,
                "product_name": line.name,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
                "fulfilment_type": line.fulfilment_type.value,
                "recommendation_id": line.recommendation_id,
            }
            for line in checkout.lines
        ]
        # Queued (db.fast): on PostgreSQL they go with the unit of work's COMMIT, in one round
        # trip. Nothing in this unit of work reads them back.
        fast = Statements(session)
        fast.insert(Checkout, [row])
        fast.insert(CheckoutLine, lines)
        count_on_commit(session, CHECKOUT_STAGES, stage="created")
        if intent is not None:  # a points checkout starts paying when the points are asked for
            count_on_commit(session, CHECKOUT_STAGES, stage="payment_started")
        entry = self._audit.row(
            session,
            stream_type="checkout",
            stream_id=checkout.checkout_id,
            new_stream=True,
            action="checkout.created",
            actor=actor.audit_actor(),
            practice_id=checkout.practice_id,
            after={
                "status": row["status"],
                "total_minor": checkout.total_minor,
                "currency": checkout.currency,
                "intent_id": intent.intent_id if intent else None,
                "redeem_points": redeemed_points,
                "lines": [
                    {
                        "product_id": str(line.product_id),
                        "quantity": line.quantity,
                        "unit_price_minor": line.unit_price_minor,
                    }
                    for line in checkout.lines
                ],
            },
            at=now,
        )
        fast.insert(AuditEntry, [entry])
        return checkout_view(row, lines)

    def get(self, session: Session, actor: Actor, checkout_id: uuid.UUID) -> CheckoutOut:
        checkout = load_owned(session, actor, checkout_id)
        return view(checkout, load_lines(session, checkout_id))

    # ---- paying again after a failure --------------------------------------------------------

    def prepare_retry(
        self, session: Session, actor: Actor, checkout_id: uuid.UUID
    ) -> Retry | CheckoutOut:
        """What a retry needs; the checkout itself when it already awaits payment again (a
        retry is idempotent). Availability is checked now; prices stay the checkout's."""
        checkout = load_owned(session, actor, checkout_id)
        lines = load_lines(session, checkout_id)
        if checkout.status == CheckoutStatus.AWAITING_PAYMENT and checkout.payment_intent_id:
            return view(checkout, lines)
        if checkout.redemption_points and checkout.status == CheckoutStatus.FAILED:
            raise Conflict(
                "The points redeemed for this checkout are being returned to you, so it cannot be "
                "paid again; start a new checkout.",
                code="redemption_reversed",
            )
        if checkout.status == CheckoutStatus.AWAITING_REDEMPTION:
            raise Conflict(
                "Rewards Manager has not confirmed the points yet; the payment opens once it has.",
                code="checkout_awaiting_redemption",
            )
        if checkout.status not in (CheckoutStatus.FAILED, CheckoutStatus.AWAITING_PAYMENT):
            transition(CheckoutStatus(checkout.status), CheckoutStatus.AWAITING_PAYMENT)  # raises
        price_lines(
            session,
            checkout.practice_id,
            [CheckoutLineIn(product_id=line.product_id, quantity=line.quantity) for line in lines],
        )
        return Retry(
            checkout_id=checkout_id,
            previous_intent_id=checkout.payment_intent_id,
            attempt=checkout.payment_attempts + 1,
            amount_minor=checkout.amount_due_minor,
            currency=checkout.currency,
            version=checkout.version,
            return_url=checkout.return_url,
        )

    def close_previous(self, retry: Retry) -> None:
        """Close the previous payment page before opening another, so a checkout never has two
        live intents (no double charge). Network; no transaction open."""
        if retry.previous_intent_id is None:
            return
        try:
            self._payments.cancel_intent(retry.previous_intent_id)
        except PaymentsUnavailable as exc:
            raise ServiceUnavailable(
                "Payments are unavailable right now; nothing was charged. Please try again.",
                code="payments_unavailable",
            ) from exc
        except PaymentRejected as exc:
            if exc.code == "intent_captured":
                raise Conflict(
                    "Your earlier payment went through after all, so no new payment is needed. "
                    "Complete the checkout to get your order.",
                    code="payment_already_captured",
                    complete_url=f"/v1/checkouts/{retry.checkout_id}/complete",
                ) from exc
            raise BadGateway(
                "Integrated Payments could not close the previous payment page; nothing new was "
                "opened. Please try again later.",
                code="payment_cancel_refused",
            ) from exc

    def open_intent_for(
        self, checkout_id: uuid.UUID, amount: int, currency: str, return_url: str | None = None
    ) -> PaymentIntent:
        """The first payment intent of a checkout that awaited a points redemption: the rest of
        its total (network; no transaction open; keyed as a first attempt)."""
        return self._open_intent(checkout_id, amount, currency, attempt=1, return_url=return_url)

    def open_retry_intent(self, retry: Retry) -> PaymentIntent:
        return self._open_intent(
            retry.checkout_id,
            retry.amount_minor,
            retry.currency,
            attempt=retry.attempt,
            return_url=retry.return_url,
        )

    def record_retry(
        self, session: Session, actor: Actor, retry: Retry, intent: PaymentIntent
    ) -> tuple[CheckoutOut, bool]:
        """The new intent on the checkout, unless another request settled it meanwhile.
        Returns the checkout and whether this intent is the one it names."""
        now = self._clock.now()
        checkout = lock_checkout(session, retry.checkout_id)
        if checkout.version == retry.version and (
            checkout.status == CheckoutStatus.FAILED
            or (
                checkout.status == CheckoutStatus.AWAITING_PAYMENT
                and not checkout.payment_intent_id
            )
        ):
            before = {"status": checkout.status, "failure_code": checkout.failure_code}
            if checkout.status == CheckoutStatus.FAILED:
                checkout.status = transition(
                    CheckoutStatus.FAILED, CheckoutStatus.AWAITING_PAYMENT
                ).value
            checkout.payment_intent_id = intent.intent_id
            checkout.payment_url = intent.payment_url
            checkout.payment_attempts = retry.attempt
            checkout.failure_code = None
            checkout.failure_reason = None
            checkout.updated_at = now
            checkout.version += 1
            self._audit.record(
                session,
                stream_type="checkout",
                stream_id=retry.checkout_id,
                action="checkout.payment_retried",
                actor=actor.audit_actor(),
                practice_id=checkout.practice_id,
                before=before,
                after={
                    "status": checkout.status,
                    "intent_id": intent.intent_id,
                    "attempt": retry.attempt,
                },
                at=now,
            )
        stored = checkout.payment_intent_id == intent.intent_id
        return view(checkout, load_lines(session, retry.checkout_id)), stored

    def close_unused(self, intent: PaymentIntent) -> None:
        """An intent opened for a retry that another request settled first: close it."""
        try:
            self._payments.cancel_intent(intent.intent_id)
        except (PaymentsUnavailable, PaymentRejected):
            log.warning("payment_intent_not_cancelled", intent_id=intent.intent_id)

    def _open_intent(
        self,
        checkout_id: uuid.UUID,
        amount: int,
        currency: str,
        *,
        attempt: int,
        return_url: str | None = None,
    ) -> PaymentIntent:
        try:
            with timed("payment-intent"):
                return self._payments.create_intent(
                    amount_minor=amount,
                    currency=currency,
                    merchant_reference=str(checkout_id),
                    idempotency_key=f"checkout:{checkout_id}:{attempt}",
                    return_url=return_url,
                )
        except PaymentsUnavailable as exc:
            raise ServiceUnavailable(
                "Payments are unavailable right now; nothing was charged. Please try again.",
                code="payments_unavailable",
            ) from exc
        except PaymentRejected as exc:
            raise Unprocessable(
                f"Integrated Payments refused the payment: {exc.message}",
                code="payment_intent_refused",
            ) from exc


def _refuse_other_payment_paths(body: CheckoutIn) -> None:
    """Integrated Payments (DNA Payments) is the only payment path (spec §5.1)."""
    if body.payment_gateway is not None and body.payment_gateway.lower() not in PERMITTED_GATEWAYS:
        raise Unprocessable(
            "Payments go through Integrated Payments (DNA Payments) only; "
            "no other payment gateway is permitted.",
            code="payment_gateway_not_permitted",
        )
    if body.payment_method is not None and body.payment_method.lower() not in ACCEPTED_METHODS:
        raise Unprocessable(
            "Only card and wallet payments (Apple Pay, Google Pay) are accepted.",
            code="payment_method_not_permitted",
        )


def _first_name(name: str | None) -> str | None:
    """The first word of the patient's name from their token, at most 80 characters."""
    first = (name or "").strip().split(" ", 1)[0]
    return first[:80] or None
