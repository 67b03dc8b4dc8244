"""What a running app holds: settings, database, token verifier and the wired services."""

from __future__ import annotations

from dataclasses import dataclass

from product_shop.access.tokens import TokenVerifier
from product_shop.audit.log import AuditLog
from product_shop.catalogue.service import CatalogueService
from product_shop.config import Settings
from product_shop.core.clock import Clock, SystemClock
from product_shop.db.engine import Database
from product_shop.events.outbox import Outbox


@dataclass
class AppContext:
    settings: Settings
    database: Database
    verifier: TokenVerifier
    clock: Clock
    audit: AuditLog
    outbox: Outbox
    catalogue: CatalogueService

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        database: Database | None = None,
        verifier: TokenVerifier | None = None,
        clock: Clock | None = None,
    ) -> AppContext:
        clock = clock or SystemClock()
        audit = AuditLog(clock)
        outbox = Outbox(clock)
        return cls(
            settings=settings,
            database=database or Database(settings.database_url),
            verifier=verifier or TokenVerifier.from_settings(settings),
            clock=clock,
            audit=audit,
            outbox=outbox,
            catalogue=CatalogueService(audit=audit, outbox=outbox, clock=clock),
        )
