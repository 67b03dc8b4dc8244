"""What the receiving modules get, driven through the API with the feeds configured as in a
deployment (signed webhooks to each module): Hygiene Subscriptions hears every price change at
once, a deprecation reaches the owners of every active order and plan, every event parses with
the CloudEvents SDK and validates against its JSON Schema, and the signatures verify with the
`standardwebhooks` library itself."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
import pytest
from cloudevents.core.formats.json import JSONFormat
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.core.signing import demo_destination_secret
from product_shop.events import types as ev
from product_shop.events.delivery import PendingEvent
from product_shop.events.routing import ROUTES, Destination
from product_shop.integrations.event_webhooks import WebhookSink
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import place_order

HS = Destination.HYGIENE_SUBSCRIPTIONS.value
OWNERS = Destination.MODULE_OWNERS.value
CH = Destination.COMMUNICATION_HUB.value


@pytest.fixture
def settings(settings: Settings, receivers_url: str) -> Settings:
    """Every feed a signed webhook to the receivers simulator (the defaults of a deployment,
    pointed at the simulator)."""
    return settings.model_copy(update={"event_sinks": {}, "receivers_base_url": receivers_url})


def _received(receivers_url: str, destination: str, **filters: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{receivers_url}/_simulator/{destination}/received", params=filters)
    answer.raise_for_status()
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def test_a_price_change_reaches_the_hygiene_subscriptions_receiver(
    client: TestClient,
    world: World,
    context: AppContext,
    receivers_url: str,
    make_product: Any,
    offer: Any,
) -> None:
    product = make_product()
    offer(world.admin_a, product, 5999)
    context.relay.run_once()

    changed = client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 4999, "visible": True},
    )
    assert changed.status_code == 200
    repriced = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"cost_price_minor": 2500},
    )
    assert repriced.status_code == 200
    context.relay.run_once()

    heard = [e for e in _received(receivers_url, HS) if e["data"].get("product_id") == str(product)]
    settings_changes = [e for e in heard if e["type"].endswith("settings_changed.v1")]
    assert settings_changes[-1]["data"]["after"]["retail_price_minor"] == 4999
    assert settings_changes[-1]["data"]["before"]["retail_price_minor"] == 5999
    updates = [e for e in heard if e["type"].endswith("product.updated.v1")]
    assert updates[-1]["data"]["product"]["cost_price_minor"] == 2500


def test_a_deprecation_notifies_the_owners_of_every_active_order_and_plan(
    client: TestClient, world: World, context: AppContext, shop: Shop, receivers_url: str
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    context.relay.run_once()

    response = client.patch(
        f"/v1/products/{shop.toothbrush}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "deprecated"},
    )
    assert response.status_code == 200
    context.relay.run_once()

    for destination in (HS, OWNERS):
        (deprecated,) = _received(
            receivers_url, destination, type="product.deprecated.v1", subject=str(shop.toothbrush)
        )
        affected = deprecated["data"]["affected"]
        assert affected["active_order_ids"] == [order["order_id"]]
        assert affected["hygiene_subscriptions"] == {
            "product_id": str(shop.toothbrush),
            "action": "check_plans_referencing_product",
        }
        assert deprecated["data"]["notify_module_owners"] == [
            "product_shop",
            "hygiene_subscriptions",
        ]


def test_communication_hub_hears_an_order_from_confirmation_to_receipt(
    client: TestClient, world: World, context: AppContext, shop: Shop, receivers_url: str
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    context.relay.run_once()

    heard = _received(receivers_url, CH, order_id=order["order_id"])
    types = [e["type"].removeprefix(ev.PREFIX) for e in heard if e["subject"] == order["order_id"]]
    assert types == ["order.created.v1", "payment.receipt.v1"]  # the order's own, in order
    assert "fulfilment.stage_changed.v1" in {e["type"].removeprefix(ev.PREFIX) for e in heard}
    status = client.get("/v1/event-deliveries", headers=world.operator.headers)
    assert status.status_code == 200
    hub = next(d for d in status.json()["destinations"] if d["destination"] == CH)
    assert (hub["sink"], hub["pending"], hub["parked"]) == ("webhook", 0, 0)


def _sample(event_type: ev.EventType) -> PendingEvent:
    """A claimed delivery of `event_type` with the smallest data its schema accepts."""
    return PendingEvent(
        delivery_id=1,
        destination=CH,
        position=1,
        event_id=uuid.uuid4(),
        event_type=event_type.name,
        source=ev.EVENT_SOURCE,
        subject=str(uuid.uuid4()),
        aggregate_type=event_type.aggregate_type,
        aggregate_id=str(uuid.uuid4()),
        occurred_at=datetime.now(UTC),
        data={},
        attempts=0,
    )


@pytest.mark.parametrize("event_type", ev.ALL_EVENT_TYPES, ids=lambda t: t.schema_file)
def test_every_event_type_is_sent_as_a_cloudevent_the_sdk_parses(
    event_type: ev.EventType, receivers_url: str
) -> None:
    """What our webhook sink puts on the wire, parsed by the CloudEvents SDK: the attributes
    survive, and the receiver's simulator (which checks the signature) records it."""
    captured: list[tuple[dict[str, str], bytes]] = []
    event = _sample(event_type)
    sink = WebhookSink(f"{receivers_url}/{CH}", demo_destination_secret(CH))
    original = sink._http.request

    def spy(method: str, url: str, **kwargs: Any) -> Any:
        captured.append((kwargs["headers"], kwargs["body"]))
        return original(method, url, **kwargs)

    sink._http.request = spy  # type: ignore[method-assign,assignment]
    assert sink(event).status_code == 200

    ((headers, body),) = captured
    parsed = JSONFormat().read(None, body)
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == str(event.event_id) == headers["webhook-id"]
    assert parsed.get_type() == event_type.name
    assert parsed.get_source() == ev.EVENT_SOURCE
    assert parsed.get_subject() == event.subject
    assert parsed.get_time() == event.occurred_at
    assert headers["content-type"] == "application/cloudevents+json"
    # The reference library verifies our signature with the destination's secret.
    Webhook(demo_destination_secret(CH)).verify(body, headers)
    assert _received(receivers_url, CH)[0]["webhook_id"] == str(event.event_id)


def test_every_routed_event_validates_against_its_schema_and_parses_with_the_sdk(
    client: TestClient, world: World, context: AppContext, shop: Shop, receivers_url: str
) -> None:
    """Real events from a real order's life, as each receiving module got them."""
    place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.voucher, 1)])
    context.relay.run_once()
    checked = 0
    for destination in {route.destination for route in ROUTES} & {
        Destination(d) for d in context.feeds.sinks
    }:
        for received in _received(receivers_url, destination.value):
            event_type = ev.BY_NAME[received["type"]]
            jsonschema.validate(received["data"], event_type.schema())
            document = {
                "specversion": "1.0",
                "id": received["webhook_id"],
                "source": received["source"],
                "type": received["type"],
                "subject": received["subject"],
                "time": received["time"],
                "data": received["data"],
            }
            parsed = JSONFormat().read(None, json.dumps(document).encode())
            assert parsed.get_data() == received["data"]
            checked += 1
    assert checked >= 4  # confirmation, receipt, revenue and finance at least
