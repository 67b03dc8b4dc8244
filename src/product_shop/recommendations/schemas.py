"""The recommendations API's documents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field, StringConstraints

from product_shop.core.text import InputModel

FRAMING: Literal["Recommended by your care team"] = "Recommended by your care team"
MAX_PRODUCTS = 10


class RecommendationIn(InputModel):
    MULTILINE: ClassVar[frozenset[str]] = frozenset({"note"})

    product_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_PRODUCTS)]
    note: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
        | None
    ) = Field(default=None, description="A note to the patient, shown with each product")
    appointment_id: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None
    ) = Field(default=None, description="The appointment it was made in or after, if any")


class WithdrawIn(InputModel):
    reason: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
        | None
    ) = None


class RecommendationOut(BaseModel):
    """A recommendation as the practice's staff see it."""

    recommendation_id: uuid.UUID
    practice_id: uuid.UUID
    patient_id: uuid.UUID
    product_id: uuid.UUID
    product_name: str
    recommended_by: str = Field(description="The clinician's (or approver's) Access Manager id")
    recommended_by_name: str | None
    recommended_by_role: str
    appointment_id: str | None
    note: str | None
    status: Literal["active", "withdrawn"]
    created_at: datetime
    withdrawn_at: datetime | None
    withdrawn_by: str | None


class RecommendationList(BaseModel):
    items: list[RecommendationOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null at the end."
    )


class RecommendedProduct(BaseModel):
    """The product as the practice's catalogue shows it now (never a copy)."""

    product_id: uuid.UUID
    name: str
    description: str | None
    imagery_ref: str | None
    category: str
    fulfilment_type: str
    retail_price_minor: int | None = Field(description="Null when the practice does not show it")
    currency: str
    purchasable: bool = Field(
        description="False when the product is unavailable or the practice no longer shows it"
    )


class PatientRecommendationOut(BaseModel):
    """What the patient sees: a recommendation framed as their care team's, with its clinician."""

    recommendation_id: uuid.UUID
    framing: Literal["Recommended by your care team"] = FRAMING
    recommended_by_name: str | None = Field(description="The clinician's display name")
    note: str | None
    recommended_at: datetime
    product: RecommendedProduct


class PatientRecommendationList(BaseModel):
    items: list[PatientRecommendationOut]
