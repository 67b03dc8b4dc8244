"""Health, readiness, the OpenAPI document and offline docs."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from sqlalchemy import text

from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.web.app import create_app
from tests.conftest import as_owner


def test_health_and_readiness_are_open_and_ready_at_head(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["migrations"] == "at_head"


def test_readiness_fails_when_migrations_are_behind(client: TestClient, database: Database) -> None:
    with as_owner(database) as connection:  # the service role may only read it
        connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["migrations"] == "behind"
    with as_owner(database) as connection:
        connection.execute(
            text("UPDATE alembic_version SET version_num = :head"),
            {"head": response.json()["head"]},
        )


def test_readiness_fails_when_the_database_is_unreachable(settings: Settings) -> None:
    unreachable = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    app = create_app(context=AppContext.build(settings, database=unreachable))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_openapi_is_a_valid_3_1_document_with_problem_errors_on_every_route(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert "HTTPValidationError" not in str(document)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not path.startswith("/v1/"):
                continue
            responses = operation["responses"]
            webhook = path.startswith("/v1/webhooks/")
            statuses = ("400", "401") if webhook else ("401", "403", "422")
            for status in statuses:
                assert status in responses, (method, path, status)
                schema = responses[status]["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}
            if path.startswith("/v1/webhooks/"):
                assert "security" not in operation  # signed by the sender instead
                continue
            assert operation["security"] == [{"HTTPBearer": []}]


def test_docs_are_served_without_any_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls
    assert all(u.startswith("/docs-assets/") for u in urls)
    assert "cdn" not in page.text.lower()
    for url in urls:
        assert client.get(url).status_code == 200
