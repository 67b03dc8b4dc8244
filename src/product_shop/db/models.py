"""Imports every area's tables so `Base.metadata` is complete (Alembic and drift checks)."""

from product_shop.access.sessions import PortalSession
from product_shop.audit.tables import AuditCheckpoint, AuditCheckpointHead, AuditEntry
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.checkout.tables import Checkout, CheckoutLine, PaymentCapture, PointsRedemption
from product_shop.db.base import Base
from product_shop.events.inbox import InboxMessage
from product_shop.events.tables import DeliveryAttempt, EventDelivery, FeedCursor, OutboxEvent
from product_shop.idempotency.tables import IdempotencyKey
from product_shop.jobs.tables import JobRun
from product_shop.orders.tables import Order, OrderLine, Voucher
from product_shop.recommendations.tables import Recommendation
from product_shop.refunds.tables import CancellationRequest, PaymentException, Refund, RefundLine

metadata = Base.metadata

__all__ = [
    "AuditCheckpoint",
    "AuditCheckpointHead",
    "AuditEntry",
    "CancellationRequest",
    "Checkout",
    "CheckoutLine",
    "DeliveryAttempt",
    "EventDelivery",
    "FeedCursor",
    "IdempotencyKey",
    "InboxMessage",
    "JobRun",
    "Order",
    "OrderLine",
    "OutboxEvent",
    "PaymentCapture",
    "PaymentException",
    "PointsRedemption",
    "PortalSession",
    "PracticeProductSetting",
    "Product",
    "Recommendation",
    "Refund",
    "RefundLine",
    "Voucher",
    "metadata",
]
