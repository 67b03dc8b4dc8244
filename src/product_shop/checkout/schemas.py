"""Checkout API models. No card data is ever accepted: payment happens on Integrated Payments'
hosted page; unknown fields (card_number, ...) are refused."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StrictInt, StringConstraints

from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.model import MAX_LINES, MAX_QUANTITY, CheckoutStatus
from product_shop.core.text import InputModel

Text120 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class CheckoutLineIn(InputModel):
    product_id: uuid.UUID
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)] = 1
    recommendation_id: uuid.UUID | None = Field(
        default=None,
        description="The patient's own active recommendation of this product the line came "
        "from (GET /v1/me/recommendations), for the recommendation-to-purchase conversion",
    )


class DeliveryAddress(InputModel):
    recipient_name: Text120
    line1: Text200
    line2: Text200 | None = None
    city: Text120
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=10)]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = "GB"


class CheckoutIn(InputModel):
    lines: Annotated[list[CheckoutLineIn], Field(min_length=1, max_length=MAX_LINES)]
    delivery_address: DeliveryAddress | None = Field(
        default=None, description="Required when any line is Drop-Ship."
    )
    payment_method: str | None = Field(
        default=None,
        description="Optional preference: card, apple_pay or google_pay. Direct debit is refused.",
    )
    payment_gateway: str | None = Field(
        default=None,
        description="Only Integrated Payments (DNA Payments) is permitted; any other is refused.",
    )
    redeem_points: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        strict=True,
        description="Rewards Manager points to redeem (spec §5.4). The checkout then awaits "
        "Rewards Manager's confirmation (`awaiting_redemption`) before any payment opens; the "
        "rest, if any, is paid through Integrated Payments.",
    )
    return_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="Where Integrated Payments' hosted payment page sends the patient's browser "
        "once they have paid (the app's own page; the page adds `intent_id` and "
        "`merchant_reference`, the checkout id, to its query). Then complete the checkout.",
    )


class CheckoutLineOut(BaseModel):
    line_no: int
    product_id: uuid.UUID
    name: str
    quantity: int
    unit_price_minor: int
    line_total_minor: int
    fulfilment_type: FulfilmentType


class PaymentLink(BaseModel):
    intent_id: str
    payment_url: str = Field(description="Integrated Payments' hosted payment page for the app.")
    attempts: int


class CheckoutFailure(BaseModel):
    code: str
    reason: str
    retry_url: str


class RedemptionOut(BaseModel):
    points: int
    amount_minor: int = Field(description="The points' money value, off the total")
    redemption_ref: str | None = Field(description="Rewards Manager's reference, once given")


class CheckoutOut(BaseModel):
    id: uuid.UUID
    status: CheckoutStatus
    total_minor: int
    amount_due_minor: int
    redemption: RedemptionOut | None = None
    currency: str
    lines: list[CheckoutLineOut]
    delivery_address: DeliveryAddress | None
    payment: PaymentLink | None
    failure: CheckoutFailure | None
    order_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
