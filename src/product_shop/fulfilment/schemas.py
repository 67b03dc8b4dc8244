"""Fulfilment API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from product_shop.catalogue.model import FulfilmentType
from product_shop.core.text import InputModel
from product_shop.orders.model import LineState

Carrier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
TrackingNumber = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)
]
TrackingUrl = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=500, pattern=r"^https?://\S+$")
]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
ExceptionReasonIn = Literal["out_of_stock", "address_problem", "lost", "damaged", "other"]


class FulfilmentUpdateIn(InputModel):
    """Move a line, record or correct tracking, or resolve an exception. Send only the fields
    the status needs: `dispatched` takes `carrier` and `tracking_number` (and `tracking_url`);
    `exception` takes `reason`, or `resolution: refund` to leave an open exception for a refund
    (it leaves the queue). For a drop-ship line in exception, `sent_to_supplier` resends it to
    the supplier network (the line moves when the supplier accepts it)."""

    MULTILINE = frozenset({"note"})

    status: LineState
    carrier: Carrier | None = None
    tracking_number: TrackingNumber | None = None
    tracking_url: TrackingUrl | None = None
    reason: ExceptionReasonIn | None = None
    resolution: Literal["refund"] | None = None
    note: Note | None = None

    @model_validator(mode="after")
    def _fields_fit_the_status(self) -> FulfilmentUpdateIn:
        tracking = (self.carrier, self.tracking_number, self.tracking_url)
        if self.status is not LineState.DISPATCHED and any(v is not None for v in tracking):
            raise ValueError("carrier and tracking go with status 'dispatched' only")
        if self.status is LineState.DISPATCHED and None in tracking[:2]:
            raise ValueError("status 'dispatched' needs carrier and tracking_number")
        if self.status is not LineState.EXCEPTION and (self.reason or self.resolution):
            raise ValueError("reason and resolution go with status 'exception' only")
        return self


class QueueItem(BaseModel):
    order_id: uuid.UUID
    line_item_id: uuid.UUID
    patient_id: uuid.UUID
    product_id: uuid.UUID
    product_name: str
    quantity: int
    fulfilment_type: FulfilmentType
    fulfilment_status: LineState
    exception_reason: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    since: datetime = Field(description="When the line entered its current state.")


class QueuePage(BaseModel):
    items: list[QueueItem]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class VoucherRedemptionIn(InputModel):
    """A voucher code as the patient shows it (any case, dashes and spaces optional)."""

    code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=40)]


class VoucherRedemptionOut(BaseModel):
    voucher_id: uuid.UUID
    order_id: uuid.UUID
    line_item_id: uuid.UUID
    product_name: str
    last_four: str
    redeemed_at: datetime
