"""Capture reconciliation: payments whose callback and app call never came (spec §5.2).

A checkout normally completes when the patient app calls `complete` or Integrated Payments'
callback arrives. If neither does (the app closed, the callback lost), the money may have been
taken with no order. Each run looks at checkouts still awaiting payment, with a payment page,
whose page opened at least `after` ago (`capture_reconciliation_after_seconds`), and at failed
checkouts still in their lifetime (a declined card leaves the hosted page open for another
one), and asks Integrated Payments' sync API for the payment's status, with no transaction
open. Then, through the same completion as the app and the callback (`checkout/complete.py`:
`begin`, `confirm`, `record` in a unit of work retried when a concurrent completion won,
`after_commit`):

- captured: the order is made (exactly one: the checkout row lock and one order per checkout),
  or, when it cannot be, one payment exception for a staff refund;
- failed (a checkout still awaiting payment): the checkout fails as for a failed-payment
  callback (`payment_failed`, and any confirmed points go back);
- cancelled: nothing. Only we close pages (a retry, a product no longer for sale, the expiry),
  and the completion treats a cancelled page as ours; failing the checkout here would race a
  patient's retry, which cancels the old page before it stores the new one. A page closed and
  never replaced is expired at the checkout's time (`jobs/checkout_expiry.py`).
- still open, processing, or Integrated Payments unavailable: left for the next run.

A run takes at most `batch_size` checkouts, oldest first, and the next run continues after the
last one seen (a keyset cursor held by this process, wrapping round at the end), so pages left
open for their whole lifetime never starve newer ones. Safe to run again and beside callbacks:
completion reads everything it decides on.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from product_shop.checkout.complete import CheckoutCompletion, Pending
from product_shop.checkout.model import CheckoutStatus
from product_shop.checkout.outcomes import Outcome, Result
from product_shop.checkout.reversals import SYSTEM_ACTOR
from product_shop.checkout.tables import Checkout
from product_shop.core.clock import Clock
from product_shop.core.errors import BadGateway, Conflict, ServiceUnavailable
from product_shop.db.engine import Database, is_retryable
from product_shop.integrations.payments import PaymentState, PaymentStatus
from product_shop.logging import get_logger

log = get_logger(__name__)

BATCH_SIZE = 100


class CaptureReconciliation:
    def __init__(
        self,
        *,
        database: Database,
        completion: CheckoutCompletion,
        clock: Clock,
        after: timedelta,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._database = database
        self._completion = completion
        self._clock = clock
        self._after = after
        self._batch_size = batch_size
        self._cursor: tuple[datetime, uuid.UUID] | None = None

    def run_once(self) -> int:
        """Check one batch of checkouts; how many were completed, failed or became a payment
        exception."""
        due = self._due()
        settled = 0
        for checkout_id in due:
            if self._reconcile(checkout_id) is not None:
                settled += 1
        return settled

    def _due(self) -> list[uuid.UUID]:
        now = self._clock.now()
        query = (
            select(Checkout.checkout_id, Checkout.updated_at)
            .where(
                Checkout.payment_intent_id.is_not(None),
                Checkout.updated_at <= now - self._after,
                or_(
                    Checkout.status == CheckoutStatus.AWAITING_PAYMENT.value,
                    and_(Checkout.status == CheckoutStatus.FAILED.value, Checkout.expires_at > now),
                ),
            )
            .order_by(Checkout.updated_at, Checkout.checkout_id)
            .limit(self._batch_size)
        )
        if self._cursor is not None:
            at, last = self._cursor
            query = query.where(
                or_(
                    Checkout.updated_at > at,
                    and_(Checkout.updated_at == at, Checkout.checkout_id > last),
                )
            )
        with self._database.reading() as session:
            rows = session.execute(query).all()
        # A short batch was the end: the next run starts from the oldest again.
        self._cursor = (rows[-1][1], rows[-1][0]) if len(rows) == self._batch_size else None
        return [checkout_id for checkout_id, _ in rows]

    def _reconcile(self, checkout_id: uuid.UUID) -> str | None:
        """What became of one checkout (an outcome's result), or None when nothing changed."""
        completion = self._completion
        try:
            with self._database.reading() as session:
                step = completion.begin(session, checkout_id)
        except Conflict:
            return None  # moved on since it was listed (expired, awaiting points)
        if isinstance(step, Outcome):
            return None  # completed meanwhile
        try:
            status = completion.confirm(step)
        except (ServiceUnavailable, BadGateway) as exc:
            log.info("reconciliation_status_unknown", checkout_id=str(checkout_id), code=exc.code)
            return None
        except Conflict as exc:  # the payment names another checkout: never act on it
            log.warning(
                "reconciliation_payment_mismatch", checkout_id=str(checkout_id), code=exc.code
            )
            return None
        if not _acts_on(step, status):
            return None

        def record(session: Session, pending: Pending = step) -> Outcome:
            return completion.record(session, pending, status, SYSTEM_ACTOR, None)

        outcome = self._database.run(record, retry_if=_lost_race)
        completion.after_commit(outcome)
        log.info(
            "capture_reconciled",
            checkout_id=str(checkout_id),
            payment=status.state.value,
            result=outcome.result.value,
        )
        return None if outcome.result is Result.NOT_CAPTURED else outcome.result.value


def _acts_on(pending: Pending, status: PaymentStatus) -> bool:
    """A capture always; a failure only for a checkout still awaiting that payment (a failed
    checkout is already failed); anything else waits."""
    if status.state is PaymentState.CAPTURED:
        return True
    return (
        status.state is PaymentState.FAILED
        and pending.checkout.status == CheckoutStatus.AWAITING_PAYMENT
    )


def _lost_race(error: BaseException) -> bool:
    """The completion lost to a concurrent one (the app, a callback): run it again to find the
    winner's order."""
    return isinstance(error, IntegrityError) or is_retryable(error)
