"""What a running app holds: settings, database, token verifier and the wired services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from product_shop.access.actor import Role
from product_shop.access.tokens import TokenVerifier
from product_shop.audit.log import AuditLog
from product_shop.catalogue.service import CatalogueService
from product_shop.checkout.cancellation import CheckoutCancellation
from product_shop.checkout.complete import CheckoutCompletion
from product_shop.checkout.expiry import CheckoutExpiry
from product_shop.checkout.redemption import PointsRedemptions
from product_shop.checkout.service import CheckoutService
from product_shop.config import Settings
from product_shop.core.clock import Clock, SystemClock
from product_shop.core.crypto import install_keyring
from product_shop.db.engine import Database
from product_shop.db.roles import refuse_a_role_that_bypasses_row_security
from product_shop.events import types as ev
from product_shop.events.delivery import RetryPolicy, by_event_type
from product_shop.events.outbox import Outbox
from product_shop.events.relay import OutboxRelay
from product_shop.events.routing import AUDIT_FEED, Destination, Routing
from product_shop.fulfilment.lines import LineFulfilment
from product_shop.fulfilment.service import FulfilmentService
from product_shop.fulfilment.shipments import (
    CancellationFollowUp,
    ShipmentFollowUp,
    SupplierUpdates,
    cancellation_sink,
    shipment_sink,
)
from product_shop.fulfilment.start import FulfilmentStarter
from product_shop.idempotency.store import IdempotencyStore
from product_shop.integrations.payments import IntegratedPayments
from product_shop.integrations.payments_http import HttpIntegratedPayments
from product_shop.integrations.rewards import RewardsManager
from product_shop.integrations.rewards_http import HttpRewardsManager
from product_shop.integrations.sinks import FeedSinks, payments_sinks, reversal_sink
from product_shop.integrations.suppliers import SupplierNetwork
from product_shop.integrations.suppliers_http import HttpSupplierNetwork
from product_shop.jobs.audit_checkpoint import AuditCheckpointJob
from product_shop.jobs.audit_feed import AuditFeed
from product_shop.jobs.capture_reconciliation import CaptureReconciliation
from product_shop.jobs.checkout_expiry import CheckoutExpiryJob
from product_shop.jobs.purge import Purges
from product_shop.jobs.refund_settlement import RefundSettlement
from product_shop.jobs.retention import RetentionJob
from product_shop.jobs.runner import JobRunner
from product_shop.orders.queries import ActiveOrderReferences
from product_shop.orders.service import OrderService
from product_shop.recommendations.ai.http import HttpSuggestionEngine
from product_shop.recommendations.ai.local import LocalSuggestionEngine
from product_shop.recommendations.ai.port import SuggestionEngine
from product_shop.recommendations.ai.summary import PlainSummaryWriter
from product_shop.recommendations.service import RecommendationService
from product_shop.recommendations.suggestion_intake import SuggestionIntake
from product_shop.recommendations.suggestions import SuggestionService
from product_shop.recommendations.summaries import SummaryService
from product_shop.refunds.cancellation import CancellationRequests
from product_shop.refunds.reasons import RefundReasons
from product_shop.refunds.service import RefundService


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
    suppliers: SupplierNetwork
    fulfilment: FulfilmentService
    supplier_updates: SupplierUpdates
    rewards: RewardsManager
    redemptions: PointsRedemptions
    refunds: RefundService
    refund_settlement: RefundSettlement
    checkout_expiry: CheckoutExpiryJob
    cancellations: CancellationRequests
    recommendations: RecommendationService
    suggestion_intake: SuggestionIntake
    suggestions: SuggestionService
    summaries: SummaryService
    feeds: FeedSinks
    audit_feed: AuditFeed
    audit_checkpoint: AuditCheckpointJob
    jobs: JobRunner
    capture_reconciliation: CaptureReconciliation
    purges: Purges
    retention: RetentionJob

    def close(self) -> None:
        """Release threads and network clients (the database is disposed by whoever created
        it)."""
        self.relay.close()
        if self.relay.database is not self.database:  # its own pool (relay_synchronous_commit)
            self.relay.database.dispose()
        engine = self.suggestion_intake.engine
        for client in (self.payments, self.suppliers, self.rewards, self.feeds, engine):
            close = getattr(client, "close", None)
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
        suppliers: SupplierNetwork | None = None,
        rewards: RewardsManager | None = None,
        suggestion_engine: SuggestionEngine | None = None,
    ) -> AppContext:
        clock = clock or SystemClock()
        # The process-wide keyring of the encrypted columns (core/crypto.py, db/encrypted.py).
        install_keyring(settings.keyring())
        database = database or Database(
            settings.database_url, pool_size=settings.db_pool_size, role=settings.database_role
        )
        if settings.environment == "production":
            refuse_a_role_that_bypasses_row_security(database)
        audit = AuditLog(clock)
        outbox = Outbox(clock)
        payments = payments or HttpIntegratedPayments(
            settings.payments_base_url,
            api_key=settings.payments_api_key.get_secret_value(),
            timeout_seconds=settings.payments_timeout_seconds,
        )
        suppliers = suppliers or HttpSupplierNetwork(
            settings.suppliers_base_url,
            api_key=settings.suppliers_api_key.get_secret_value(),
            timeout_seconds=settings.suppliers_timeout_seconds,
        )
        rewards = rewards or HttpRewardsManager(
            settings.rewards_base_url,
            api_key=settings.rewards_api_key.get_secret_value(),
            timeout_seconds=settings.rewards_timeout_seconds,
        )
        idempotency = IdempotencyStore(
            clock, ttl=timedelta(seconds=settings.idempotency_key_ttl_seconds)
        )
        recommendations = RecommendationService(audit=audit, clock=clock)
        lines = LineFulfilment(audit=audit, outbox=outbox, clock=clock)
        feeds = FeedSinks(settings, clock)
        relay_database = (
            database
            if settings.relay_synchronous_commit
            else database.with_asynchronous_commit(pool_size=settings.db_pool_size)
        )
        relay = OutboxRelay(
            relay_database,
            {
                Destination.INTEGRATED_PAYMENTS: by_event_type(payments_sinks(payments)),
                Destination.SUPPLIER_NETWORK: by_event_type(
                    {
                        ev.SHIPMENT_REQUESTED.name: shipment_sink(suppliers),
                        ev.SHIPMENT_CANCELLATION_REQUESTED.name: cancellation_sink(suppliers),
                    }
                ),
                Destination.REWARDS_MANAGER: by_event_type(
                    {ev.REDEMPTION_REVERSAL_REQUESTED.name: reversal_sink(rewards)}
                ),
                **{d: sink for d, sink in feeds.sinks.items() if d != AUDIT_FEED},
            },
            clock,
            routing=Routing(overrides=settings.event_routes),
            policy=RetryPolicy(
                base=timedelta(seconds=settings.delivery_retry_base_seconds),
                cap=timedelta(seconds=settings.delivery_retry_cap_seconds),
                horizon=timedelta(seconds=settings.delivery_retry_horizon_seconds),
            ),
            lease=timedelta(seconds=settings.delivery_lease_seconds),
            audit=audit,
            follow_ups={
                (Destination.SUPPLIER_NETWORK, ev.SHIPMENT_REQUESTED.name): ShipmentFollowUp(lines),
                (
                    Destination.SUPPLIER_NETWORK,
                    ev.SHIPMENT_CANCELLATION_REQUESTED.name,
                ): CancellationFollowUp(lines, audit, clock),
            },
        )
        completion = CheckoutCompletion(
            payments=payments,
            audit=audit,
            outbox=outbox,
            clock=clock,
            fulfilment=FulfilmentStarter(
                audit=audit, outbox=outbox, voucher_key=settings.voucher_key()
            ),
        )
        refunds = RefundService(
            audit=audit,
            outbox=outbox,
            clock=clock,
            lines=lines,
            reasons=RefundReasons(payments, ttl_seconds=settings.refund_reasons_cache_seconds),
            roles=[Role(role) for role in settings.refund_roles],
            mfa_max_age=timedelta(seconds=settings.refund_mfa_max_age_seconds),
        )
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
                open_checkouts=CheckoutCancellation(audit=audit, outbox=outbox, clock=clock),
            ),
            payments=payments,
            idempotency=idempotency,
            checkout=CheckoutService(
                payments=payments,
                audit=audit,
                clock=clock,
                ttl=timedelta(minutes=settings.checkout_ttl_minutes),
            ),
            completion=completion,
            rewards=rewards,
            redemptions=PointsRedemptions(
                rewards=rewards, completion=completion, audit=audit, outbox=outbox, clock=clock
            ),
            orders=OrderService(audit=audit, clock=clock, voucher_key=settings.voucher_key()),
            relay=relay,
            feeds=feeds,
            audit_checkpoint=AuditCheckpointJob(database, audit, clock),
            audit_feed=AuditFeed(
                database,
                feeds.sinks.get(AUDIT_FEED),
                clock,
                policy=RetryPolicy(
                    base=timedelta(seconds=settings.delivery_retry_base_seconds),
                    cap=timedelta(seconds=settings.delivery_retry_cap_seconds),
                ),
                lease=timedelta(seconds=settings.delivery_lease_seconds),
                gap_timeout=timedelta(seconds=settings.audit_feed_gap_seconds),
            ),
            suppliers=suppliers,
            fulfilment=FulfilmentService(lines=lines, outbox=outbox, audit=audit, clock=clock),
            supplier_updates=SupplierUpdates(lines=lines, audit=audit, clock=clock),
            refunds=refunds,
            checkout_expiry=CheckoutExpiryJob(
                database=database,
                payments=payments,
                expiry=CheckoutExpiry(audit=audit, outbox=outbox, clock=clock),
                clock=clock,
            ),
            refund_settlement=RefundSettlement(
                database=database,
                payments=payments,
                refunds=refunds,
                clock=clock,
                settle_after=timedelta(seconds=settings.refund_reconcile_after_seconds),
            ),
            recommendations=recommendations,
            suggestion_intake=SuggestionIntake(
                engine=suggestion_engine or _suggestion_engine(settings),
                audit=audit,
                clock=clock,
                per_appointment=settings.suggestions_per_appointment,
                lifetime=timedelta(seconds=settings.suggestion_lifetime_seconds),
            ),
            suggestions=SuggestionService(
                recommendations=recommendations, audit=audit, clock=clock
            ),
            summaries=SummaryService(writer=PlainSummaryWriter(), audit=audit, clock=clock),
            cancellations=CancellationRequests(
                audit=audit,
                outbox=outbox,
                clock=clock,
                period=timedelta(days=settings.cancellation_period_days),
            ),
            jobs=JobRunner(database, clock),
            capture_reconciliation=CaptureReconciliation(
                database=database,
                completion=completion,
                clock=clock,
                after=timedelta(seconds=settings.capture_reconciliation_after_seconds),
            ),
            purges=Purges(
                database=database,
                clock=clock,
                inbox_retention=timedelta(seconds=settings.inbox_retention_seconds),
            ),
            retention=RetentionJob.from_settings(settings, database, clock),
        )


def _suggestion_engine(settings: Settings) -> SuggestionEngine | None:
    """The engine the setting `suggestion_engine` names (None when "off")."""
    if settings.suggestion_engine == "local":
        return LocalSuggestionEngine()
    if settings.suggestion_engine == "platform":
        return HttpSuggestionEngine(
            settings.ai_service_base_url,
            api_key=settings.ai_service_api_key.get_secret_value(),
            timeout_seconds=settings.ai_service_timeout_seconds,
        )
    return None
