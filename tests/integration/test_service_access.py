"""Other modules' service identities get only what their module needs (issue 8 item 6)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TokenFactory, World
from tests.integration.checkout_support import Shop


def _service(make_token: TokenFactory, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(role='service', subject=subject)}"}


def test_hygiene_subscriptions_reads_a_practices_live_prices_and_availability(
    client: TestClient, world: World, shop: Shop, make_token: TokenFactory
) -> None:
    response = client.get(
        "/v1/catalogue",
        headers=_service(make_token, "hygiene-subscriptions"),
        params={"practice_id": str(world.practice_a)},
    )

    assert response.status_code == 200, response.text
    assert {item["product_id"] for item in response.json()["items"]} == {
        str(shop.toothbrush),
        str(shop.voucher),
        str(shop.kit),
    }


@pytest.mark.parametrize("subject", ["integrated-payments", "finance", "some-new-module"])
def test_any_other_service_identity_may_not_read_a_practices_catalogue(
    client: TestClient, world: World, shop: Shop, make_token: TokenFactory, subject: str
) -> None:
    response = client.get(
        "/v1/catalogue",
        headers=_service(make_token, subject),
        params={"practice_id": str(world.practice_a)},
    )
    item = client.get(
        f"/v1/catalogue/{shop.voucher}",
        headers=_service(make_token, subject),
        params={"practice_id": str(world.practice_a)},
    )

    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert item.status_code == 403
    assert "items" not in response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/orders"),
        ("GET", "/v1/me/orders"),
        ("POST", "/v1/checkouts"),
        ("PUT", "/v1/catalogue/00000000-0000-0000-0000-000000000001/practice-settings"),
        ("POST", "/v1/products"),
    ],
)
def test_hygiene_subscriptions_may_do_nothing_but_read_the_catalogue(
    client: TestClient, make_token: TokenFactory, method: str, path: str
) -> None:
    response = client.request(
        method,
        path,
        headers={**_service(make_token, "hygiene-subscriptions"), "Idempotency-Key": "k-1"},
        json={},
    )

    assert response.status_code == 403, response.text
