"""Catalogue tables. Price and availability live here only (spec §3.1: no local copies)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, UTCDateTime


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint(
            "fulfilment_type IN ('Drop-Ship', 'In-Clinic', 'Digital')", name="fulfilment_type"
        ),
        CheckConstraint(
            "availability_status IN ('available', 'unavailable', 'deprecated')",
            name="availability_status",
        ),
        CheckConstraint("cost_price_minor >= 0", name="cost_price_non_negative"),
        # The catalogue's display order, for its keyset pages.
        Index("ix_products_display_order", "category", "name", "product_id"),
        CheckConstraint("length(currency) = 3", name="currency_code"),
    )

    product_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    imagery_ref: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(80), index=True)
    fulfilment_type: Mapped[str] = mapped_column(String(16))
    cost_price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    availability_status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(64))


class PracticeProductSetting(Base):
    __tablename__ = "practice_product_settings"
    __table_args__ = (CheckConstraint("retail_price_minor > 0", name="retail_price_positive"),)

    practice_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("products.product_id"), primary_key=True
    )
    retail_price_minor: Mapped[int] = mapped_column(BigInteger)
    practice_note: Mapped[str | None] = mapped_column(Text)
    visible: Mapped[bool] = mapped_column(Boolean)
    in_clinic_stock_available: Mapped[bool] = mapped_column(Boolean)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(64))
