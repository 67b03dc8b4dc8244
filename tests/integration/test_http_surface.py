"""What every client sees: authentication on every route, problem+json errors, request ids."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from tests.conftest import World

PUBLIC_PATHS = {"/healthz", "/readyz", "/openapi.json", "/docs"}


def _concrete(path: str) -> str:
    for name in ("{product_id}", "{checkout_id}", "{order_id}"):
        path = path.replace(name, str(uuid.uuid4()))
    return path


def test_every_route_but_health_readiness_and_docs_refuses_anonymous_callers(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    protected = [
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if path not in PUBLIC_PATHS
    ]
    assert len(protected) >= 6
    for method, path in protected:
        response = client.request(method, _concrete(path), json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
        expected = "invalid_signature" if path.startswith("/v1/webhooks/") else "unauthenticated"
        assert response.json()["code"] == expected


def test_a_forged_token_gets_401_problem_json(client: TestClient) -> None:
    response = client.get(
        "/v1/catalogue", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_unknown_route_and_wrong_method_are_problem_json(client: TestClient, world: World) -> None:
    missing = client.get("/v1/nothing-here", headers=world.patient_a.headers)
    wrong = client.delete("/v1/catalogue", headers=world.patient_a.headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")
    assert wrong.headers["content-type"] == "application/problem+json"
    assert "GET" in wrong.headers["allow"]


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        ({"retail_price_minor": 12.5, "visible": True}, "validation_failed", 422),
        ({"retail_price_minor": "1299", "visible": True}, "validation_failed", 422),
        ({"retail_price_minor": 0, "visible": True}, "validation_failed", 422),
        ({"retail_price_minor": 1299, "visible": "yes"}, "validation_failed", 422),
        (
            {"retail_price_minor": 1299, "visible": True, "cost_price_minor": 1},
            "validation_failed",
            422,
        ),
        ({"visible": True}, "validation_failed", 422),
    ],
)
def test_bad_settings_are_refused_with_a_clear_problem(
    client: TestClient, world: World, body: dict[str, object], code: str, status: int
) -> None:
    response = client.put(
        f"/v1/catalogue/{uuid.uuid4()}/practice-settings", headers=world.admin_a.headers, json=body
    )
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["code"] == code
    assert problem["errors"]
    assert all("loc" in e and "msg" in e for e in problem["errors"])
    assert all(set(e) == {"loc", "msg", "type"} for e in problem["errors"])  # input not echoed


def test_malformed_json_is_a_400(client: TestClient, world: World) -> None:
    response = client.post(
        "/v1/products",
        headers={**world.catalogue_admin.headers, "Content-Type": "application/json"},
        content=b'{"name": ',
    )
    assert (response.status_code, response.json()["code"]) == (400, "malformed_json")


def test_fixed_product_fields_cannot_be_patched(client: TestClient, world: World) -> None:
    response = client.patch(
        f"/v1/products/{uuid.uuid4()}",
        headers=world.catalogue_admin.headers,
        json={"fulfilment_type": "Digital"},
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")


def test_a_bad_if_match_is_a_400(client: TestClient, world: World) -> None:
    response = client.patch(
        f"/v1/products/{uuid.uuid4()}",
        headers={**world.catalogue_admin.headers, "If-Match": "yesterday"},
        json={"name": "X"},
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_if_match")


def test_every_response_carries_a_request_id_and_a_safe_one_is_echoed(client: TestClient) -> None:
    generated = client.get("/healthz")
    echoed = client.get("/healthz", headers={"X-Request-Id": "app-7f3a.1"})
    unsafe = client.get("/healthz", headers={"X-Request-Id": "x" * 65})
    assert uuid.UUID(generated.headers["x-request-id"])
    assert echoed.headers["x-request-id"] == "app-7f3a.1"
    assert unsafe.headers["x-request-id"] != "x" * 65
    problem = client.get("/v1/catalogue", headers={"X-Request-Id": "trace-1"}).json()
    assert problem["request_id"] == "trace-1"


def test_api_responses_are_not_cached(client: TestClient, world: World) -> None:
    response = client.get("/v1/catalogue", headers=world.patient_a.headers)
    assert response.headers["cache-control"] == "no-store"
