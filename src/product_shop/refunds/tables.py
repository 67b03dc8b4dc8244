"""Refunds (spec §15.1), the captures that made no order (payment exceptions) and the patients'
requests to cancel. A refund row is written `pending` before Integrated Payments is called, with
its amount reserved on what it refunds (`refund_pending_minor`), so that two staff members
refunding at once can never together refund more than was captured: the database checks the
reservation and the refunded total against the capture (constraints `refund_within_capture`),
not only the code."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, JSONDoc, UTCDateTime
from product_shop.db.encrypted import EncryptedText

REFUND_STATES = "'pending', 'succeeded', 'failed'"
REFUND_KINDS = "'amount', 'lines', 'balance', 'points'"


class PaymentException(Base):
    """A capture that could not become an order (late or duplicate capture, wrong amount, a
    product no longer purchasable): listed for staff until it is refunded (spec §5.3)."""

    __tablename__ = "payment_exceptions"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(
            "refunded_minor >= 0 AND refund_pending_minor >= 0 "
            "AND refunded_minor + refund_pending_minor <= amount_minor",
            name="refund_within_capture",
        ),
        Index("ix_payment_exceptions_practice_recorded", "practice_id", "recorded_at"),
    )

    exception_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    checkout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("checkouts.checkout_id"))
    practice_id: Mapped[uuid.UUID] = mapped_column()
    patient_id: Mapped[uuid.UUID] = mapped_column()
    intent_id: Mapped[str] = mapped_column(String(64), unique=True)
    payment_ref: Mapped[str] = mapped_column(String(64), unique=True)
    payment_method: Mapped[str | None] = mapped_column(String(24))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    expected_amount_minor: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refund_pending_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Refund(Base):
    """One refund of an order, or of a payment exception (exactly one of the two)."""

    __tablename__ = "refunds"
    __table_args__ = (
        # Money, or (an order paid wholly with points) the points Rewards Manager reinstates.
        CheckConstraint(
            "amount_minor > 0 OR (kind = 'points' AND amount_minor = 0 AND points > 0)",
            name="amount_or_points",
        ),
        CheckConstraint(f"status IN ({REFUND_STATES})", name="status"),
        CheckConstraint(f"kind IN ({REFUND_KINDS})", name="kind"),
        CheckConstraint("(order_id IS NULL) <> (payment_exception_id IS NULL)", name="one_subject"),
        CheckConstraint(
            "status <> 'succeeded' OR (completed_at IS NOT NULL AND "
            "(provider_refund_ref IS NOT NULL OR kind = 'points'))",
            name="succeeded_recorded",
        ),
        Index("ix_refunds_practice_initiated", "practice_id", "initiated_at"),
        Index("ix_refunds_order", "order_id"),
        Index("ix_refunds_status_initiated", "status", "initiated_at"),
        # Finance's read of every practice's refunds in a range (`orders/finance.py`, 0024).
        Index("ix_refunds_initiated_id", "initiated_at", "refund_id"),
    )

    refund_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.order_id"))
    payment_exception_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("payment_exceptions.exception_id")
    )
    practice_id: Mapped[uuid.UUID] = mapped_column()
    patient_id: Mapped[uuid.UUID] = mapped_column()
    # The original DNA Payments transaction and payment method (spec §5.3).
    payment_ref: Mapped[str] = mapped_column(String(64))
    payment_method: Mapped[str] = mapped_column(String(24))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    # Points Rewards Manager is asked to reinstate by this refund (a points refund's only effect).
    points: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason_code: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(EncryptedText("refunds.note"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    # The named staff member (spec §3.3, §5.3) and when their MFA step-up was made (spec §9).
    initiated_by: Mapped[str] = mapped_column(String(64))
    initiated_by_name: Mapped[str | None] = mapped_column(String(200))
    initiated_by_role: Mapped[str] = mapped_column(String(32))
    initiated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    mfa_at: Mapped[datetime] = mapped_column(UTCDateTime)
    provider_refund_ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    # The audit entry that recorded the outcome (its id and hash: the immutable record).
    audit_entry_id: Mapped[uuid.UUID | None] = mapped_column()
    audit_entry_hash: Mapped[str | None] = mapped_column(String(64))


class RefundLine(Base):
    """The quantities of an order's lines a refund by lines (or of the balance) refunds."""

    __tablename__ = "refund_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        Index("ix_refund_lines_line", "line_item_id"),
    )

    refund_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("refunds.refund_id"), primary_key=True)
    line_item_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("order_lines.line_item_id"), primary_key=True
    )
    quantity: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class CancellationRequest(Base):
    """A patient's request to cancel an order (distance selling, spec §16 Privacy): a task for
    the practice's staff, who make any refund themselves."""

    __tablename__ = "cancellation_requests"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'refunded', 'closed')", name="status"),
        Index("ix_cancellation_requests_practice_status", "practice_id", "status", "requested_at"),
        Index("ix_cancellation_requests_order", "order_id"),
    )

    request_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.order_id"))
    practice_id: Mapped[uuid.UUID] = mapped_column()
    patient_id: Mapped[uuid.UUID] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(EncryptedText("cancellation_requests.reason"))
    # Per line: quantity, whether it may be cancelled by this path and why (JSON list).
    lines: Mapped[list[dict[str, object]]] = mapped_column(JSONDoc)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refund_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("refunds.refund_id"))
