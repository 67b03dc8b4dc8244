"""Unpaid checkouts expire (spec §5.2: an abandoned payment leaves no order; §5.4: points
confirmed for a checkout that expires go back to the patient).

A checkout still awaiting its points or its payment when `expires_at` passes becomes `expired`:
its payment page has been closed first (by the job, `jobs/checkout_expiry.py`, through
Integrated Payments: a page paid meanwhile is completed instead, never expired), and a confirmed
points redemption is reversed, once, through the outbox. A confirmation that arrives after the
expiry is reversed the same way (`checkout.redemption`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.reversals import SYSTEM_ACTOR, RedemptionReversals
from product_shop.checkout.tables import Checkout
from product_shop.core.clock import Clock
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import CHECKOUT_STAGES

EXPIRING = (CheckoutStatus.AWAITING_REDEMPTION.value, CheckoutStatus.AWAITING_PAYMENT.value)


@dataclass(frozen=True, slots=True)
class DueCheckout:
    checkout_id: uuid.UUID
    intent_id: str | None


class CheckoutExpiry:
    def __init__(self, *, audit: AuditLog, outbox: Outbox, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock
        self._reversals = RedemptionReversals(audit=audit, outbox=outbox, clock=clock)

    def due(self, session: Session, now: datetime, *, limit: int = 100) -> list[DueCheckout]:
        rows = session.execute(
            select(Checkout.checkout_id, Checkout.payment_intent_id)
            .where(Checkout.status.in_(EXPIRING), Checkout.expires_at <= now)
            .order_by(Checkout.expires_at)
            .limit(limit)
        )
        return [DueCheckout(checkout_id, intent_id) for checkout_id, intent_id in rows]

    def expire(self, session: Session, due: DueCheckout) -> bool:
        """Expire the checkout if it is still unpaid and past its time (False: it moved on)."""
        checkout = session.get(Checkout, due.checkout_id, with_for_update=True)
        now = self._clock.now()
        if (
            checkout is None
            or checkout.status not in EXPIRING
            or checkout.expires_at > now
            or checkout.payment_intent_id != due.intent_id  # a retry opened another page
        ):
            return False
        before = checkout.status
        checkout.status = transition(CheckoutStatus(before), CheckoutStatus.EXPIRED).value
        checkout.updated_at, checkout.version = now, checkout.version + 1
        count_on_commit(session, CHECKOUT_STAGES, stage="expired")
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout.checkout_id,
            action="checkout.expired",
            actor=SYSTEM_ACTOR.audit_actor(),
            practice_id=checkout.practice_id,
            before={"status": before},
            after={"status": checkout.status, "expires_at": checkout.expires_at},
            at=now,
        )
        self._reversals.after_expiry(session, checkout)
        return True
