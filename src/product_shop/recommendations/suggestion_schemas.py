"""The AI suggestions API's documents (staff only; spec §7). Nothing here is ever sent to a
patient: an approved suggestion reaches the patient as a recommendation (schemas.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field, StringConstraints

from product_shop.core.text import InputModel

SuggestionStatus = Literal["pending", "approved", "rejected", "expired"]

# What every AI output carries: it is for the practice's staff and commits the practice to
# nothing (spec §7 "AI MAY NOT make commitments on behalf of the practice").
STAFF_ONLY_NOTICE = (
    "AI-generated for the practice's staff to review. It is not shown to patients and makes no "
    "commitment on behalf of the practice."
)


class ApproveIn(InputModel):
    MULTILINE: ClassVar[frozenset[str]] = frozenset({"note"})

    note: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
        | None
    ) = Field(default=None, description="The approver's note to the patient, if any")


class RejectIn(InputModel):
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ] = Field(description="Why the suggestion does not suit this patient")


class AppointmentOut(BaseModel):
    """The appointment the suggestion came from, as Appointment Manager described it."""

    appointment_id: str
    clinician_id: str
    clinician_name: str | None
    treatment_codes: list[str]
    reason: str | None
    ended_at: datetime


class SuggestedProduct(BaseModel):
    product_id: uuid.UUID
    name: str
    category: str
    purchasable: bool = Field(description="Whether a patient could buy it now")


class SuggestionOut(BaseModel):
    suggestion_id: uuid.UUID
    practice_id: uuid.UUID
    patient_id: uuid.UUID
    product: SuggestedProduct
    engine: str
    engine_version: str
    rationale: str
    score: int = Field(ge=0, le=1000, description="The engine's relevance, 0 to 1000")
    status: SuggestionStatus = Field(
        description="`expired`: left undecided past `expires_at`; it can no longer be approved"
    )
    created_at: datetime
    expires_at: datetime
    appointment: AppointmentOut
    decided_at: datetime | None
    decided_by: str | None
    decided_by_name: str | None
    decided_by_role: str | None
    decision_reason: str | None
    recommendation_id: uuid.UUID | None = Field(
        description="The recommendation an approval made (what the patient sees)"
    )
    notice: str = STAFF_ONLY_NOTICE


class SuggestionList(BaseModel):
    items: list[SuggestionOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null at the end."
    )


class WebhookAck(BaseModel):
    status: Literal["recorded", "duplicate", "ignored"]
    suggestions: int = Field(default=0, description="Pending suggestions it produced")


class ActivityFiguresOut(BaseModel):
    recommendations_made: int
    recommendations_withdrawn: int
    patients_recommended: int
    recommendations_purchased: int
    conversion_rate: float | None = Field(description="purchased / made; null when none made")
    orders: int
    orders_from_recommendations: int
    revenue_minor: int
    currency: str | None
    suggestions_pending: int
    suggestions_approved: int
    suggestions_rejected: int
    suggestions_expired: int
    top_categories: list[tuple[str, int]]


class AiSummaryOut(BaseModel):
    practice_id: uuid.UUID
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    summary: str
    figures: ActivityFiguresOut = Field(description="What the summary rests on")
    written_by: str = Field(description="The engine and version that wrote the summary")
    notice: str = STAFF_ONLY_NOTICE

    model_config = {"populate_by_name": True}
