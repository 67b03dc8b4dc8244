"""Rewards Manager points redemption in a checkout (spec §5.4, §11.1, §11.2, §15.2 rules 13-14).

Points are redeemed by Rewards Manager, never by us: a checkout asking for points is stored
`awaiting_redemption` with no payment intent; we ask Rewards Manager to redeem; only its signed
`redemption.confirmed` callback finalises the total. Then the remainder is captured through
Integrated Payments in the same checkout, or, when the points cover everything, the order is
created on that confirmation with the settlement reference instead of a capture. If the capture
fails after the confirmation, or the confirmation finds the checkout no longer payable, exactly
one redemption-reversal request goes out through the outbox (so it survives a crash) and no
order is made. Rewards Manager's `redemption.reversed` is recorded as a reconciliation signal
only. Every step is audited on the checkout's stream with the reference, points and money.

Network steps (`plan`, `request`) run with no transaction open; the rest adds rows to the
caller's unit of work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.audit.log import AuditLog
from product_shop.checkout.complete import CheckoutCompletion
from product_shop.checkout.model import CheckoutStatus, transition
from product_shop.checkout.outcomes import Outcome
from product_shop.checkout.redemption_messages import Confirmation
from product_shop.checkout.repository import lock_checkout
from product_shop.checkout.reversals import REWARDS_ACTOR, RedemptionReversals
from product_shop.checkout.service import NewCheckout
from product_shop.checkout.tables import Checkout, PointsRedemption
from product_shop.core.clock import Clock
from product_shop.core.errors import BadGateway, Conflict, ServiceUnavailable, Unprocessable
from product_shop.events import inbox
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import CHECKOUT_STAGES, REDEMPTIONS
from product_shop.integrations.rewards import (
    Redemption,
    RewardsManager,
    RewardsRejected,
    RewardsUnavailable,
)
from product_shop.orders.tables import Order

INBOX_SOURCE = "rewards_manager"


@dataclass(frozen=True, slots=True)
class PlannedRedemption:
    points: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class NeedsIntent:
    """The redemption is confirmed and the rest is to be paid: open the payment intent."""

    checkout_id: uuid.UUID
    amount_minor: int
    currency: str
    return_url: str | None = None


class PointsRedemptions:
    def __init__(
        self,
        *,
        rewards: RewardsManager,
        completion: CheckoutCompletion,
        audit: AuditLog,
        outbox: Outbox,
        clock: Clock,
    ) -> None:
        self._rewards = rewards
        self._completion = completion
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._reversals = RedemptionReversals(audit=audit, outbox=outbox, clock=clock)

    # ---- asking (network) ----------------------------------------------------------------

    def plan(self, checkout: NewCheckout, points: int) -> PlannedRedemption:
        """The points' money value at the practice, or 422 where rewards are off for the
        practice, the balance is short, or the points are worth more than the order."""
        try:
            account = self._rewards.account(str(checkout.patient_id), str(checkout.practice_id))
        except RewardsUnavailable as exc:
            raise ServiceUnavailable(
                "Rewards Manager is unavailable; nothing was redeemed. Try again, or check out "
                "without points.",
                code="rewards_unavailable",
            ) from exc
        except RewardsRejected as exc:
            raise BadGateway(
                f"Rewards Manager refused to show the points: {exc.message}",
                code="rewards_refused",
            ) from exc
        if not account.enabled:
            raise Unprocessable(
                "Your practice does not offer rewards points.", code="rewards_disabled"
            )
        if points > account.balance_points:
            raise Unprocessable(
                f"You have {account.balance_points} points.",
                code="insufficient_points",
                balance_points=account.balance_points,
            )
        value = account.value_of(points)
        if account.currency != checkout.currency or value > checkout.total_minor:
            most = checkout.total_minor // max(1, account.value_minor_per_point)
            raise Unprocessable(
                f"These points are worth more than the order; redeem at most {most}.",
                code="points_exceed_order",
                max_points=most,
            )
        return PlannedRedemption(points, value)

    def request(self, checkout: NewCheckout, planned: PlannedRedemption) -> Redemption | None:
        """Ask Rewards Manager to redeem (it deducts the points and confirms by callback). None
        when it did not answer: a confirmation may still come (the request is keyed by the
        checkout, so it is never made twice)."""
        try:
            return self._rewards.redeem(
                patient_id=str(checkout.patient_id),
                practice_id=str(checkout.practice_id),
                points=planned.points,
                amount_minor=planned.amount_minor,
                currency=checkout.currency,
                reference=str(checkout.checkout_id),
                idempotency_key=f"redeem:{checkout.checkout_id}",
            )
        except RewardsUnavailable:
            return None

    # ---- recording -------------------------------------------------------------------------

    def record_requested(
        self,
        session: Session,
        actor: Actor,
        checkout_id: uuid.UUID,
        planned: PlannedRedemption,
        redemption: Redemption | None,
    ) -> None:
        """The redemption asked for, on the checkout (its reference once Rewards Manager gave
        one) and its audit stream."""
        checkout = lock_checkout(session, checkout_id)
        now = self._clock.now()
        if redemption is not None:
            checkout.redemption_ref = redemption.redemption_ref
            self._row(session, checkout, redemption.redemption_ref, now)
        count_on_commit(session, CHECKOUT_STAGES, stage="payment_started")  # with points
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout_id,
            action="redemption.requested",
            actor=actor.audit_actor(),
            practice_id=checkout.practice_id,
            after={
                "redemption_ref": redemption.redemption_ref if redemption else None,
                "points": planned.points,
                "amount_minor": planned.amount_minor,
                "currency": checkout.currency,
                "answered": redemption is not None,
            },
            at=now,
        )

    def refused(self, session: Session, checkout_id: uuid.UUID, error: RewardsRejected) -> None:
        """Rewards Manager refused the redemption: the checkout fails (nothing was redeemed)."""
        checkout = lock_checkout(session, checkout_id)
        self._fail(session, checkout, f"redemption_{error.code}", error.message)
        count_on_commit(session, REDEMPTIONS, outcome="failed")

    def confirmed(
        self, session: Session, message_id: str, confirmation: Confirmation
    ) -> str | NeedsIntent:
        """Rewards Manager confirmed a redemption: what it means for the checkout. Returns what
        the callback did, or `NeedsIntent` when the rest is to be paid (the caller opens the
        intent, then calls `intent_opened`, which records the message as seen)."""
        if inbox.seen(session, INBOX_SOURCE, message_id):
            return "duplicate"
        now = self._clock.now()
        try:
            checkout_id = uuid.UUID(confirmation.reference)
        except ValueError:
            checkout_id = None
        checkout = session.get(Checkout, checkout_id, with_for_update=True) if checkout_id else None
        if checkout is None or checkout.redemption_points is None:
            inbox.record(session, INBOX_SOURCE, message_id, "redemption.confirmed", now)
            return "ignored"
        found = session.get(PointsRedemption, confirmation.redemption_ref, with_for_update=True)
        if (found is not None and found.checkout_id != checkout.checkout_id) or (
            found is None and checkout.redemption_ref not in (None, confirmation.redemption_ref)
        ):
            # Not the redemption this checkout asked for: nothing of ours to confirm.
            inbox.record(session, INBOX_SOURCE, message_id, "redemption.confirmed", now)
            return "ignored"
        if found is None:  # the request's answer was lost: the callback tells us
            checkout.redemption_ref = confirmation.redemption_ref
            found = self._row(session, checkout, confirmation.redemption_ref, now)
        if found.status != "requested":  # confirmed before: a redelivery with another id
            return self._after_confirmation(session, message_id, checkout, now)
        taken = session.scalar(
            select(PointsRedemption.redemption_ref).where(
                PointsRedemption.settlement_ref == confirmation.settlement_ref
            )
        )
        if taken is not None:  # one settlement settles one redemption (a unique column)
            raise Conflict(
                "Rewards Manager named a settlement that already settled another redemption.",
                code="settlement_ref_reused",
            )
        found.status, found.confirmed_at = "confirmed", now
        found.settlement_ref = confirmation.settlement_ref
        count_on_commit(session, REDEMPTIONS, outcome="confirmed")
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout.checkout_id,
            action="redemption.confirmed",
            actor=REWARDS_ACTOR.audit_actor(),
            practice_id=checkout.practice_id,
            after={
                "redemption_ref": found.redemption_ref,
                "settlement_ref": confirmation.settlement_ref,
                "points": confirmation.points,
                "amount_minor": confirmation.amount_minor,
                "currency": confirmation.currency,
            },
            at=now,
        )
        agreed = (confirmation.points, confirmation.amount_minor, confirmation.currency) == (
            checkout.redemption_points,
            checkout.redemption_amount_minor,
            checkout.currency,
        )
        if checkout.status != CheckoutStatus.AWAITING_REDEMPTION or not agreed:
            # Too late (the checkout expired or failed) or not what we asked: no order, and
            # Rewards Manager is asked to give the points back.
            if checkout.status == CheckoutStatus.AWAITING_REDEMPTION:
                self._fail(
                    session,
                    checkout,
                    "redemption_mismatch",
                    "Rewards Manager confirmed other points than were asked; they are returned.",
                )
            self.request_reversal(session, checkout, found, "checkout_not_payable")
            inbox.record(session, INBOX_SOURCE, message_id, "redemption.confirmed", now)
            return "reversal_requested"
        if checkout.amount_due_minor == 0:
            session.flush()
            outcome = self._completion.settle_with_points(
                session, checkout.checkout_id, confirmation.settlement_ref, REWARDS_ACTOR
            )
            inbox.record(session, INBOX_SOURCE, message_id, "redemption.confirmed", now)
            return _order_result(outcome)
        before = checkout.status
        checkout.status = transition(
            CheckoutStatus.AWAITING_REDEMPTION, CheckoutStatus.AWAITING_PAYMENT
        ).value
        checkout.updated_at, checkout.version = now, checkout.version + 1
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout.checkout_id,
            action="checkout.awaiting_payment",
            actor=REWARDS_ACTOR.audit_actor(),
            practice_id=checkout.practice_id,
            before={"status": before},
            after={"status": checkout.status, "amount_due_minor": checkout.amount_due_minor},
            at=now,
        )
        return NeedsIntent(
            checkout.checkout_id,
            checkout.amount_due_minor,
            checkout.currency,
            checkout.return_url,
        )

    def _after_confirmation(
        self, session: Session, message_id: str, checkout: Checkout, now: datetime
    ) -> str | NeedsIntent:
        if checkout.status == CheckoutStatus.AWAITING_PAYMENT and not checkout.payment_intent_id:
            return NeedsIntent(
                checkout.checkout_id,
                checkout.amount_due_minor,
                checkout.currency,
                checkout.return_url,
            )
        inbox.record(session, INBOX_SOURCE, message_id, "redemption.confirmed", now)
        return "duplicate"

    def intent_opened(
        self,
        session: Session,
        message_id: str,
        checkout_id: uuid.UUID,
        intent_id: str,
        payment_url: str,
    ) -> str:
        """The payment intent for the rest, on the checkout (unless one is there already)."""
        checkout = lock_checkout(session, checkout_id)
        now = self._clock.now()
        if checkout.status == CheckoutStatus.AWAITING_PAYMENT and not checkout.payment_intent_id:
            checkout.payment_intent_id, checkout.payment_url = intent_id, payment_url
            checkout.payment_attempts = 1
            checkout.updated_at, checkout.version = now, checkout.version + 1
            self._audit.record(
                session,
                stream_type="checkout",
                stream_id=checkout_id,
                action="checkout.payment_opened",
                actor=REWARDS_ACTOR.audit_actor(),
                practice_id=checkout.practice_id,
                after={"intent_id": intent_id, "amount_minor": checkout.amount_due_minor},
                at=now,
            )
        inbox.record(session, INBOX_SOURCE, message_id, "redemption.confirmed", now)
        return "awaiting_payment"

    def reversed(self, session: Session, message_id: str, data: dict[str, Any]) -> str:
        """Rewards Manager says it reinstated points: recorded for reconciliation only; we never
        start a reversal because of it."""
        if inbox.seen(session, INBOX_SOURCE, message_id):
            return "duplicate"
        now = self._clock.now()
        inbox.record(session, INBOX_SOURCE, message_id, "redemption.reversed", now)
        found = session.get(
            PointsRedemption, str(data.get("redemption_ref"))[:64], with_for_update=True
        )
        if found is None:
            return "ignored"
        # The checkout first: the lock order of every writer of its audit stream.
        session.get(Checkout, found.checkout_id, with_for_update=True)
        # Only a reversal we asked for closes the redemption: for a checkout that made no order
        # (`reversal_requested`), or for an order refunded since (refunds/notices.py asks for
        # the refund's share of the points). One we did not ask for is a reconciliation signal
        # (README: recorded only): the order keeps its payment and its own refund path
        # (refunds/points.py); staff see it in the checkout's audit trail.
        refunded = session.scalar(
            select(Order.refund_status).where(Order.redemption_ref == found.redemption_ref)
        )
        requested = found.status == "reversal_requested" or refunded not in (None, "none")
        if requested and found.status in ("confirmed", "reversal_requested"):
            found.status, found.reversed_at = "reversed", now
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=found.checkout_id,
            action="redemption.reversed",
            actor=REWARDS_ACTOR.audit_actor(),
            practice_id=found.practice_id,
            after={
                "redemption_ref": found.redemption_ref,
                "reversal_ref": str(data.get("reversal_ref"))[:64],
                "points": data.get("points") if isinstance(data.get("points"), int) else None,
                "status": found.status,
                "requested": requested,
            },
            at=now,
        )
        return "recorded"

    # ---- giving points back -------------------------------------------------------------

    def request_reversal(
        self, session: Session, checkout: Checkout, found: PointsRedemption, reason: str
    ) -> bool:
        return self._reversals.request(session, checkout, found, reason)

    # ---- helpers ----------------------------------------------------------------------------

    def _row(
        self, session: Session, checkout: Checkout, redemption_ref: str, now: datetime
    ) -> PointsRedemption:
        assert checkout.redemption_points is not None
        found = PointsRedemption(
            redemption_ref=redemption_ref,
            checkout_id=checkout.checkout_id,
            patient_id=checkout.patient_id,
            practice_id=checkout.practice_id,
            points=checkout.redemption_points,
            amount_minor=checkout.redemption_amount_minor,
            currency=checkout.currency,
            status="requested",
            requested_at=now,
        )
        session.add(found)
        session.flush()
        return found

    def _fail(self, session: Session, checkout: Checkout, code: str, reason: str) -> None:
        now = self._clock.now()
        before = checkout.status
        checkout.status = transition(CheckoutStatus(before), CheckoutStatus.FAILED).value
        checkout.failure_code, checkout.failure_reason = code[:64], reason
        count_on_commit(session, CHECKOUT_STAGES, stage="failed")
        checkout.updated_at, checkout.version = now, checkout.version + 1
        self._audit.record(
            session,
            stream_type="checkout",
            stream_id=checkout.checkout_id,
            action="checkout.redemption_failed",
            actor=REWARDS_ACTOR.audit_actor(),
            practice_id=checkout.practice_id,
            before={"status": before},
            after={"status": checkout.status, "failure_code": checkout.failure_code},
            at=now,
        )


def _order_result(outcome: Outcome) -> str:
    return "order_created" if outcome.order is not None else outcome.result.value
