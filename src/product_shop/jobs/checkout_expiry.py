"""Expiring unpaid checkouts (`checkout/expiry.py`): for each checkout past its time, its payment
page is closed at Integrated Payments first (no transaction open), then the checkout expires in
a unit of work of its own. A page that was paid meanwhile is left for completion (the patient
has paid: the order is made, never an expiry); one that cannot be closed now is tried again on
the next run."""

from __future__ import annotations

from sqlalchemy.orm import Session

from product_shop.checkout.expiry import CheckoutExpiry, DueCheckout
from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.integrations.payments import (
    IntegratedPayments,
    PaymentRejected,
    PaymentsUnavailable,
)
from product_shop.logging import get_logger

log = get_logger(__name__)


class CheckoutExpiryJob:
    def __init__(
        self,
        *,
        database: Database,
        payments: IntegratedPayments,
        expiry: CheckoutExpiry,
        clock: Clock,
    ) -> None:
        self._database = database
        self._payments = payments
        self._expiry = expiry
        self._clock = clock

    def run_once(self) -> int:
        """Expire what is due now; how many expired."""
        with self._database.reading() as session:
            due = self._expiry.due(session, self._clock.now())
        expired = 0
        for checkout in due:
            if checkout.intent_id is not None and not self._close(checkout):
                continue

            def work(session: Session, checkout: DueCheckout = checkout) -> bool:
                return self._expiry.expire(session, checkout)

            if self._database.run(work):
                expired += 1
                log.info("checkout_expired", checkout_id=str(checkout.checkout_id))
        return expired

    def _close(self, checkout: DueCheckout) -> bool:
        assert checkout.intent_id is not None
        try:
            self._payments.cancel_intent(checkout.intent_id)
        except PaymentRejected as exc:
            if exc.code == "intent_captured":
                log.info("expiry_found_a_capture", checkout_id=str(checkout.checkout_id))
                return False  # paid after all: completion makes the order
            log.warning("expiry_intent_not_closed", checkout_id=str(checkout.checkout_id))
            return False
        except PaymentsUnavailable:
            return False  # tried again on the next run
        return True
