"""The operations status (`GET /v1/ops/status`, issue 16): database, migrations, integrations,
event backlog and job runs, for Primoro's operations team only, with no patient or practice data;
`/readyz` stays the cheap yes or no."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from product_shop.context import AppContext
from product_shop.jobs.schedule import run_job
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import place_order


def _status(client: TestClient, world: World) -> dict[str, object]:
    answer = client.get("/v1/ops/status", headers=world.operator.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_the_operations_team_sees_database_integrations_events_and_jobs(
    client: TestClient, world: World, shop: Shop, context: AppContext
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    assert run_job(context, "checkout_expiry").outcome == "ok"

    status = _status(client, world)

    database = status["database"]
    assert isinstance(database, dict)
    assert (database["status"], database["migrations"]) == ("ok", "at_head")
    assert database["revision"] == database["head"]
    assert database["latency_ms"] is not None
    integrations = {i["integration"]: i for i in status["integrations"]}  # type: ignore[attr-defined]
    assert integrations, "the purchase called Integrated Payments"
    assert any(i["last_success_at"] for i in integrations.values())
    events = status["events"]
    assert isinstance(events, dict)
    assert {d["destination"] for d in events["destinations"]} >= {"communication_hub", "finance"}
    jobs = {j["job"]: j for j in status["jobs"]}  # type: ignore[attr-defined]
    expiry = jobs["checkout_expiry"]
    assert expiry["runs"] >= 1
    assert expiry["last_succeeded_at"] is not None
    assert expiry["failures"] == 0
    # Nothing about the patient, the practice or the order.
    text = json.dumps(status)
    for private in (order["order_id"], str(world.practice_a), world.patient_a.actor.actor_id):
        assert private not in text


def test_a_failing_job_shows_its_kind_not_its_message_and_the_status_is_degraded(
    client: TestClient, world: World, context: AppContext
) -> None:
    def broken() -> None:
        raise RuntimeError("Zelda Quixote-Marlowe, 77 Wisteria Crescent")

    assert context.jobs.run("checkout_expiry", broken).outcome == "failed"

    status = _status(client, world)

    assert status["status"] == "degraded"
    (expiry,) = [j for j in status["jobs"] if j["job"] == "checkout_expiry"]  # type: ignore[attr-defined]
    assert expiry["last_failed_at"] is not None
    assert "RuntimeError" in expiry["last_error"]
    assert "Wisteria" not in json.dumps(status)


@pytest.mark.parametrize("who", ["admin_a", "finance_a", "patient_a", "service", "catalogue_admin"])
def test_only_the_operations_team_reads_the_status(
    client: TestClient, world: World, who: str
) -> None:
    answer = client.get("/v1/ops/status", headers=getattr(world, who).headers)
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/ops/status").status_code == 401


def test_readiness_is_only_the_database_and_its_migrations(client: TestClient) -> None:
    ready = client.get("/readyz").json()
    assert set(ready) == {"status", "database", "migrations", "revision", "head"}
