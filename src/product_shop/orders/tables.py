"""Orders and their line items. An order row cannot exist without a recorded capture (constraint
`paid` and the foreign key to the capture). The rewards issue admits a confirmed full-value points
settlement by a foreign key of its own, never by a free-text reference."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, UTCDateTime
from product_shop.db.encrypted import EncryptedText

EXCEPTION_REASONS = (
    "'out_of_stock', 'address_problem', 'lost', 'damaged', 'other', 'supplier_unavailable', "
    "'supplier_refused'"
)
LINE_STATES = (
    "'pending', 'sent_to_supplier', 'dispatched', 'preparing', 'ready_for_collection', "
    "'collected', 'delivered', 'exception', 'cancelled'"
)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # Paid: a recorded capture, or (spec §3.2, §5.4) a confirmed Rewards Manager settlement
        # (foreign key to a confirmed redemption) covering the whole total with nothing captured.
        CheckConstraint(
            "payment_ref IS NOT NULL OR (settlement_ref IS NOT NULL AND captured_minor = 0 "
            "AND redeemed_minor = total_minor)",
            name="paid",
        ),
        CheckConstraint("captured_minor + redeemed_minor = total_minor", name="paid_in_full"),
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
        # Refunds in flight hold their amount here, so concurrent refunds cannot together pass
        # the capture (refunds/tables.py).
        CheckConstraint(
            "refund_pending_minor >= 0 AND refunded_minor + refund_pending_minor <= captured_minor",
            name="refund_within_capture",
        ),
        Index("ix_orders_practice_created", "practice_id", "created_at"),
        Index("ix_orders_patient_created", "patient_id", "created_at"),
        # Finance's read of every practice's orders in a range, oldest first, a page after a
        # (time, id) cursor (`orders/finance.py`, migration 0024).
        Index("ix_orders_created_id", "created_at", "order_id"),
        # Retention (`orders/retention.py`): the orders whose personal data is still held,
        # oldest first, so a run reads only those past the retention period.
        Index(
            "ix_orders_retention_due",
            "created_at",
            postgresql_where=text("personal_data_erased_at IS NULL"),
            sqlite_where=text("personal_data_erased_at IS NULL"),
        ),
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
    refund_pending_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    payment_ref: Mapped[str | None] = mapped_column(
        ForeignKey("payment_captures.transaction_ref"), unique=True
    )
    payment_method: Mapped[str | None] = mapped_column(String(24))
    redemption_ref: Mapped[str | None] = mapped_column(String(64))
    # The money value of the points redeemed, and Rewards Manager's settlement reference when
    # points paid the whole order (then nothing is captured).
    redeemed_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # An order paid wholly with points was refunded by asking Rewards Manager for them back.
    points_returned: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    settlement_ref: Mapped[str | None] = mapped_column(
        ForeignKey("points_redemptions.settlement_ref"), unique=True
    )
    pms_invoice_ref: Mapped[str | None] = mapped_column(String(120))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer)
    # When the retention job erased the order's personal data (`orders/retention.py`); amounts,
    # dates, statuses and references are kept. None: still held.
    personal_data_erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
        # The exception queue and the collection list (fulfilment).
        Index("ix_order_lines_fulfilment_status", "fulfilment_status"),
        # The open exception queue of a practice's orders (dashboards, migration 0021): small,
        # so probing it for each of a practice's orders finds the few open ones at once.
        Index(
            "ix_order_lines_open_exceptions",
            "order_id",
            postgresql_where=text(
                "fulfilment_status = 'exception' AND exception_resolution IS NULL"
            ),
            sqlite_where=text("fulfilment_status = 'exception' AND exception_resolution IS NULL"),
        ),
        CheckConstraint(f"exception_reason IN ({EXCEPTION_REASONS})", name="exception_reason"),
        CheckConstraint("supplier_sequence >= 0", name="supplier_sequence"),
        CheckConstraint(
            "refunded_quantity >= 0 AND refund_pending_quantity >= 0 "
            "AND refunded_quantity + refund_pending_quantity <= quantity",
            name="refund_quantity_range",
        ),
        CheckConstraint("cancellation IN ('requested', 'refused')", name="cancellation"),
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
    # They lead to the recipient at the carrier: stored encrypted (docs/security.md).
    tracking_number: Mapped[str | None] = mapped_column(
        EncryptedText("order_lines.tracking_number")
    )
    tracking_url: Mapped[str | None] = mapped_column(EncryptedText("order_lines.tracking_url"))
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    collected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An open exception: why, since when; `exception_resolution` closes it without a new state
    # (`refund`: left for a refund), so it leaves the practice's queue.
    exception_reason: Mapped[str | None] = mapped_column(String(32))
    exception_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exception_resolution: Mapped[str | None] = mapped_column(String(24))
    # The last supplier update applied (its `sequence`): older ones never move the line.
    supplier_sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Submissions to the supplier network so far (each with its own Idempotency-Key).
    shipment_attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Units refunded, and units in refunds still awaiting Integrated Payments' answer.
    refunded_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refund_pending_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A refunded drop-ship line's cancellation at the supplier network: `requested` until the
    # network answers (the line then becomes `cancelled`), `refused` when it was already sent.
    cancellation: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Voucher(Base):
    """A digital line's voucher codes, one per unit. The code itself is never stored: it is
    derived from the voucher id with a server key (`fulfilment.vouchers`); the table keeps its
    hash (to redeem) and last four characters (to show staff)."""

    __tablename__ = "vouchers"
    __table_args__ = (
        Index("ix_vouchers_line_unit", "line_item_id", "unit_no", unique=True),
        CheckConstraint("unit_no > 0", name="unit_no_positive"),
    )

    voucher_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    line_item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("order_lines.line_item_id"))
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.order_id"))
    unit_no: Mapped[int] = mapped_column(Integer)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_four: Mapped[str] = mapped_column(String(4))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Used at the practice (`POST /v1/vouchers/redemptions`); void once refunded.
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
