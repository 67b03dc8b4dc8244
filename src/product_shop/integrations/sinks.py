"""The relay's sinks: the calls to other modules' APIs through their ports (Integrated
Payments, Rewards Manager), and the event feeds configured in settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from product_shop.config import Settings
from product_shop.core.clock import Clock
from product_shop.events import types as ev
from product_shop.events.delivery import PendingEvent, PermanentDeliveryError, Sink
from product_shop.events.routing import FEED_DESTINATIONS, PORT_DESTINATIONS
from product_shop.insights.metrics import REDEMPTION_REVERSALS
from product_shop.integrations.event_webhooks import WebhookSink

if TYPE_CHECKING:
    from product_shop.integrations.event_nats import JetStreamSink
from product_shop.integrations.payments import IntegratedPayments, PaymentRejected
from product_shop.integrations.rewards import RewardsManager, RewardsRejected


def payments_sinks(payments: IntegratedPayments) -> dict[str, Sink]:
    """Integrated Payments: the order id as the commerce order reference on the payment, and
    the cancellation of a stopped checkout's payment intent."""

    def order_reference(event: PendingEvent) -> None:
        try:
            payments.set_order_reference(event.data["intent_id"], event.data["order_id"])
        except PaymentRejected as exc:
            raise PermanentDeliveryError(f"{exc.code}: {exc.message}") from exc

    def cancel_intent(event: PendingEvent) -> None:
        intent_id = event.data.get("intent_id")
        if not intent_id:
            return
        try:
            payments.cancel_intent(intent_id)
        except PaymentRejected as exc:
            if exc.code == "intent_captured":
                # Paid before the cancellation arrived: the capture reaches completion, which
                # refuses the order and records a payment exception for a staff refund.
                return
            raise PermanentDeliveryError(f"{exc.code}: {exc.message}") from exc

    return {
        ev.PAYMENT_ORDER_REFERENCE.name: order_reference,
        ev.CHECKOUT_CANCELLED.name: cancel_intent,
    }


def reversal_sink(rewards: RewardsManager) -> Sink:
    """Rewards Manager: reinstate a redemption's points (`rewards.redemption_reversal_requested`).
    Keyed by the event id, so a redelivery (a crash after sending, a retry) reverses once.
    Counted as Rewards Manager answers (`made`, or `failed` when it refuses for good; no answer
    is tried again and not counted): no transaction of ours decides it."""
    made = REDEMPTION_REVERSALS.labels(outcome="made")
    failed = REDEMPTION_REVERSALS.labels(outcome="failed")

    def reverse(event: PendingEvent) -> None:
        data = event.data
        try:
            rewards.request_reversal(
                data["redemption_ref"],
                points=int(data["points"]),
                reason=data["reason"],
                idempotency_key=f"reversal:{event.event_id}",
            )
        except RewardsRejected as exc:
            failed.inc()
            raise PermanentDeliveryError(f"{exc.code}: {exc.message}") from exc
        made.inc()

    return reverse


class FeedSinks:
    """The sinks of the destinations that receive an event feed (settings `event_sinks`):
    signed webhooks, or the JetStream stream; a destination set `off` has none (its deliveries
    wait). Holds the network clients, closed by `close`."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.sinks: dict[str, Sink] = {}
        # Every destination's sink kind: `api` for the modules reached through their ports.
        self.kinds: dict[str, str] = {d.value: "api" for d in PORT_DESTINATIONS}
        self._webhooks: list[WebhookSink] = []
        self._jetstream: JetStreamSink | None = None
        for destination in FEED_DESTINATIONS:
            configured = settings.event_sink(destination.value)
            self.kinds[destination.value] = configured.kind
            if configured.kind == "webhook":
                assert configured.url is not None
                assert configured.secret is not None
                webhook = WebhookSink(
                    configured.url,
                    configured.secret.get_secret_value(),
                    connect_timeout_seconds=configured.connect_timeout_seconds,
                    read_timeout_seconds=configured.read_timeout_seconds,
                    clock=clock,
                )
                self._webhooks.append(webhook)
                self.sinks[destination.value] = webhook
            elif configured.kind == "nats":
                if self._jetstream is None:
                    # Imported here: deployments without a broker never load the NATS client.
                    from product_shop.integrations.event_nats import JetStreamSink

                    self._jetstream = JetStreamSink(
                        settings.nats_url,
                        stream=settings.nats_stream,
                        subject_prefix=settings.nats_subject_prefix,
                    )
                self.sinks[destination.value] = self._jetstream

    def close(self) -> None:
        for webhook in self._webhooks:
            webhook.close()
        if self._jetstream is not None:
            self._jetstream.close()
