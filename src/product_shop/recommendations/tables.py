"""Recommendations: a named clinician of the practice recommended a catalogue product to one of
its patients (spec §4.1). The product's price and availability are never copied: the patient's
view reads them from the catalogue when it is shown."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, UTCDateTime


class Recommendation(Base):
    __tablename__ = "recommendations"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'withdrawn')", name="status_known"),
        Index("ix_recommendations_patient", "practice_id", "patient_id", "created_at"),
        Index("ix_recommendations_practice", "practice_id", "created_at"),
    )

    recommendation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    practice_id: Mapped[uuid.UUID] = mapped_column()
    patient_id: Mapped[uuid.UUID] = mapped_column()
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.product_id"))
    # Who made it (or, for an approved AI suggestion, approved it): a named clinician or staff.
    recommended_by: Mapped[str] = mapped_column(String(64))
    recommended_by_name: Mapped[str | None] = mapped_column(Text)
    recommended_by_role: Mapped[str] = mapped_column(String(32))
    appointment_id: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_by: Mapped[str | None] = mapped_column(String(64))
