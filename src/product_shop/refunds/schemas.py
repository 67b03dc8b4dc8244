"""Refund, payment exception and cancellation request API models (money in minor units)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from product_shop.core.text import InputModel

ReasonCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
RefundStatusOut = Literal["pending", "succeeded", "failed"]
RefundKind = Literal["amount", "lines", "balance", "points"]


class RefundLineIn(InputModel):
    line_item_id: uuid.UUID
    quantity: int = Field(ge=1, le=1000, strict=True)


class RefundIn(InputModel):
    """One of: `amount_minor` (partial by amount), `lines` (by line and quantity), or neither
    (the whole remaining balance). `reason_code` is one of `GET /v1/refund-reason-codes`."""

    MULTILINE = frozenset({"note"})

    reason_code: ReasonCode
    amount_minor: int | None = Field(default=None, ge=1, le=10**11, strict=True)
    lines: list[RefundLineIn] | None = Field(default=None, min_length=1, max_length=100)
    note: Note | None = None

    @model_validator(mode="after")
    def _one_way(self) -> RefundIn:
        if self.amount_minor is not None and self.lines is not None:
            raise ValueError("send amount_minor or lines, not both")
        if self.lines is not None:
            ids = [line.line_item_id for line in self.lines]
            if len(ids) != len(set(ids)):
                raise ValueError("name each line once")
        return self

    @property
    def kind(self) -> RefundKind:
        if self.amount_minor is not None:
            return "amount"
        return "lines" if self.lines is not None else "balance"


class ExceptionRefundIn(InputModel):
    """Refund a payment exception: the whole capture left (default) or `amount_minor` of it."""

    MULTILINE = frozenset({"note"})

    reason_code: ReasonCode
    amount_minor: int | None = Field(default=None, ge=1, le=10**11, strict=True)
    note: Note | None = None


class RefundLineOut(BaseModel):
    line_item_id: uuid.UUID
    quantity: int
    amount_minor: int


class PatientRefundOut(BaseModel):
    """A refund as the patient sees it in their order: what, when, to which method."""

    refund_id: uuid.UUID
    status: RefundStatusOut
    amount_minor: int
    points: int | None = Field(
        default=None, description="Points Rewards Manager was asked to reinstate (points refund)"
    )
    currency: str
    payment_method: str
    initiated_at: datetime
    completed_at: datetime | None


class RefundOut(PatientRefundOut):
    """A refund (spec §15.1): the original transaction and payment method, the reason code and
    the named staff member who made it."""

    refund_id: uuid.UUID
    order_id: uuid.UUID | None = Field(description="The order refunded (null: a payment exception)")
    payment_exception_id: uuid.UUID | None
    practice_id: uuid.UUID
    patient_id: uuid.UUID
    status: RefundStatusOut = Field(
        description="`pending` while Integrated Payments' answer is awaited (it is settled by "
        "reading the refund's status, never by refunding again)"
    )
    kind: RefundKind
    amount_minor: int
    currency: str
    reason_code: str
    note: str | None
    payment_ref: str = Field(description="The original DNA Payments transaction reference")
    payment_method: str = Field(description="The original payment method, refunded to")
    provider_refund_ref: str | None = Field(description="Integrated Payments' refund reference")
    initiated_by: str = Field(description="The staff member's Access Manager id")
    initiated_by_name: str | None
    initiated_by_role: str
    initiated_at: datetime
    completed_at: datetime | None
    failure_code: str | None
    failure_message: str | None
    lines: list[RefundLineOut]


class RefundPage(BaseModel):
    items: list[RefundOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class RefundReasonOut(BaseModel):
    code: str
    description: str


class RefundReasonList(BaseModel):
    reasons: list[RefundReasonOut]
    source: Literal["integrated_payments"] = "integrated_payments"


class PaymentExceptionOut(BaseModel):
    """A capture that made no order, for a staff refund (spec §5.3)."""

    exception_id: uuid.UUID
    checkout_id: uuid.UUID
    patient_id: uuid.UUID
    practice_id: uuid.UUID
    reason: str = Field(
        description="What happened: duplicate_capture, amount_mismatch, product_unavailable, ..."
    )
    description: str
    intent_id: str
    payment_ref: str
    payment_method: str | None
    amount_minor: int
    expected_amount_minor: int
    currency: str
    refunded_minor: int
    refund_pending_minor: int
    refundable_minor: int
    status: Literal["open", "refund_pending", "refunded"]
    recorded_at: datetime


class PaymentExceptionPage(BaseModel):
    items: list[PaymentExceptionOut]
    next_cursor: str | None


class CancellationIn(InputModel):
    """The patient's request to cancel; `reason` is optional."""

    MULTILINE = frozenset({"reason"})

    reason: Note | None = None


class CancellationLineOut(BaseModel):
    line_item_id: uuid.UUID
    name: str
    quantity: int = Field(description="Units that may still be refunded")
    cancellable: bool = Field(description="Whether this path covers the line")
    explanation: str


class CancellationRequestOut(BaseModel):
    request_id: uuid.UUID
    order_id: uuid.UUID
    patient_id: uuid.UUID
    practice_id: uuid.UUID
    status: Literal["open", "refunded", "closed"]
    reason: str | None
    requested_at: datetime
    resolved_at: datetime | None
    refund_id: uuid.UUID | None
    lines: list[CancellationLineOut]
    message: str = Field(description="What happens next, for the patient")


class CancellationRequestPage(BaseModel):
    items: list[CancellationRequestOut]
    next_cursor: str | None
