"""Asking Rewards Manager to reinstate redeemed points (spec §5.4, §15.2 rules 13-14): after a
failed capture, or a confirmation that found the checkout no longer payable. Exactly once per
redemption: the request is an outbox event written with the change that needs it (so it is
delivered after commit, and after a crash), and the redemption's status records that it was
asked. Product Shop never changes a points balance itself."""

from __future__ import annotations

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.audit.log import AuditLog
from product_shop.checkout.tables import Checkout, PointsRedemption
from product_shop.core.clock import Clock
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import REDEMPTION_REVERSALS

REWARDS_ACTOR = Actor(
    actor_id="rewards-manager",
    name="Rewards Manager",
    role=Role.SERVICE,
    practice_id=None,
    mfa=False,
    auth_time=None,
)
SYSTEM_ACTOR = Actor(
    actor_id="product-shop",
    name="Product Shop",
    role=Role.SERVICE,
    practice_id=None,
    mfa=False,
    auth_time=None,
)


class RedemptionReversals:
    def __init__(self, *, audit: AuditLog, outbox: Outbox, clock: Clock) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock

    def after_failed_payment(self, session: Session, checkout: Checkout) -> None:
        """The checkout's capture failed: points confirmed for it go back (once)."""
        self.after_failure(session, checkout, "capture_failed")

    def after_failure(self, session: Session, checkout: Checkout, reason: str) -> None:
        """The checkout failed for good (a failed capture, a product no longer purchasable, a
        wrong amount): points confirmed for it go back (once)."""
        if checkout.redemption_ref is None:
            return
        found = session.get(PointsRedemption, checkout.redemption_ref, with_for_update=True)
        if found is not None:
            self.request(session, checkout, found, reason)

    def after_expiry(self, session: Session, checkout: Checkout) -> None:
        """The checkout expired unpaid: points confirmed for it go back (once)."""
        if checkout.redemption_ref is None:
            return
        found = session.get(PointsRedemption, checkout.redemption_ref, with_for_update=True)
        if found is not None:
            self.request(session, checkout, found, "checkout_expired")

    def request(
        self, session: Session, checkout: Checkout, found: PointsRedemption, reason: str
    ) -> bool:
        """Ask for a confirmed redemption's points back; False when asked already (or never
        confirmed: nothing was deducted)."""
        if found.status != "confirmed":
            return False
        now = self._clock.now()
        found.status, found.reversal_requested_at = "reversal_requested", now
        count_on_commit(session, REDEMPTION_REVERSALS, outcome="requested")
        self._outbox.emit(
            session,
            ev.REDEMPTION_REVERSAL_REQUESTED,
            aggregate_id=checkout.checkout_id,
            data={
                "order_id": None,
                "checkout_id": checkout.checkout_id,
                "refund_id": None,
                "practice_id": checkout.practice_id,
                "patient_id": checkout.patient_id,
                "redemption_ref": found.redemption_ref,
                "points": found.points,
                "amount_minor": found.amount_minor,
                "reason": reason,
                "refund_status": "none",
                "requested_at": now,
            },
            at=now,
        )
        actor = REWARDS_ACTOR if reason == "checkout_not_payable" else SYSTEM_ACTOR
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout.checkout_id,
            action="redemption.reversal_requested",
            actor=actor.audit_actor(),
            practice_id=checkout.practice_id,
            after={
                "redemption_ref": found.redemption_ref,
                "points": found.points,
                "amount_minor": found.amount_minor,
                "reason": reason,
            },
            at=now,
        )
        return True
