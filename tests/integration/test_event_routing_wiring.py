"""The app's relay has a sink for every destination reached through another module's API, and
one for each event feed that settings configure; a feed set `off` has none (its deliveries
wait)."""

from __future__ import annotations

from product_shop.config import EventSinkSettings, Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.routing import FEED_DESTINATIONS, PORT_DESTINATIONS, Destination


def test_the_relay_has_sinks_for_the_apis_and_no_feed_that_is_off(context: AppContext) -> None:
    # The tests' settings turn every feed off.
    assert set(context.relay.destinations) == {d.value for d in PORT_DESTINATIONS}
    assert not context.audit_feed.enabled
    assert context.feeds.kinds == {
        **{d.value: "api" for d in PORT_DESTINATIONS},
        **{d.value: "off" for d in FEED_DESTINATIONS},
    }


def test_every_destination_gets_a_sink_as_configured(
    settings: Settings, database: Database
) -> None:
    configured = settings.model_copy(
        update={
            "event_sinks": {
                Destination.FINANCE.value: EventSinkSettings(kind="nats"),
                Destination.MODULE_OWNERS.value: EventSinkSettings(kind="off"),
            }
        }
    )
    context = AppContext.build(configured, database=database)
    try:
        assert set(context.relay.destinations) == {d.value for d in Destination} - {
            Destination.MODULE_OWNERS.value,
            Destination.AUDIT_COMPLIANCE.value,  # the audit feed's, from the log itself
        }
        assert context.audit_feed.enabled
        assert context.feeds.kinds[Destination.FINANCE.value] == "nats"
        assert context.feeds.kinds[Destination.COMMUNICATION_HUB.value] == "webhook"
    finally:
        context.close()
