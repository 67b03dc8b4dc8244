"""Catalogue API models. Names follow spec §15.1; money is integer minor units."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, StringConstraints

from product_shop.catalogue.model import AvailabilityStatus, FulfilmentType
from product_shop.core.money import MAX_MINOR, Currency
from product_shop.core.text import InputModel

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
ImageryRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
PracticeNote = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
CostMinor = Annotated[StrictInt, Field(ge=0, le=MAX_MINOR)]
PriceMinor = Annotated[StrictInt, Field(ge=1, le=MAX_MINOR)]

CatalogueView = Literal["patient", "practice", "catalogue", "service"]


class ProductCreate(InputModel):
    MULTILINE = frozenset({"description"})

    name: Name
    description: Description = ""
    imagery_ref: ImageryRef | None = None
    category: Category
    fulfilment_type: FulfilmentType
    cost_price_minor: CostMinor
    currency: Currency = "GBP"
    availability_status: Literal[AvailabilityStatus.AVAILABLE, AvailabilityStatus.UNAVAILABLE] = (
        AvailabilityStatus.AVAILABLE
    )


class ProductPatch(InputModel):
    """Only the fields sent change. Fulfilment type and currency are fixed once created."""

    MULTILINE = frozenset({"description"})

    name: Name | None = None
    description: Description | None = None
    imagery_ref: ImageryRef | None = None
    category: Category | None = None
    cost_price_minor: CostMinor | None = None
    availability_status: AvailabilityStatus | None = None


class PracticeSettingsIn(InputModel):
    MULTILINE = frozenset({"practice_note"})

    retail_price_minor: PriceMinor
    practice_note: PracticeNote | None = None
    visible: StrictBool
    in_clinic_stock_available: StrictBool = False


class Product(BaseModel):
    """A catalogue product as the Primoro catalogue team sees it."""

    product_id: uuid.UUID
    name: str
    description: str
    imagery_ref: str | None
    category: str
    fulfilment_type: FulfilmentType
    availability_status: AvailabilityStatus
    cost_price_minor: int
    currency: str
    version: int


class CatalogueItem(BaseModel):
    """A product as one practice offers it. Staff-only fields are absent from patient views."""

    product_id: uuid.UUID
    name: str
    description: str
    imagery_ref: str | None
    category: str
    fulfilment_type: FulfilmentType
    availability_status: AvailabilityStatus
    retail_price_minor: int | None
    currency: str
    practice_note: str | None
    purchasable: bool
    cost_price_minor: int | None = Field(
        default=None, description="Practice staff and catalogue team only; never shown to patients."
    )
    visible: bool | None = Field(default=None, description="Not in patient views.")
    in_clinic_stock_available: bool | None = Field(
        default=None, description="Not in patient views."
    )
    settings_version: int | None = Field(
        default=None, description="Version of the practice's settings (for If-Match). Staff only."
    )


class Catalogue(BaseModel):
    """One page of the catalogue, in display order (category, then name)."""

    practice_id: uuid.UUID | None
    view: CatalogueView
    items: list[CatalogueItem]
    next_cursor: str | None = Field(
        default=None,
        description="Pass as ?cursor= for the next page; null on the last page.",
    )
