"""Abuse limits (issue 17): a request body size limit enforced while the body streams in, page
size caps on every list, and per-caller rate limits on checkout creation and the webhooks, all
problem+json (`src/product_shop/web/abuse.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from product_shop.config import Settings
from tests.conftest import World
from tests.integration.checkout_support import Shop, start_checkout

LIMIT = 64 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"checkout_rate_limit": "3/minute", "webhook_rate_limit": "4/minute"}
    )


def _problem(response: object, status: int, code: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    assert response.json()["code"] == code  # type: ignore[attr-defined]


def test_a_body_over_the_limit_is_refused_by_its_length(client: TestClient, world: World) -> None:
    body = b'{"note": "' + b"x" * LIMIT + b'"}'
    response = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, "content-type": "application/json"},
        content=body,
    )
    _problem(response, 413, "payload_too_large")


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(
    client: TestClient, world: World
) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            sent.append(1)
            yield b"x" * 4096

    response = client.post(
        "/v1/webhooks/payments",
        headers={"content-type": "application/json"},
        content=chunks(),
    )
    _problem(response, 413, "payload_too_large")
    assert "content-length" not in response.request.headers


def test_a_body_under_the_limit_reaches_the_route(client: TestClient, world: World) -> None:
    body = b'{"lines": [], "note": "' + b"x" * (LIMIT - 100) + b'"}'
    response = client.post(
        "/v1/checkouts",
        headers={
            **world.patient_a.headers,
            "content-type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        },
        content=body,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


def test_every_list_caps_its_page_size(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    lists = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] == "limit":
                    lists += 1
                    maximum = parameter["schema"].get("maximum")
                    assert maximum is not None, (method, path)
                    assert maximum <= 200, (method, path)
    assert lists >= 10


def test_an_oversized_page_is_refused(client: TestClient, world: World) -> None:
    response = client.get("/v1/me/orders?limit=201", headers=world.patient_a.headers)
    _problem(response, 422, "validation_failed")


def test_checkout_creation_is_rate_limited_per_caller(
    client: TestClient, world: World, shop: Shop
) -> None:
    for _ in range(3):
        assert start_checkout(client, world.patient_a, [(shop.voucher, 1)]).status_code == 201
    refused = start_checkout(client, world.patient_a, [(shop.voucher, 1)])
    _problem(refused, 429, "too_many_requests")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # another caller is counted apart
    assert start_checkout(client, world.patient_a2, [(shop.voucher, 1)]).status_code == 201


def test_webhooks_are_rate_limited_per_endpoint_and_address(client: TestClient) -> None:
    for _ in range(4):
        response = client.post("/v1/webhooks/payments", json={})
        assert response.status_code == 401  # unsigned: the route answered
    refused = client.post("/v1/webhooks/payments", json={})
    _problem(refused, 429, "too_many_requests")
    assert int(refused.headers["retry-after"]) >= 1
    assert client.post("/v1/webhooks/suppliers", json={}).status_code == 401  # its own count
