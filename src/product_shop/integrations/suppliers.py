"""The Primoro supplier network: drop-ship fulfilment (spec §6.1).

The port names what Product Shop needs; `HttpSupplierNetwork` speaks the network's HTTP contract
(served for the demo and tests by `simulators.suppliers`).

Contract:
- POST /v1/shipments (Bearer API key, Idempotency-Key) -> 201 the shipment, status `accepted`.
  A repeated key with the same body answers the first shipment (never a second one); another
  body under the same key is 422 `idempotency_key_reused`. A definite refusal is 4xx problem+json
  with a `code` (`out_of_stock`, `address_problem`, `invalid_shipment`).
- GET /v1/shipments/{shipment_id} -> the shipment as it is now.
- POST /v1/shipments/cancellations (Bearer API key, Idempotency-Key) body `{"reference": "..."}`
  (ours, as submitted) -> 200 the shipment, status `cancelled`: it is not sent. A shipment that
  is `accepted`, or in `exception` before it was dispatched (`dispatched_at` null; it keeps its
  `exception_reason`), may be cancelled; the cancellation adds one to its `sequence` and sends a
  `shipment.cancelled` callback. Cancelling a cancelled shipment answers it as it is (no new
  `sequence`, no callback), under a new key too. Refusals: 409 `already_dispatched` (dispatched, in
  transit or delivered: it cannot be stopped), 404 `shipment_not_found` (no shipment under that
  reference), 422 `idempotency_key_reused` (the key came with another body), 422
  `invalid_cancellation` (the body is not `{"reference": ...}`); a refusal is not kept under the
  key. Should one reference name several shipments (a duplicated submission), the latest is
  the one cancelled. A cancelled shipment never moves on again.
- Signed callbacks (Standard Webhooks) to Product Shop's `POST /v1/webhooks/suppliers`, body
  `{"id", "type", "created_at", "data": <shipment update>}` where `type` is
  `shipment.accepted`, `shipment.dispatched`, `shipment.in_transit`, `shipment.delivered`,
  `shipment.exception` or `shipment.cancelled`, and `data` carries `shipment_id`, `reference`
  (ours: `<line item id>:<attempt>`), `status`, `sequence` (grows by one with each change of the
  shipment), `occurred_at`, and as they become known `carrier`, `tracking_number`,
  `tracking_url`, `dispatched_at`, `delivered_at`, `exception_reason` (`out_of_stock`,
  `address_problem`, `lost`, `damaged`, `other`). Callbacks may arrive twice and out of order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class ShipmentStatus(StrEnum):
    ACCEPTED = "accepted"
    DISPATCHED = "dispatched"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    CANCELLED = "cancelled"


class ExceptionReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    ADDRESS_PROBLEM = "address_problem"
    LOST = "lost"
    DAMAGED = "damaged"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ShipmentItem:
    product_id: str
    name: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ShipmentRequest:
    """One drop-ship line to send: `reference` is ours, `<line item id>:<attempt>`."""

    reference: str
    order_id: str
    practice_id: str
    items: tuple[ShipmentItem, ...]
    delivery_address: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Shipment:
    shipment_id: str
    reference: str
    status: ShipmentStatus
    sequence: int
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None
    exception_reason: ExceptionReason | None = None


class SupplierUnavailable(Exception):
    """The network did not answer (timeout, connection, 5xx): try again later."""


class SupplierRejected(Exception):
    """The network refused the shipment for good (4xx) with a stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SupplierNetwork(Protocol):
    def submit_shipment(self, request: ShipmentRequest, *, idempotency_key: str) -> Shipment: ...

    def get_shipment(self, shipment_id: str) -> Shipment: ...

    def cancel_shipment(self, reference: str, *, idempotency_key: str) -> Shipment:
        """Cancel the shipment submitted under our `reference` (`<line item id>:<attempt>`):
        the shipment, status `cancelled` (the same answer for one already cancelled).
        `SupplierRejected` `already_dispatched` when it was dispatched, is in transit or was
        delivered (it cannot be stopped), `shipment_not_found` when the network has none under
        that reference; `SupplierUnavailable` when the network does not answer."""
        ...
