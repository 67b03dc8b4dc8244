"""Recommendations: a named clinician of the practice recommended a catalogue product to one of
its patients (spec §4.1). The product's price and availability are never copied: the patient's
view reads them from the catalogue when it is shown."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, JSONDoc, UTCDateTime
from product_shop.db.encrypted import EncryptedJSON, EncryptedText


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
    note: Mapped[str | None] = mapped_column(EncryptedText("recommendations.note"))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_by: Mapped[str | None] = mapped_column(String(64))


class AppointmentContext(Base):
    """Appointment Manager told us an appointment ended (spec §11.1): kept as context for the
    practice's staff, never a clinical record, never written back anywhere."""

    __tablename__ = "appointment_contexts"
    __table_args__ = (
        UniqueConstraint("practice_id", "appointment_id", name="uq_appointment_contexts_appt"),
        CheckConstraint(
            "suggestions_status IN ('suggested', 'none', 'engine_failed', 'off')",
            name="suggestions_status_known",
        ),
        Index("ix_appointment_contexts_patient", "practice_id", "patient_id", "ended_at"),
    )

    appointment_context_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    practice_id: Mapped[uuid.UUID] = mapped_column()
    patient_id: Mapped[uuid.UUID] = mapped_column()
    appointment_id: Mapped[str] = mapped_column(String(64))
    clinician_id: Mapped[str] = mapped_column(String(64))
    clinician_name: Mapped[str | None] = mapped_column(Text)
    treatment_codes: Mapped[list[str]] = mapped_column(JSONDoc)
    reason: Mapped[str | None] = mapped_column(EncryptedText("appointment_contexts.reason"))
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message_id: Mapped[str] = mapped_column(String(120))
    # What came of asking the engine: suggestions, none relevant, the engine failed, or off.
    suggestions_status: Mapped[str] = mapped_column(String(16))


class AiSuggestion(Base):
    """An AI engine suggested a product for a patient after an appointment (spec §7). It stays
    pending, seen by staff only, until a named clinician or staff member approves it (it becomes
    a recommendation attributed to them) or rejects it; an undecided one expires."""

    __tablename__ = "ai_suggestions"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired')", name="status_known"
        ),
        # Approved is exactly the suggestions that became a recommendation; decided ones say
        # who decided and when.
        CheckConstraint(
            "(status = 'approved') = (recommendation_id IS NOT NULL)", name="approved_recommends"
        ),
        CheckConstraint(
            "status IN ('pending', 'expired') OR (decided_by IS NOT NULL AND decided_at IS NOT "
            "NULL)",
            name="decision_named",
        ),
        CheckConstraint("score BETWEEN 0 AND 1000", name="score_range"),
        UniqueConstraint(
            "appointment_context_id", "product_id", name="uq_ai_suggestions_context_product"
        ),
        Index("ix_ai_suggestions_practice", "practice_id", "status", "created_at"),
    )

    suggestion_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    practice_id: Mapped[uuid.UUID] = mapped_column()
    patient_id: Mapped[uuid.UUID] = mapped_column()
    appointment_context_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("appointment_contexts.appointment_context_id")
    )
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.product_id"))
    engine: Mapped[str] = mapped_column(String(64))
    engine_version: Mapped[str] = mapped_column(String(32))
    # What the engine was given (treatment codes, reason, how many candidates) and said.
    inputs: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("ai_suggestions.inputs"))
    rationale: Mapped[str] = mapped_column(Text)
    score: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_by_name: Mapped[str | None] = mapped_column(Text)
    decided_by_role: Mapped[str | None] = mapped_column(String(32))
    decision_reason: Mapped[str | None] = mapped_column(
        EncryptedText("ai_suggestions.decision_reason")
    )
    recommendation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("recommendations.recommendation_id")
    )
