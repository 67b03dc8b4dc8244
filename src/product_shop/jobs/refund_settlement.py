"""Sending a reserved refund to Integrated Payments and settling its outcome.

The refund was reserved by `RefundService.reserve_*` (its own unit of work, committed). Here:
Integrated Payments is called with no transaction open (Idempotency-Key `refund:{id}`, our
reference the refund id); its answer is recorded in a unit of work of its own. When the call
gives no answer (a timeout after sending, a connection lost), the outcome is unknown: the refund
stays `pending` and is settled by reading its status at Integrated Payments by our reference —
found, it is recorded; not found, the same request is sent again under the same Idempotency-Key,
which Integrated Payments answers with the first refund if there was one, so money goes back at
most once. `RefundSettlement.run_once` does that for every refund left pending (the scheduled
job `refund_settlement`, `jobs/schedule.py`, and `product-shop refunds settle`). It never
starts a refund: each one was asked for, and is attributed to, a named staff member.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.integrations.payments import (
    IntegratedPayments,
    PaymentRejected,
    PaymentsUnavailable,
    RefundResult,
)
from product_shop.logging import get_logger
from product_shop.refunds.pending import PendingRefund, due_for_settling
from product_shop.refunds.queries import refund_document
from product_shop.refunds.schemas import RefundOut
from product_shop.refunds.service import RefundService

log = get_logger(__name__)

# Called in the unit of work that records the outcome (e.g. to store an idempotent response).
OnRecord = Callable[[Session, RefundOut], None]


@dataclass(frozen=True, slots=True)
class Settled:
    refund: RefundOut
    rejected: PaymentRejected | None = None  # why Integrated Payments refused, when it did


class RefundSettlement:
    def __init__(
        self,
        *,
        database: Database,
        payments: IntegratedPayments,
        refunds: RefundService,
        clock: Clock,
        settle_after: timedelta,
    ) -> None:
        self._database = database
        self._payments = payments
        self._refunds = refunds
        self._clock = clock
        self._settle_after = settle_after

    def send(self, pending: PendingRefund, *, on_record: OnRecord | None = None) -> Settled:
        """Make the refund at Integrated Payments and record what happened; an unknown outcome
        is settled once at once (and later by `run_once` if still unknown)."""
        try:
            result = self._refund(pending)
        except PaymentRejected as exc:
            return self._failed(pending.refund_id, exc, on_record)
        except PaymentsUnavailable:
            log.warning("refund_outcome_unknown", refund_id=str(pending.refund_id))
            return self.settle(pending, on_record=on_record)
        return self._succeeded(pending.refund_id, result, "request", on_record)

    def settle(self, pending: PendingRefund, *, on_record: OnRecord | None = None) -> Settled:
        """Read the refund's status by our reference; if Integrated Payments has none, send the
        same request again (same key: at most one refund). Still no answer: it stays pending."""
        try:
            found = self._payments.get_refund(str(pending.refund_id))
        except (PaymentsUnavailable, PaymentRejected) as exc:
            # The status could not be read: the refund may have been made, so it stays pending.
            log.warning("refund_status_unread", refund_id=str(pending.refund_id), error=repr(exc))
            return self._still_pending(pending)
        try:
            result = found if found is not None else self._refund(pending)
        except PaymentRejected as exc:  # none was made, and Integrated Payments refuses it
            return self._failed(pending.refund_id, exc, on_record)
        except PaymentsUnavailable:
            return self._still_pending(pending)
        return self._succeeded(pending.refund_id, result, "settlement", on_record)

    def _still_pending(self, pending: PendingRefund) -> Settled:
        with self._database.reading() as session:
            return Settled(refund_document(session, pending.refund_id))

    def run_once(self) -> int:
        """Settle every refund left pending for longer than `settle_after`; how many settled."""
        with self._database.reading() as session:
            due = due_for_settling(session, self._clock.now() - self._settle_after)
        settled = 0
        for pending in due:
            outcome = self.settle(pending)
            if outcome.refund.status != "pending":
                settled += 1
                log.info(
                    "refund_settled",
                    refund_id=str(pending.refund_id),
                    status=outcome.refund.status,
                )
        return settled

    def _refund(self, pending: PendingRefund) -> RefundResult:
        return self._payments.refund(
            transaction_ref=pending.transaction_ref,
            amount_minor=pending.amount_minor,
            currency=pending.currency,
            reason_code=pending.reason_code,
            initiated_by=pending.initiated_by,
            idempotency_key=pending.idempotency_key,
            merchant_reference=str(pending.refund_id),
        )

    def _succeeded(
        self,
        refund_id: uuid.UUID,
        result: RefundResult,
        settled_by: str,
        on_record: OnRecord | None,
    ) -> Settled:
        def record(session: Session) -> RefundOut:
            self._refunds.succeeded(session, refund_id, result, settled_by=settled_by)
            session.flush()
            document = refund_document(session, refund_id)
            if on_record is not None:
                on_record(session, document)
            return document

        return Settled(self._database.run(record))

    def _failed(
        self, refund_id: uuid.UUID, rejected: PaymentRejected, on_record: OnRecord | None
    ) -> Settled:
        def record(session: Session) -> RefundOut:
            self._refunds.failed(session, refund_id, rejected.code, rejected.message)
            session.flush()
            return refund_document(session, refund_id)

        return Settled(self._database.run(record), rejected=rejected)
