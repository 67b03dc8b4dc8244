"""Imports every area's tables so `Base.metadata` is complete (Alembic and drift checks)."""

from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.db.base import Base
from product_shop.events.tables import OutboxEvent

metadata = Base.metadata

__all__ = ["AuditEntry", "OutboxEvent", "PracticeProductSetting", "Product", "metadata"]
