"""Checkout use cases: create (price now, open a payment intent), read, retry.

These use cases cross a network boundary (Integrated Payments), so they own their units of work:
read and price in one short transaction, call Integrated Payments with no transaction open, then
write the checkout, its audit entry and the idempotent response in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.pricing import PricedLine, price_lines
from product_shop.checkout.schemas import (
    CheckoutFailure,
    CheckoutIn,
    CheckoutLineIn,
    CheckoutLineOut,
    CheckoutOut,
    DeliveryAddress,
    PaymentLink,
)
from product_shop.checkout.tables import Checkout, CheckoutLine
from product_shop.core.clock import Clock
from product_shop.core.errors import (
    BadGateway,
    Conflict,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from product_shop.core.ids import new_id
from product_shop.core.timing import timed
from product_shop.db.engine import Database
from product_shop.db.fast import Row, Statements, columns_of
from product_shop.idempotency.store import Claim, IdempotencyStore
from product_shop.integrations.payments import (
    ACCEPTED_METHODS,
    IntegratedPayments,
    PaymentIntent,
    PaymentRejected,
    PaymentsUnavailable,
)
from product_shop.logging import get_logger

log = get_logger("product_shop.checkout")

PERMITTED_GATEWAYS = frozenset({"integrated_payments", "dna_payments"})


class CheckoutService:
    def __init__(
        self,
        *,
        database: Database,
        payments: IntegratedPayments,
        audit: AuditLog,
        idempotency: IdempotencyStore,
        clock: Clock,
        ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self._database = database
        self._payments = payments
        self._audit = audit
        self._idempotency = idempotency
        self._clock = clock
        self._ttl = ttl

    def create(self, actor: Actor, body: CheckoutIn, claim: Claim) -> CheckoutOut:
        require(actor, Action.CHECKOUT)
        _refuse_other_payment_paths(body)
        assert actor.practice_id is not None
        assert actor.patient_id is not None
        with self._database.unit_of_work() as session:
            lines, currency = price_lines(session, actor.practice_id, body.lines)
        if body.delivery_address is None and any(
            line.fulfilment_type is FulfilmentType.DROP_SHIP for line in lines
        ):
            raise Unprocessable(
                "A delivery address is required for products delivered to you.",
                code="delivery_address_required",
            )
        total = sum(line.total_minor for line in lines)
        checkout_id = new_id()
        intent = self._open_intent(checkout_id, total, currency, attempt=1)
        now = self._clock.now()
        checkout: Row = {
            "checkout_id": checkout_id,
            "patient_id": actor.patient_id,
            "practice_id": actor.practice_id,
            "status": transition(CheckoutStatus.OPEN, CheckoutStatus.AWAITING_PAYMENT).value,
            "currency": currency,
            "total_minor": total,
            "amount_due_minor": total,
            "delivery_address": body.delivery_address.model_dump()
            if body.delivery_address
            else None,
            "payment_intent_id": intent.intent_id,
            "payment_url": intent.payment_url,
            "payment_attempts": 1,
            "failure_code": None,
            "failure_reason": None,
            "redemption_ref": None,
            "redemption_points": None,
            "redemption_amount_minor": 0,
            "order_id": None,
            "created_at": now,
            "updated_at": now,
            "expires_at": now + self._ttl,
            "version": 1,
        }
        rows = _line_rows(lines, checkout_id)
        view = checkout_view(checkout, rows)
        with self._database.unit_of_work() as session:
            # The rows go out in one round trip on PostgreSQL (db.fast; docs/benchmarks.md).
            fast = Statements(session)
            fast.insert(Checkout, [checkout])
            fast.insert(CheckoutLine, rows)
            entry = self._audit.row(
                session,
                stream_type="checkout",
                stream_id=checkout_id,
                new_stream=True,
                action="checkout.created",
                actor=actor.audit_actor(),
                practice_id=actor.practice_id,
                after={
                    "status": checkout["status"],
                    "total_minor": total,
                    "currency": currency,
                    "intent_id": intent.intent_id,
                    "lines": [
                        {
                            "product_id": str(line.product_id),
                            "quantity": line.quantity,
                            "unit_price_minor": line.unit_price_minor,
                        }
                        for line in lines
                    ],
                },
                at=now,
            )
            fast.insert(AuditEntry, [entry])
            fast.flush()
            self._idempotency.complete(
                session, claim, 201, view.model_dump(mode="json"), f"/v1/checkouts/{checkout_id}"
            )
        return view

    def get(self, actor: Actor, checkout_id: uuid.UUID) -> CheckoutOut:
        with self._database.unit_of_work() as session:
            checkout = load_owned(session, actor, checkout_id)
            return _view(checkout, load_lines(session, checkout_id))

    def retry(self, actor: Actor, checkout_id: uuid.UUID) -> CheckoutOut:
        """A new payment intent for a failed checkout; idempotent once awaiting payment again.

        The previous intent is cancelled at Integrated Payments first, so at most one payment
        page of a checkout can take money, and `payment.intent_id`/`payment_url` always name
        that live intent. If the previous one turns out to be captured after all, nothing new
        is opened and the answer is 409 `payment_already_captured` (complete the checkout)."""
        with self._database.unit_of_work() as session:
            checkout = load_owned(session, actor, checkout_id)
            lines = load_lines(session, checkout_id)
            if checkout.status == CheckoutStatus.AWAITING_PAYMENT:
                return _view(checkout, lines)
            if checkout.status != CheckoutStatus.FAILED:
                transition(
                    CheckoutStatus(checkout.status), CheckoutStatus.AWAITING_PAYMENT
                )  # raises
            # Still purchasable? Prices stay those of the checkout; availability is checked now.
            price_lines(
                session,
                checkout.practice_id,
                [
                    CheckoutLineIn(product_id=line.product_id, quantity=line.quantity)
                    for line in lines
                ],
            )
            attempt = checkout.payment_attempts + 1
            amount, currency, version, previous = (
                checkout.amount_due_minor,
                checkout.currency,
                checkout.version,
                checkout.payment_intent_id,
            )
        if previous is not None:
            self._cancel_previous(checkout_id, previous)
        intent = self._open_intent(checkout_id, amount, currency, attempt=attempt)
        now = self._clock.now()
        with self._database.unit_of_work() as session:
            checkout = lock_checkout(session, checkout_id)
            if checkout.version == version and checkout.status == CheckoutStatus.FAILED:
                before = {"status": checkout.status, "failure_code": checkout.failure_code}
                checkout.status = transition(
                    CheckoutStatus.FAILED, CheckoutStatus.AWAITING_PAYMENT
                ).value
                checkout.payment_intent_id = intent.intent_id
                checkout.payment_url = intent.payment_url
                checkout.payment_attempts = attempt
                checkout.failure_code = None
                checkout.failure_reason = None
                checkout.updated_at = now
                checkout.version += 1
                self._audit.record(
                    session,
                    stream_type="checkout",
                    stream_id=checkout_id,
                    action="checkout.payment_retried",
                    actor=actor.audit_actor(),
                    practice_id=checkout.practice_id,
                    before=before,
                    after={
                        "status": checkout.status,
                        "intent_id": intent.intent_id,
                        "attempt": attempt,
                    },
                    at=now,
                )
            stored = checkout.payment_intent_id
            view = _view(checkout, load_lines(session, checkout_id))
        if stored != intent.intent_id:
            # Another request settled the checkout meanwhile: the intent we opened stays unused.
            self._cancel_unused(intent.intent_id)
        return view

    def _cancel_previous(self, checkout_id: uuid.UUID, intent_id: str) -> None:
        """Close the previous payment page before opening another (no double charge)."""
        try:
            self._payments.cancel_intent(intent_id)
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
                    complete_url=f"/v1/checkouts/{checkout_id}/complete",
                ) from exc
            raise BadGateway(
                "Integrated Payments could not close the previous payment page; nothing new was "
                "opened. Please try again later.",
                code="payment_cancel_refused",
            ) from exc

    def _cancel_unused(self, intent_id: str) -> None:
        try:
            self._payments.cancel_intent(intent_id)
        except (PaymentsUnavailable, PaymentRejected):
            log.warning("payment_intent_not_cancelled", intent_id=intent_id)

    def _open_intent(
        self, checkout_id: uuid.UUID, amount: int, currency: str, *, attempt: int
    ) -> PaymentIntent:
        try:
            with timed("payment-intent"):
                return self._payments.create_intent(
                    amount_minor=amount,
                    currency=currency,
                    merchant_reference=str(checkout_id),
                    idempotency_key=f"checkout:{checkout_id}:{attempt}",
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
            f"Payments go through Integrated Payments (DNA Payments) only; "
            f"'{body.payment_gateway}' is not permitted.",
            code="payment_gateway_not_permitted",
        )
    if body.payment_method is not None and body.payment_method.lower() not in ACCEPTED_METHODS:
        raise Unprocessable(
            f"Only card and wallet payments (Apple Pay, Google Pay) are accepted; "
            f"'{body.payment_method}' is not.",
            code="payment_method_not_permitted",
        )


def load_owned(session: Session, actor: Actor, checkout_id: uuid.UUID) -> Checkout:
    """The checkout if this patient owns it; 404 for anyone else (existence is not revealed)."""
    checkout = session.get(Checkout, checkout_id)
    check_owner(actor, checkout.patient_id if checkout else None)
    assert checkout is not None
    return checkout


def check_owner(actor: Actor, patient_id: uuid.UUID | None) -> None:
    """404 unless this patient owns the checkout (None: there is no such checkout)."""
    require(actor, Action.CHECKOUT)
    if patient_id is None or patient_id != actor.patient_id:
        raise NotFound("No such checkout.")


def lock_checkout(session: Session, checkout_id: uuid.UUID) -> Checkout:
    checkout = session.execute(
        select(Checkout).where(Checkout.checkout_id == checkout_id).with_for_update()
    ).scalar_one()
    return checkout


def load_lines(session: Session, checkout_id: uuid.UUID) -> list[CheckoutLine]:
    return list(
        session.scalars(
            select(CheckoutLine)
            .where(CheckoutLine.checkout_id == checkout_id)
            .order_by(CheckoutLine.line_no)
        )
    )


def _line_rows(lines: list[PricedLine], checkout_id: uuid.UUID) -> list[Row]:
    return [
        {
            "checkout_id": checkout_id,
            "line_no": line.line_no,
            "product_id": line.product_id,
            "product_name": line.name,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price_minor,
            "fulfilment_type": line.fulfilment_type.value,
        }
        for line in lines
    ]


def _view(checkout: Checkout, lines: list[CheckoutLine]) -> CheckoutOut:
    return checkout_view(columns_of(checkout), [columns_of(line) for line in lines])


def checkout_view(checkout: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]) -> CheckoutOut:
    """The checkout JSON from rows (column names as keys)."""
    failure: dict[str, Any] | None = None
    if checkout["status"] == CheckoutStatus.FAILED:
        failure = {
            "code": checkout["failure_code"] or "payment_failed",
            "reason": checkout["failure_reason"] or "The payment did not go through.",
            "retry_url": f"/v1/checkouts/{checkout['checkout_id']}/retry",
        }
    return CheckoutOut(
        id=checkout["checkout_id"],
        status=CheckoutStatus(checkout["status"]),
        total_minor=checkout["total_minor"],
        amount_due_minor=checkout["amount_due_minor"],
        currency=checkout["currency"],
        lines=[
            CheckoutLineOut(
                line_no=line["line_no"],
                product_id=line["product_id"],
                name=line["product_name"],
                quantity=line["quantity"],
                unit_price_minor=line["unit_price_minor"],
                line_total_minor=line["unit_price_minor"] * line["quantity"],
                fulfilment_type=FulfilmentType(line["fulfilment_type"]),
            )
            for line in lines
        ],
        delivery_address=DeliveryAddress.model_validate(checkout["delivery_address"])
        if checkout["delivery_address"]
        else None,
        payment=PaymentLink(
            intent_id=checkout["payment_intent_id"],
            payment_url=checkout["payment_url"] or "",
            attempts=checkout["payment_attempts"],
        )
        if checkout["payment_intent_id"]
        else None,
        failure=CheckoutFailure.model_validate(failure) if failure else None,
        order_id=checkout["order_id"],
        created_at=checkout["created_at"],
        expires_at=checkout["expires_at"],
    )
