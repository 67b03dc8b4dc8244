"""What an order's birth tells the other modules: the outbound events and their payloads.

Each payload matches its JSON Schema under `events/schemas/` (the tests validate every event
against it): order confirmation and payment receipt for Communication Hub, the `sale` revenue
event for Financial Insights (spec §11.2 minimum: order_id, amount, currency, event_type,
timestamp), order-level data for Finance, and the order reference for Integrated Payments.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from product_shop.events import types as ev
from product_shop.events.types import EventType


class CaptureRow(NamedTuple):
    """A capture confirmed through Integrated Payments' sync API (table payment_captures)."""

    transaction_ref: str
    intent_id: str
    checkout_id: uuid.UUID
    amount_minor: int
    currency: str
    method: str
    card_scheme: str | None
    card_last4: str | None
    confirmed_at: datetime


class OrderRow(NamedTuple):
    """A new order (table orders)."""

    order_id: uuid.UUID
    checkout_id: uuid.UUID
    patient_id: uuid.UUID
    practice_id: uuid.UUID
    status: str
    fulfilment_status: str
    refund_status: str
    currency: str
    total_minor: int
    captured_minor: int
    refunded_minor: int
    payment_ref: str | None
    payment_method: str | None
    redemption_ref: str | None
    pms_invoice_ref: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int
    redeemed_minor: int = 0  # the points' money value (spec §5.4)
    settlement_ref: str | None = None  # Rewards Manager's, when points paid it all


class OrderLineRow(NamedTuple):
    """A new order line (table order_lines)."""

    line_item_id: uuid.UUID
    order_id: uuid.UUID
    line_no: int
    product_id: uuid.UUID
    product_name: str
    quantity: int
    unit_price_minor: int
    fulfilment_type: str
    fulfilment_status: str
    fulfilment_ref: str | None
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    updated_at: datetime
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None
    collected_at: datetime | None = None
    exception_reason: str | None = None
    exception_since: datetime | None = None
    exception_resolution: str | None = None
    supplier_sequence: int = 0
    shipment_attempt: int = 0


class Event(NamedTuple):
    event_type: EventType
    aggregate_id: uuid.UUID
    data: dict[str, Any]


def order_created_events(
    order: OrderRow, lines: Sequence[OrderLineRow], capture: CaptureRow | None
) -> list[Event]:
    """The events of a new order, in the order they are recorded: five for a captured payment;
    for an order paid wholly with points (no capture), no payment receipt and no order reference
    for Integrated Payments (it took no payment)."""
    now = order.created_at
    line_docs = [
        {
            "line_item_id": str(line.line_item_id),
            "product_id": str(line.product_id),
            "name": line.product_name,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price_minor,
            "fulfilment_type": line.fulfilment_type,
        }
        for line in lines
    ]
    ids = {
        "order_id": order.order_id,
        "checkout_id": order.checkout_id,
        "patient_id": order.patient_id,
        "practice_id": order.practice_id,
    }
    events = [
        Event(
            ev.ORDER_CREATED,
            order.order_id,
            {
                **ids,
                "status": order.status,
                "total_minor": order.total_minor,
                "currency": order.currency,
                "lines": line_docs,
                "created_by": order.created_by,
                "created_at": now,
                "notification": "order_confirmation",
            },
        ),
        Event(
            ev.PAYMENT_RECEIPT,
            order.order_id,
            {}
            if capture is None
            else {
                "order_id": order.order_id,
                "patient_id": order.patient_id,
                "practice_id": order.practice_id,
                "amount_minor": capture.amount_minor,
                "currency": capture.currency,
                "payment_ref": capture.transaction_ref,
                "payment_method": capture.method,
                "card_scheme": capture.card_scheme,
                "card_last4": capture.card_last4,
                "redemption_ref": order.redemption_ref,
                "paid_at": now,
                "notification": "payment_receipt",
            },
        ),
        Event(
            ev.REVENUE_SALE,
            order.order_id,
            {
                "order_id": order.order_id,
                "practice_id": order.practice_id,
                "amount": order.total_minor,
                "currency": order.currency,
                "event_type": "sale",
                "timestamp": now,
            },
        ),
        Event(
            ev.FINANCE_ORDER_RECORDED,
            order.order_id,
            {
                "order_id": order.order_id,
                "practice_id": order.practice_id,
                "patient_id": order.patient_id,
                "currency": order.currency,
                "total_minor": order.total_minor,
                "captured_minor": order.captured_minor,
                "payment_ref": order.payment_ref or order.settlement_ref,
                "redemption_ref": order.redemption_ref,
                "pms_invoice_ref": None,
                "lines": line_docs,
                "created_at": now,
            },
        ),
        Event(
            ev.PAYMENT_ORDER_REFERENCE,
            order.order_id,
            {}
            if capture is None
            else {
                "order_id": order.order_id,
                "intent_id": capture.intent_id,
                "payment_ref": capture.transaction_ref,
            },
        ),
    ]
    if capture is None:
        return [
            e
            for e in events
            if e.event_type not in (ev.PAYMENT_RECEIPT, ev.PAYMENT_ORDER_REFERENCE)
        ]
    return events
