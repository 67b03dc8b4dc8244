"""Timestamps and days at the ends of Python's range (`core/moments.py`): every route that reads
one from a query string, a body or a page cursor refuses it as a client error (422
`validation_failed`, 400 `invalid_cursor`) before any query runs or any stream starts. They
used to fail inside the query (a UTC conversion or a day added past year 9999) as a 500, or,
for the streamed exports, as a 200 whose body was cut off."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TokenFactory, World

EARLY = "0001-01-01T00:00:00+14:00"  # year 0 once in UTC
LATE = "9999-12-31T23:59:59-12:00"  # year 10000 once in UTC
NDJSON = {"Accept": "application/x-ndjson"}


def _cursor(at: str) -> str:
    return base64.urlsafe_b64encode(f"{at}|{uuid.uuid4()}".encode()).decode()


@pytest.fixture
def services(make_token: TokenFactory) -> dict[str, dict[str, str]]:
    def bearer(subject: str) -> dict[str, str]:
        token = make_token(role="service", subject=subject, practice_id=None, name=subject)
        return {"Authorization": f"Bearer {token}"}

    return {"finance": bearer("finance"), "audit": bearer("audit-compliance")}


def _headers(world: World, services: dict[str, dict[str, str]], who: str) -> dict[str, str]:
    if who in services:
        return {**services[who], **NDJSON}
    headers: dict[str, str] = getattr(world, who).headers
    return headers


QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    ("admin_a", "/v1/orders", {"created_from": EARLY}),
    ("admin_a", "/v1/orders", {"created_to": LATE}),
    ("finance_a", "/v1/refunds", {"to": "9999-12-31"}),
    ("finance_a", "/v1/refunds", {"from": "0001-01-01", "to": "9999-12-31"}),
    ("admin_a", "/v1/dashboards/overview", {"from": "9999-12-31", "to": "9999-12-31"}),
    (
        "admin_a",
        "/v1/dashboards/overview",
        {"from": "0001-01-01", "to": "0001-01-01", "granularity": "week"},
    ),
    ("admin_a", "/v1/recommendations/conversion", {"from": EARLY, "to": LATE}),
    ("staff_a", "/v1/ai-summaries/recommendations", {"from": EARLY, "to": LATE}),
    ("finance", "/v1/finance/orders", {"from": "9999-01-01", "to": "9999-12-31"}),
    ("finance", "/v1/finance/refunds", {"from": "9999-12-01", "to": "9999-12-31"}),
    ("audit", "/v1/audit/export", {"since": EARLY}),
    ("audit", "/v1/audit/export", {"since": "2026-01-01T00:00:00Z", "until": LATE}),
]


@pytest.mark.parametrize(("who", "path", "params"), QUERIES)
def test_a_time_or_day_out_of_range_is_a_422_before_anything_runs(
    client: TestClient,
    world: World,
    services: dict[str, dict[str, str]],
    who: str,
    path: str,
    params: dict[str, Any],
) -> None:
    response = client.get(path, headers=_headers(world, services, who), params=params)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert {error["loc"][0] for error in problem["errors"]} == {"query"}


CURSORS: list[tuple[str, str]] = [
    ("patient_a", "/v1/me/orders"),
    ("admin_a", "/v1/orders"),
    ("finance_a", "/v1/refunds"),
    ("admin_a", "/v1/cancellation-requests"),
    ("clinician_a", "/v1/recommendations"),
    ("staff_a", "/v1/fulfilment/exceptions"),
    ("finance", "/v1/finance/orders"),
]


@pytest.mark.parametrize(("who", "path"), CURSORS)
@pytest.mark.parametrize("at", [EARLY, LATE])
def test_a_forged_cursor_out_of_range_is_400_invalid_cursor(
    client: TestClient,
    world: World,
    services: dict[str, dict[str, str]],
    who: str,
    path: str,
    at: str,
) -> None:
    params = {"cursor": _cursor(at)}
    if path.startswith("/v1/finance/"):
        params |= {"from": "2026-01-01", "to": "2026-01-31"}
    response = client.get(path, headers=_headers(world, services, who), params=params)

    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor")


def test_redelivering_since_a_time_out_of_range_is_a_422_that_queues_nothing(
    client: TestClient, world: World
) -> None:
    response = client.post(
        "/v1/event-deliveries/redeliver", headers=world.operator.headers, json={"since": EARLY}
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")
    stray = client.post(
        "/v1/event-deliveries/redeliver", headers=world.operator.headers, json={"foo": 1}
    )
    assert (stray.status_code, stray.json()["code"]) == (422, "validation_failed")
