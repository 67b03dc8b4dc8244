"""Every outbound event type, with its JSON Schema under `events/schemas/` (versioned by name)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

EVENT_SOURCE = "/primoro/product-shop"
PREFIX = "com.primoro.productshop."


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    aggregate_type: str
    description: str

    @property
    def schema_file(self) -> str:
        return self.name.removeprefix(PREFIX) + ".json"

    def schema(self) -> dict[str, Any]:
        return load_schema(self.schema_file)


@cache
def load_schema(filename: str) -> dict[str, Any]:
    text = resources.files("product_shop.events").joinpath("schemas", filename).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _t(suffix: str, aggregate_type: str, description: str) -> EventType:
    return EventType(PREFIX + suffix, aggregate_type, description)


PRODUCT_CREATED = _t("product.created.v1", "product", "A catalogue product was created.")
PRODUCT_UPDATED = _t(
    "product.updated.v1", "product", "Catalogue fields of a product changed (before and after)."
)
PRODUCT_AVAILABILITY_CHANGED = _t(
    "product.availability_changed.v1",
    "product",
    "A product's availability status changed; consumers (Hygiene Subscriptions) re-check plans.",
)
PRODUCT_DEPRECATED = _t(
    "product.deprecated.v1",
    "product",
    "A product was deprecated; names the active orders and subscription references affected.",
)
PRACTICE_PRODUCT_SETTINGS_CHANGED = _t(
    "practice_product.settings_changed.v1",
    "practice_catalogue",
    "A practice changed its retail price, note, visibility or in-clinic stock flag for a product.",
)

ORDER_CREATED = _t(
    "order.created.v1",
    "order",
    "An order exists (payment captured). Communication Hub sends the order confirmation.",
)
PAYMENT_RECEIPT = _t(
    "payment.receipt.v1", "order", "Communication Hub sends the patient a payment receipt."
)
REVENUE_SALE = _t(
    "revenue.sale.v1",
    "order",
    "Financial Insights: revenue for a confirmed order (event_type sale).",
)
FINANCE_ORDER_RECORDED = _t(
    "finance.order_recorded.v1",
    "order",
    "Finance: order-level data for reconciliation and VAT reporting.",
)
PAYMENT_ORDER_REFERENCE = _t(
    "payment.order_reference.v1",
    "order",
    "Integrated Payments: set the order id as the commerce order reference on the payment.",
)
CHECKOUT_PAYMENT_FAILED = _t(
    "checkout.payment_failed.v1",
    "checkout",
    "A payment failed or was declined; Communication Hub surfaces the payment exception.",
)
CHECKOUT_CANCELLED = _t(
    "checkout.cancelled.v1",
    "checkout",
    "An unpaid checkout was stopped (a product can no longer be bought); Integrated Payments "
    "cancels its payment intent, Communication Hub tells the patient.",
)

SHIPMENT_REQUESTED = _t(
    "fulfilment.shipment_requested.v1",
    "order_line",
    "The supplier network: ship a drop-ship line to the patient's delivery address.",
)
FULFILMENT_STAGE_CHANGED = _t(
    "fulfilment.stage_changed.v1",
    "order_line",
    "Communication Hub: a line reached a fulfilment stage (shipment with tracking, in transit, "
    "pickup ready, delivered, collected, delivery exception).",
)
STAFF_TASK = _t(
    "fulfilment.staff_task.v1",
    "order_line",
    "Communication Hub: a task for the practice's staff (prepare an in-clinic line for "
    "collection; resolve a fulfilment exception; a collection withdrawn after a refund; a "
    "shipment the supplier could not cancel).",
)

PAYMENT_ORPHANED_CAPTURE = _t(
    "payment.orphaned_capture.v1",
    "checkout",
    "Money was captured but no order came of it (second capture, wrong amount, a product no longer "
    "purchasable): staff to refund.",
)

REFUND_ISSUED = _t(
    "refund.issued.v1",
    "order",
    "Communication Hub: a refund was made to the patient's original payment method.",
)
REVENUE_REFUND = _t(
    "revenue.refund.v1",
    "order",
    "Financial Insights: a processed refund (event_type refund).",
)
FINANCE_REFUND_RECORDED = _t(
    "finance.refund_recorded.v1",
    "order",
    "Finance: order-level refund data (original transaction, method, reason, staff member).",
)
REDEMPTION_REVERSAL_REQUESTED = _t(
    "rewards.redemption_reversal_requested.v1",
    "order",
    "Rewards Manager: reinstate the points of a refunded order (never done by Product Shop).",
)
PAYMENT_EXCEPTION_REFUNDED = _t(
    "payment.exception_refunded.v1",
    "checkout",
    "A capture that made no order was refunded by named staff (Communication Hub, Finance).",
)
SHIPMENT_CANCELLATION_REQUESTED = _t(
    "fulfilment.shipment_cancellation_requested.v1",
    "order_line",
    "The supplier network: cancel a refunded drop-ship line's shipment before dispatch.",
)
ORDER_CANCELLATION_REQUESTED = _t(
    "order.cancellation_requested.v1",
    "order",
    "Communication Hub: a patient asked to cancel an order; a task for the practice's staff.",
)

AUDIT_ENTRIES = _t(
    "audit.entries.v1",
    "audit_log",
    "Audit & Compliance: a run of audit log entries in log order, each with its stream, "
    "sequence and hashes (sent by the audit feed from the log itself, not through the outbox).",
)

ALL_EVENT_TYPES: tuple[EventType, ...] = (
    PRODUCT_CREATED,
    PRODUCT_UPDATED,
    PRODUCT_AVAILABILITY_CHANGED,
    PRODUCT_DEPRECATED,
    PRACTICE_PRODUCT_SETTINGS_CHANGED,
    ORDER_CREATED,
    PAYMENT_RECEIPT,
    REVENUE_SALE,
    FINANCE_ORDER_RECORDED,
    PAYMENT_ORDER_REFERENCE,
    CHECKOUT_PAYMENT_FAILED,
    CHECKOUT_CANCELLED,
    PAYMENT_ORPHANED_CAPTURE,
    SHIPMENT_REQUESTED,
    FULFILMENT_STAGE_CHANGED,
    STAFF_TASK,
    REFUND_ISSUED,
    REVENUE_REFUND,
    FINANCE_REFUND_RECORDED,
    REDEMPTION_REVERSAL_REQUESTED,
    PAYMENT_EXCEPTION_REFUNDED,
    SHIPMENT_CANCELLATION_REQUESTED,
    ORDER_CANCELLATION_REQUESTED,
    AUDIT_ENTRIES,
)

BY_NAME = {t.name: t for t in ALL_EVENT_TYPES}
