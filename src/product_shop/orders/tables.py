"""Orders and their line items. An order row cannot exist without a recorded capture (constraint
`paid` and the foreign key to the capture). The rewards issue admits a confirmed full-value points
settlement by a foreign key of its own, never by a free-text reference."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, UTCDateTime

LINE_STATES = (
    "'pending', 'sent_to_supplier', 'dispatched', 'preparing', 'ready_for_collection', "
    "'collected', 'delivered', 'exception'"
)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("payment_ref IS NOT NULL", name="paid"),
        CheckConstraint(
            "status IN ('Created', 'Fulfilment-In-Progress', 'Completed', 'Refunded')",
            name="status",
        ),
        CheckConstraint(
            "fulfilment_status IN ('Created', 'Fulfilment-In-Progress', 'Completed')",
            name="fulfilment_status",
        ),
        CheckConstraint("refund_status IN ('none', 'partial', 'full')", name="refund_status"),
        CheckConstraint("total_minor > 0", name="total_positive"),
        CheckConstraint(
            "captured_minor >= 0 AND captured_minor <= total_minor", name="captured_range"
        ),
        CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= captured_minor",
            name="refund_not_above_capture",
        ),
        Index("ix_orders_practice_created", "practice_id", "created_at"),
        Index("ix_orders_patient_created", "patient_id", "created_at"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    checkout_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("checkouts.checkout_id"), unique=True)
    patient_id: Mapped[uuid.UUID] = mapped_column()
    practice_id: Mapped[uuid.UUID] = mapped_column()
    status: Mapped[str] = mapped_column(String(32))
    fulfilment_status: Mapped[str] = mapped_column(String(32))
    refund_status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    captured_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_minor: Mapped[int] = mapped_column(BigInteger)
    payment_ref: Mapped[str | None] = mapped_column(
        ForeignKey("payment_captures.transaction_ref"), unique=True
    )
    payment_method: Mapped[str | None] = mapped_column(String(24))
    redemption_ref: Mapped[str | None] = mapped_column(String(64))
    pms_invoice_ref: Mapped[str | None] = mapped_column(String(120))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer)


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint(f"fulfilment_status IN ({LINE_STATES})", name="fulfilment_status"),
        CheckConstraint(
            "fulfilment_type IN ('Drop-Ship', 'In-Clinic', 'Digital')", name="fulfilment_type"
        ),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_minor > 0", name="unit_price_positive"),
        Index("ix_order_lines_order", "order_id", "line_no", unique=True),
        # The active orders holding a product, in order id batches (deprecation workflow).
        Index("ix_order_lines_product_order", "product_id", "order_id"),
    )

    line_item_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.order_id"))
    line_no: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.product_id"))
    product_name: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    fulfilment_type: Mapped[str] = mapped_column(String(16))
    fulfilment_status: Mapped[str] = mapped_column(String(24))
    fulfilment_ref: Mapped[str | None] = mapped_column(String(120))
    carrier: Mapped[str | None] = mapped_column(String(80))
    tracking_number: Mapped[str | None] = mapped_column(String(120))
    tracking_url: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
