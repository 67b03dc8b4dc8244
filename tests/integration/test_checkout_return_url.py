"""A checkout's `return_url` (where Integrated Payments' hosted page sends the patient back):
only an allowed origin is taken (settings `payment_return_origins`, `portal_public_url`;
`checkout/return_urls.py`), and it reaches every payment intent of the checkout, a retry's
too (migration 0023)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from product_shop.checkout.tables import Checkout
from product_shop.config import ConfigurationError, Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database
from tests.conftest import World
from tests.integration.checkout_support import DECLINED, SUCCESS, Shop, pay, start_checkout
from tests.integration.conftest import count_rows

APP = "https://app.primoro.example"
BACK = f"{APP}/checkout/done?from=pay"


def intent(payments_url: str, intent_id: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{payments_url}/_simulator/intents/{intent_id}").json()
    return found


def test_a_return_url_at_an_allowed_origin_reaches_every_payment_intent_of_the_checkout(
    client: TestClient, context: AppContext, world: World, shop: Shop, payments_url: str
) -> None:
    context.settings.payment_return_origins = [APP]
    created = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)], return_url=BACK)
    assert created.status_code == 201, created.text
    checkout = created.json()
    assert intent(payments_url, checkout["payment"]["intent_id"])["return_url"] == BACK
    # a declined card, then paying again: the new page sends the patient back too
    pay(checkout, DECLINED)
    client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    retried = client.post(f"/v1/checkouts/{checkout['id']}/retry", headers=world.patient_a.headers)
    assert retried.status_code == 200, retried.text
    again = retried.json()
    assert again["payment"]["intent_id"] != checkout["payment"]["intent_id"]
    assert intent(payments_url, again["payment"]["intent_id"])["return_url"] == BACK
    assert pay(again, SUCCESS).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/phish",
        "https://app.primoro.example.evil.example/",
        "http://app.primoro.example/",  # another scheme is another origin
        "https://app.primoro.example:8443/",
        "https://user@app.primoro.example/",
    ],
)
def test_a_return_url_elsewhere_is_refused_and_nothing_is_started(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    url: str,
) -> None:
    context.settings.payment_return_origins = [APP]
    response = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)], return_url=url)
    assert (response.status_code, response.json()["code"]) == (422, "return_url_not_allowed")
    assert count_rows(database, Checkout) == 0


def test_with_no_origin_configured_only_the_portal_public_urls_origin_is_allowed(
    client: TestClient, context: AppContext, world: World, shop: Shop
) -> None:
    assert context.settings.payment_return_origins == []
    refused = start_checkout(client, world.patient_a, [(shop.voucher, 1)], return_url=BACK)
    assert refused.json()["code"] == "return_url_not_allowed"
    context.settings.portal_public_url = "https://shop.primoro.example/"
    taken = start_checkout(
        client,
        world.patient_a,
        [(shop.voucher, 1)],
        return_url="https://shop.primoro.example/app/checkouts/return",
    )
    assert taken.status_code == 201, taken.text


@pytest.mark.parametrize(
    "origin", ["app.primoro.example", "https://app.primoro.example/pay", "ftp://x.example"]
)
def test_a_setting_that_is_not_an_origin_is_refused(settings: Settings, origin: str) -> None:
    settings.payment_return_origins = [origin]
    with pytest.raises(ConfigurationError, match="payment_return_origins"):
        settings.check()
