"""The OpenAPI document says what the server does (issue 8, item 8).

`Idempotency-Key` is required on the creating POSTs (and a missing one is still answered 400
`idempotency_key_required`, not 422); the response headers the server sends are declared
(Location, ETag, Idempotent-Replayed, Retry-After, X-Request-Id); the webhook's signature headers
and body are declared; every operation has a stable, readable operationId; the whole document is
valid (openapi-spec-validator) and every `$ref` in it resolves.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.web.app import create_app
from tests.conftest import World
from tests.integration.checkout_support import ADDRESS, Shop, key

Document = dict[str, Any]

# Stable names: clients generate code from them, so a rename is a breaking change.
OPERATION_IDS = {
    ("get", "/healthz"): "healthz",
    ("get", "/readyz"): "readyz",
    ("get", "/v1/ops/status"): "getOpsStatus",
    ("get", "/v1/catalogue"): "listCatalogue",
    ("get", "/v1/catalogue/{product_id}"): "getCatalogueItem",
    ("put", "/v1/catalogue/{product_id}/practice-settings"): "setPracticeSettings",
    ("post", "/v1/products"): "createProduct",
    ("get", "/v1/products/{product_id}"): "getProduct",
    ("patch", "/v1/products/{product_id}"): "updateProduct",
    ("post", "/v1/checkouts"): "createCheckout",
    ("get", "/v1/checkouts/{checkout_id}"): "getCheckout",
    ("post", "/v1/checkouts/{checkout_id}/complete"): "completeCheckout",
    ("post", "/v1/checkouts/{checkout_id}/retry"): "retryCheckout",
    ("post", "/v1/webhooks/payments"): "receivePaymentsWebhook",
    ("get", "/v1/orders/{order_id}"): "getOrder",
    ("get", "/v1/me/orders"): "listMyOrders",
    ("get", "/v1/orders"): "listPracticeOrders",
    ("put", "/v1/orders/{order_id}/pms-invoice-ref"): "setPmsInvoiceRef",
}
CREATING_POSTS = ("/v1/checkouts", "/v1/products")
ETAG_OPERATIONS = (
    "getProduct",
    "updateProduct",
    "setPracticeSettings",
    "getOrder",
    "setPmsInvoiceRef",
)
PRODUCT = {
    "name": "TePe Interdental Brushes",
    "description": "Size 2, pack of 8.",
    "category": "Interdental",
    "fulfilment_type": "Drop-Ship",
    "cost_price_minor": 350,
}


@pytest.fixture
def document(client: TestClient) -> Document:
    body: Document = client.get("/openapi.json").json()
    return body


def _operations(document: Document) -> Iterator[tuple[str, str, Document]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def _by_id(document: Document, operation_id: str) -> Document:
    (operation,) = [o for _, _, o in _operations(document) if o.get("operationId") == operation_id]
    return operation


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: Document, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _header_parameters(operation: Document) -> dict[str, Document]:
    return {p["name"].lower(): p for p in operation.get("parameters", []) if p["in"] == "header"}


def _response_headers(document: Document, response: Document) -> dict[str, Document]:
    return {
        name: _resolve(document, header["$ref"]) if "$ref" in header else header
        for name, header in response.get("headers", {}).items()
    }


def test_the_document_is_valid_and_every_reference_resolves(document: Document) -> None:
    validate(document)  # openapi-spec-validator, OpenAPI 3.1
    refs = set(_refs(document))
    assert "#/components/headers/ETag" in refs
    for ref in refs:
        assert _resolve(document, ref) is not None, ref


def test_every_operation_has_a_unique_readable_operation_id(document: Document) -> None:
    found = {(method, path): op.get("operationId") for method, path, op in _operations(document)}

    ids = list(found.values())
    assert all(ids), [where for where, operation_id in found.items() if not operation_id]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert re.fullmatch(r"[a-z][a-zA-Z0-9]*", operation_id), operation_id  # no generated _v1_
        assert not re.search(r"(_v1_|_get|_post|_put|_patch|_delete)$", operation_id)
    for where, operation_id in OPERATION_IDS.items():
        assert found.get(where) == operation_id, where


def test_idempotency_key_is_required_in_the_document_on_both_creating_posts(
    document: Document,
) -> None:
    for path in CREATING_POSTS:
        operation = document["paths"][path]["post"]
        parameters = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert len(parameters) == 1, path
        (parameter,) = parameters
        assert (parameter["in"], parameter["required"]) == ("header", True), path
        assert parameter["schema"]["maxLength"] == 255
        assert "idempotency_key_required" in operation["responses"]["400"]["description"]
        assert "422" in operation["responses"]  # a reused key with another body


def test_a_missing_idempotency_key_is_still_a_400_problem_not_a_422(
    client: TestClient, world: World, shop: Shop
) -> None:
    checkout = {"lines": [{"product_id": str(shop.voucher), "quantity": 1}]}
    answers = [
        client.post("/v1/checkouts", headers=world.patient_a.headers, json=checkout),
        client.post("/v1/products", headers=world.catalogue_admin.headers, json=PRODUCT),
    ]
    for response in answers:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "idempotency_key_required"


def test_created_responses_declare_and_send_location_and_replays_say_so(
    client: TestClient, world: World, shop: Shop, document: Document
) -> None:
    for path in CREATING_POSTS:
        created = document["paths"][path]["post"]["responses"]["201"]
        headers = _response_headers(document, created)
        assert headers["Location"]["required"] is True, path
        assert headers["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
        assert headers["Idempotency-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
        assert "content" in created  # the body schema survives the header declaration

    request_headers = {**world.catalogue_admin.headers, **key()}
    first = client.post("/v1/products", headers=request_headers, json=PRODUCT)
    again = client.post("/v1/products", headers=request_headers, json=PRODUCT)
    checkout = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, **key()},
        json={
            "lines": [{"product_id": str(shop.voucher), "quantity": 1}],
            "delivery_address": ADDRESS,
        },
    )

    assert (first.status_code, again.status_code, checkout.status_code) == (201, 201, 201)
    assert first.headers["Location"] == f"/v1/products/{first.json()['product_id']}"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Idempotency-Replayed"] == "true"
    assert "Idempotency-Replayed" not in first.headers
    assert again.headers["Location"] == first.headers["Location"]
    assert checkout.headers["Location"] == f"/v1/checkouts/{checkout.json()['id']}"


def test_etag_is_declared_where_the_server_sets_it_and_if_match_where_412_is_possible(
    client: TestClient, world: World, shop: Shop, document: Document
) -> None:
    for operation_id in ETAG_OPERATIONS:
        ok = _by_id(document, operation_id)["responses"]["200"]
        assert "ETag" in _response_headers(document, ok), operation_id
        assert "content" in ok, operation_id
    for method, path, operation in _operations(document):
        if "412" in operation["responses"]:
            assert "if-match" in _header_parameters(operation), (method, path)
            assert _header_parameters(operation)["if-match"].get("required", False) is False

    product = client.get(f"/v1/products/{shop.voucher}", headers=world.catalogue_admin.headers)
    settings = client.put(
        f"/v1/catalogue/{shop.voucher}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 6500, "visible": True, "in_clinic_stock_available": False},
    )
    assert re.fullmatch(r'"[0-9]+"', product.headers["ETag"])
    assert re.fullmatch(r'"[0-9]+"', settings.headers["ETag"])


def test_the_webhook_declares_its_signature_headers_and_body(document: Document) -> None:
    operation = document["paths"]["/v1/webhooks/payments"]["post"]
    headers = _header_parameters(operation)

    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert headers[name]["required"] is True, name
    body = operation["requestBody"]
    assert body["required"] is True
    schema = _resolve(document, body["content"]["application/json"]["schema"]["$ref"])
    assert "data" in schema["required"]
    data = _resolve(document, schema["properties"]["data"]["$ref"])
    assert {"intent_id", "merchant_reference"} <= set(data["required"])
    assert "security" not in operation
    assert "invalid_signature" in operation["responses"]["401"]["description"]


def test_every_response_declares_x_request_id_and_every_503_retry_after(
    client: TestClient, world: World, shop: Shop, document: Document, payments_url: str
) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            headers = _response_headers(document, response)
            assert headers["X-Request-Id"]["required"] is True, (method, path, status)
            if status == "503":
                assert headers["Retry-After"]["required"] is True, (method, path)

    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "create_intent", "mode": "error", "status": 503, "times": 3},
    )
    unavailable = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, **key(), "X-Request-Id": "req-" + uuid.uuid4().hex},
        json={
            "lines": [{"product_id": str(shop.voucher), "quantity": 1}],
            "delivery_address": ADDRESS,
        },
    )
    assert unavailable.status_code == 503, unavailable.text
    assert unavailable.headers["Retry-After"] == "5"
    assert unavailable.headers["X-Request-Id"].startswith("req-")


def test_readiness_says_when_to_retry_when_not_ready(settings: Settings) -> None:
    unreachable = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    app = create_app(context=AppContext.build(settings, database=unreachable))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
