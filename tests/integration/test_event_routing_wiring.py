"""The relay delivers exactly the event types routed to the modules that have sinks today
(Integrated Payments, the supplier network, Rewards Manager); the rest wait in the outbox."""

from __future__ import annotations

from product_shop.context import AppContext
from product_shop.events.routing import ROUTES, Destination

WITH_SINKS = {
    Destination.INTEGRATED_PAYMENTS,
    Destination.SUPPLIER_NETWORK,
    Destination.REWARDS_MANAGER,
}


def test_the_relay_delivers_what_is_routed_to_the_modules_with_sinks(context: AppContext) -> None:
    routed = {route.event_type.name for route in ROUTES if route.destination in WITH_SINKS}
    assert set(context.relay._sinks) == routed
