"""A reserved refund: what the call to Integrated Payments needs (refunds/service.py reserves
it, jobs/refund_settlement.py sends and settles it)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.refunds.tables import Refund


@dataclass(frozen=True, slots=True)
class PendingRefund:
    """What the call to Integrated Payments needs (a reserved refund)."""

    refund_id: uuid.UUID
    transaction_ref: str
    amount_minor: int
    currency: str
    reason_code: str
    initiated_by: str
    settled: bool = False  # a points refund: made and recorded already, nothing to send

    @property
    def idempotency_key(self) -> str:
        return f"refund:{self.refund_id}"


def pending_of(refund: Refund) -> PendingRefund:
    return PendingRefund(
        refund_id=refund.refund_id,
        transaction_ref=refund.payment_ref,
        amount_minor=refund.amount_minor,
        currency=refund.currency,
        reason_code=refund.reason_code,
        initiated_by=refund.initiated_by,
    )


def due_for_settling(session: Session, older_than: datetime) -> list[PendingRefund]:
    """Refunds still `pending` (their outcome unknown) since before `older_than`."""
    rows = session.scalars(
        select(Refund)
        .where(Refund.status == "pending", Refund.initiated_at < older_than)
        .order_by(Refund.initiated_at)
        .limit(100)
    )
    return [pending_of(refund) for refund in rows]
