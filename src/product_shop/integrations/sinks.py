"""Outbox sinks that speak to other modules through their ports."""

from __future__ import annotations

from product_shop.events import types as ev
from product_shop.events.relay import PendingEvent, PermanentDeliveryError, Sink
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
    Keyed by the event id, so a redelivery (a crash after sending, a retry) reverses once."""

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
            raise PermanentDeliveryError(f"{exc.code}: {exc.message}") from exc

    return reverse
