"""What a running app holds: settings, database, token verifier and the wired services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from product_shop.access.tokens import TokenVerifier
from product_shop.audit.log import AuditLog
from product_shop.catalogue.service import CatalogueService
from product_shop.checkout.cancellation import CheckoutCancellation
from product_shop.checkout.complete import CheckoutCompletion
from product_shop.checkout.service import CheckoutService
from product_shop.config import Settings
from product_shop.core.clock import Clock, SystemClock
from product_shop.db.engine import Database
from product_shop.events.outbox import Outbox
from product_shop.events.relay import OutboxRelay
from product_shop.idempotency.store import IdempotencyStore
from product_shop.integrations.payments import IntegratedPayments
from product_shop.integrations.payments_http import HttpIntegratedPayments
from product_shop.integrations.sinks import payments_sinks
from product_shop.orders.queries import ActiveOrderReferences
from product_shop.orders.service import OrderService


@dataclass
class AppContext:
    settings: Settings
    database: Database
    verifier: TokenVerifier
    clock: Clock
    audit: AuditLog
    outbox: Outbox
    catalogue: CatalogueService
    payments: IntegratedPayments
    idempotency: IdempotencyStore
    checkout: CheckoutService
    completion: CheckoutCompletion
    orders: OrderService
    relay: OutboxRelay

    def close(self) -> None:
        """Release threads and network clients (the database is disposed by whoever created
        it)."""
        self.relay.close()
        close = getattr(self.payments, "close", None)
        if callable(close):
            close()

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        database: Database | None = None,
        verifier: TokenVerifier | None = None,
        clock: Clock | None = None,
        payments: IntegratedPayments | None = None,
    ) -> AppContext:
        clock = clock or SystemClock()
        database = database or Database(settings.database_url, pool_size=settings.db_pool_size)
        audit = AuditLog(clock)
        outbox = Outbox(clock)
        payments = payments or HttpIntegratedPayments(
            settings.payments_base_url,
            api_key=settings.payments_api_key.get_secret_value(),
            timeout_seconds=settings.payments_timeout_seconds,
        )
        idempotency = IdempotencyStore(clock)
        return cls(
            settings=settings,
            database=database,
            verifier=verifier or TokenVerifier.from_settings(settings),
            clock=clock,
            audit=audit,
            outbox=outbox,
            catalogue=CatalogueService(
                audit=audit,
                outbox=outbox,
                clock=clock,
                references=ActiveOrderReferences(),
                open_checkouts=CheckoutCancellation(audit=audit, outbox=outbox),
            ),
            payments=payments,
            idempotency=idempotency,
            checkout=CheckoutService(
                payments=payments,
                audit=audit,
                clock=clock,
                ttl=timedelta(minutes=settings.checkout_ttl_minutes),
            ),
            completion=CheckoutCompletion(
                payments=payments, audit=audit, outbox=outbox, clock=clock
            ),
            orders=OrderService(audit=audit, clock=clock),
            relay=OutboxRelay(database, payments_sinks(payments), clock),
        )
