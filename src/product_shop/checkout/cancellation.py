"""Stopping unpaid checkouts whose products can no longer be bought (spec §4.2, §15.2 rule 7).

A checkout opened while a product was purchasable must not be paid after it stopped being so:
when a product becomes unavailable or deprecated (everywhere) or hidden or out of in-clinic stock
at a practice, every unpaid checkout that holds it becomes `failed` with `product_unavailable`,
in the catalogue change's own transaction. Its payment intent is cancelled at Integrated Payments
by the outbox (`checkout.cancelled.v1`), so the payment page takes no more money. A capture that
races past all this is caught at completion, which re-checks availability and records a payment
exception instead of an order (`checkout.complete`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.audit.log import AuditLog
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.reversals import RedemptionReversals
from product_shop.checkout.tables import Checkout, CheckoutLine
from product_shop.core.clock import Clock, SystemClock
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import CHECKOUT_STAGES

PRODUCT_UNAVAILABLE = "product_unavailable"
# Checkouts that could still take money: not yet paid, or failed with a page still payable.
UNPAID = (
    CheckoutStatus.OPEN.value,
    CheckoutStatus.AWAITING_REDEMPTION.value,
    CheckoutStatus.AWAITING_PAYMENT.value,
    CheckoutStatus.FAILED.value,
)
_BATCH = 200


class CheckoutCancellation:
    """Implements the catalogue's `OpenCheckouts` port."""

    def __init__(self, *, audit: AuditLog, outbox: Outbox, clock: Clock | None = None) -> None:
        self._audit = audit
        self._outbox = outbox
        self._reversals = RedemptionReversals(
            audit=audit, outbox=outbox, clock=clock or SystemClock()
        )

    def product_unpurchasable(
        self,
        session: Session,
        product_id: uuid.UUID,
        *,
        practice_id: uuid.UUID | None,
        actor: Actor,
        at: datetime,
    ) -> int:
        """Fail the unpaid checkouts holding the product (at one practice, or everywhere when
        `practice_id` is None); returns how many. Rows are locked and handled in batches."""
        count = 0
        after: uuid.UUID | None = None
        while True:
            statement = (
                select(Checkout)
                .where(
                    Checkout.status.in_(UNPAID),
                    Checkout.checkout_id.in_(
                        select(CheckoutLine.checkout_id).where(
                            CheckoutLine.product_id == product_id
                        )
                    ),
                )
                .order_by(Checkout.checkout_id)
                .limit(_BATCH)
                .with_for_update()
            )
            if practice_id is not None:
                statement = statement.where(Checkout.practice_id == practice_id)
            if after is not None:
                statement = statement.where(Checkout.checkout_id > after)
            batch = list(session.scalars(statement))
            for checkout in batch:
                if self._cancel(session, checkout, product_id, actor, at):
                    count += 1
            if len(batch) < _BATCH:
                return count
            after = batch[-1].checkout_id

    def _cancel(
        self,
        session: Session,
        checkout: Checkout,
        product_id: uuid.UUID,
        actor: Actor,
        at: datetime,
    ) -> bool:
        if checkout.failure_code == PRODUCT_UNAVAILABLE:
            return False  # stopped already; its intent is being cancelled
        before = {"status": checkout.status, "failure_code": checkout.failure_code}
        if checkout.status != CheckoutStatus.FAILED:
            checkout.status = transition(
                CheckoutStatus(checkout.status), CheckoutStatus.FAILED
            ).value
            count_on_commit(session, CHECKOUT_STAGES, stage="failed")
        checkout.failure_code = PRODUCT_UNAVAILABLE
        checkout.failure_reason = (
            "A product in this checkout can no longer be bought, so the checkout was stopped "
            "before payment. Nothing was charged."
        )
        checkout.updated_at = at
        checkout.version += 1
        # Points confirmed for it go back to the patient (spec §5.4), once.
        self._reversals.after_failure(session, checkout, "checkout_not_payable")
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout.checkout_id,
            action="checkout.cancelled",
            actor=actor.audit_actor(),
            practice_id=checkout.practice_id,
            before=before,
            after={
                "status": checkout.status,
                "failure_code": PRODUCT_UNAVAILABLE,
                "product_id": str(product_id),
                "intent_id": checkout.payment_intent_id,
            },
            at=at,
        )
        self._outbox.emit(
            session,
            ev.CHECKOUT_CANCELLED,
            aggregate_id=checkout.checkout_id,
            data={
                "checkout_id": checkout.checkout_id,
                "patient_id": checkout.patient_id,
                "practice_id": checkout.practice_id,
                "intent_id": checkout.payment_intent_id,
                "reason": PRODUCT_UNAVAILABLE,
                "product_ids": [product_id],
                "notification": "checkout_cancelled",
            },
            at=at,
        )
        return True
