"""Order API models (spec §15.1 names, money in minor units)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from product_shop.catalogue.model import FulfilmentType
from product_shop.core.text import InputModel
from product_shop.orders.model import LineState, OrderStatus, RefundStatus
from product_shop.refunds.schemas import PatientRefundOut, RefundOut


class Tracking(BaseModel):
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None


class VoucherOut(BaseModel):
    voucher_id: uuid.UUID
    unit_no: int
    code: str = Field(
        description="The full code in the owning patient's own order; masked for staff."
    )
    last_four: str


class OrderLineOut(BaseModel):
    line_item_id: uuid.UUID
    line_no: int
    product_id: uuid.UUID
    name: str
    quantity: int
    unit_price_minor: int
    line_total_minor: int
    fulfilment_type: FulfilmentType
    fulfilment_status: LineState
    fulfilment_ref: str | None
    tracking: Tracking | None
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None
    collected_at: datetime | None = None
    exception_reason: str | None = Field(
        default=None, description="Why the line is in exception (while it is)."
    )
    vouchers: list[VoucherOut] | None = Field(
        default=None, description="Digital lines: one voucher per unit."
    )
    refunded_quantity: int = Field(default=0, description="Units refunded so far.")
    cancellation: str | None = Field(
        default=None,
        description="A refunded drop-ship line's cancellation at the supplier: `requested` "
        "(awaiting the supplier; the line becomes `cancelled`), `refused` (already dispatched).",
    )


class PaymentOut(BaseModel):
    payment_ref: str | None = Field(
        description="DNA Payments transaction reference; for an order paid wholly with points, "
        "Rewards Manager's settlement reference (spec §5.4)"
    )
    method: str | None = Field(description="card, apple_pay, google_pay; `points` for points only")
    card_scheme: str | None
    card_last4: str | None
    captured_minor: int
    redeemed_minor: int = Field(default=0, description="The money value of the points redeemed")
    provider: str = "DNA Payments via Integrated Payments"


class PatientRefundSummary(BaseModel):
    refund_status: RefundStatus
    refunded_minor: int
    refund_pending_minor: int = Field(
        default=0, description="In refunds Integrated Payments has not confirmed yet."
    )
    refundable_minor: int
    items: list[PatientRefundOut] = Field(default_factory=list)


class RefundSummary(PatientRefundSummary):
    """The staff's view: each refund with its reason code and the staff member who made it."""

    items: list[RefundOut] = Field(default_factory=list)  # type: ignore[assignment]


class AuditTrailEntry(BaseModel):
    at: datetime
    action: str
    actor_id: str
    actor_role: str
    actor_name: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class TimelineEntry(BaseModel):
    """One step of the order as the patient sees it: what happened and when."""

    at: datetime
    event: str = Field(description="Stable code, e.g. order_placed, payment_received")
    description: str


class PatientOrderOut(BaseModel):
    """An order as its patient sees it: no internal audit trail, staff or PMS references."""

    view: Literal["patient"] = "patient"
    order_id: uuid.UUID
    checkout_id: uuid.UUID
    patient_id: uuid.UUID
    practice_id: uuid.UUID
    status: OrderStatus = Field(description="Spec enum; Refunded overlays once any refund applies.")
    fulfilment_status: OrderStatus = Field(description="The least advanced line's stage.")
    refund_status: RefundStatus
    currency: str
    total_minor: int
    payment: PaymentOut
    redemption_ref: str | None
    created_at: datetime
    updated_at: datetime
    lines: list[OrderLineOut]
    refunds: PatientRefundSummary
    timeline: list[TimelineEntry]


class OrderOut(PatientOrderOut):
    """An order as the practice's staff see it, with the full audit trail (spec §3.2, §8)."""

    view: Literal["staff"] = "staff"  # type: ignore[assignment]
    pms_invoice_ref: str | None
    created_by: str
    version: int = Field(description="Also sent as the ETag; send it back as If-Match to write.")
    refunds: RefundSummary
    audit_trail: list[AuditTrailEntry]


AnyOrderOut = Annotated[OrderOut | PatientOrderOut, Field(discriminator="view")]


class OrderSummaryItem(BaseModel):
    product_id: uuid.UUID
    name: str
    quantity: int


class OrderSummary(BaseModel):
    order_id: uuid.UUID
    patient_id: uuid.UUID
    status: OrderStatus
    fulfilment_status: OrderStatus
    refund_status: RefundStatus
    currency: str
    total_minor: int
    fulfilment_types: list[FulfilmentType]
    line_count: int
    items: list[OrderSummaryItem] = Field(
        description="What was bought: name and quantity per line."
    )
    created_at: datetime


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class PmsInvoiceRefIn(InputModel):
    pms_invoice_ref: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
        | None
    )
