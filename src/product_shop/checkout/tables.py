"""Checkout sessions and confirmed payment captures."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, UTCDateTime
from product_shop.db.encrypted import EncryptedJSON, EncryptedText

CHECKOUT_STATES = (
    "'open', 'awaiting_redemption', 'awaiting_payment', 'completed', 'failed', 'expired'"
)


class Checkout(Base):
    __tablename__ = "checkouts"
    __table_args__ = (
        CheckConstraint(f"status IN ({CHECKOUT_STATES})", name="status"),
        CheckConstraint("total_minor > 0", name="total_positive"),
        CheckConstraint(
            "amount_due_minor >= 0 AND amount_due_minor <= total_minor", name="amount_due_range"
        ),
        Index("ix_checkouts_patient_created", "patient_id", "created_at"),
        # The dashboard's checkout funnel: a practice's checkouts in a date range (0021).
        Index("ix_checkouts_practice_created", "practice_id", "created_at"),
    )

    checkout_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column()
    practice_id: Mapped[uuid.UUID] = mapped_column()
    status: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    # What remains to capture through Integrated Payments after any points redemption.
    amount_due_minor: Mapped[int] = mapped_column(BigInteger)
    delivery_address: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("checkouts.delivery_address")
    )
    # For the practice's "prepare for collection" task: the first name only (data minimisation).
    patient_first_name: Mapped[str | None] = mapped_column(
        EncryptedText("checkouts.patient_first_name")
    )
    payment_intent_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    payment_url: Mapped[str | None] = mapped_column(Text)
    # Where the hosted payment page sends the patient back to (`CheckoutIn.return_url`), kept
    # for every payment intent of the checkout: a retry's and the one after a points redemption.
    return_url: Mapped[str | None] = mapped_column(Text)
    payment_attempts: Mapped[int] = mapped_column(Integer)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    redemption_ref: Mapped[str | None] = mapped_column(String(64))
    redemption_points: Mapped[int | None] = mapped_column(Integer)
    redemption_amount_minor: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer)


class CheckoutLine(Base):
    __tablename__ = "checkout_lines"
    __table_args__ = (
        CheckConstraint("quantity BETWEEN 1 AND 10", name="quantity_range"),
        CheckConstraint("unit_price_minor > 0", name="unit_price_positive"),
        # Which open checkouts hold a product that stops being purchasable (checkout.cancellation).
        Index("ix_checkout_lines_product", "product_id"),
        Index(
            "ix_checkout_lines_recommendation",
            "recommendation_id",
            postgresql_where=text("recommendation_id IS NOT NULL"),
            sqlite_where=text("recommendation_id IS NOT NULL"),
        ),
    )

    checkout_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("checkouts.checkout_id"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.product_id"))
    product_name: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    fulfilment_type: Mapped[str] = mapped_column(String(16))
    # The patient's recommendation the line came from, if any (the conversion, spec §10.4).
    recommendation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("recommendations.recommendation_id")
    )


class PaymentCapture(Base):
    """A capture Integrated Payments confirmed through its sync API. Orders reference one."""

    __tablename__ = "payment_captures"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    transaction_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    intent_id: Mapped[str] = mapped_column(String(64), unique=True)
    checkout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("checkouts.checkout_id"), unique=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(24))
    card_scheme: Mapped[str | None] = mapped_column(String(24))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime)


REDEMPTION_STATES = "'requested', 'confirmed', 'reversal_requested', 'reversed'"


class PointsRedemption(Base):
    """A Rewards Manager points redemption asked for a checkout (spec §5.4). Rewards Manager
    deducts the points and confirms (`confirmed`, with its settlement reference); a failed capture
    or an abandoned checkout asks it to reverse, once (`reversal_requested`); it says when it has
    (`reversed`). Product Shop never changes a points balance."""

    __tablename__ = "points_redemptions"
    __table_args__ = (
        CheckConstraint(f"status IN ({REDEMPTION_STATES})", name="status"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(
            "status = 'requested' OR settlement_ref IS NOT NULL", name="confirmed_has_settlement"
        ),
    )

    redemption_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    checkout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("checkouts.checkout_id"), unique=True)
    patient_id: Mapped[uuid.UUID] = mapped_column()
    practice_id: Mapped[uuid.UUID] = mapped_column()
    points: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(24))
    settlement_ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reversal_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
