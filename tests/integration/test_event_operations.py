"""Operating event delivery: the backlog per destination (`product-shop events status`, `GET
/v1/event-deliveries`, `/readyz`) and parked deliveries queued again (`product-shop events
redeliver`, `POST /v1/event-deliveries/redeliver`), for Primoro's operations team only."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from product_shop.cli import main
from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock
from product_shop.db.engine import Database
from product_shop.events.delivery import PermanentDeliveryError
from product_shop.events.relay import OutboxRelay
from product_shop.events.types import FINANCE_ORDER_RECORDED, ORDER_CREATED
from tests.conftest import World
from tests.integration.delivery_support import deliveries

CH, FIN = "communication_hub", "finance"


def _refuse(event: Any) -> None:
    raise PermanentDeliveryError("gone", status_code=410)


def _backlog(context: AppContext, database: Database) -> None:
    """Two Communication Hub events waiting (its feed is off in tests) and one Finance event
    parked."""
    with database.unit_of_work() as session:
        for _ in range(2):
            context.outbox.emit(session, ORDER_CREATED, aggregate_id=uuid.uuid4(), data={})
        context.outbox.emit(session, FINANCE_ORDER_RECORDED, aggregate_id=uuid.uuid4(), data={})
    OutboxRelay(database, {FIN: _refuse}, context.clock).run_once()


def test_the_operations_team_sees_each_destinations_backlog_and_parked_count(
    client: TestClient, world: World, context: AppContext, database: Database
) -> None:
    _backlog(context, database)

    answer = client.get("/v1/event-deliveries", headers=world.operator.headers)

    assert answer.status_code == 200
    by_destination = {d["destination"]: d for d in answer.json()["destinations"]}
    hub, finance = by_destination[CH], by_destination[FIN]
    assert (hub["sink"], hub["pending"], hub["parked"]) == ("off", 2, 0)
    assert hub["oldest_pending_age_seconds"] is not None
    assert (finance["pending"], finance["parked"]) == (0, 1)
    assert by_destination["integrated_payments"]["sink"] == "api"
    assert answer.json()["unrouted"] == 0
    # The same detail in the operations status; readiness stays a cheap yes or no.
    status = client.get("/v1/ops/status", headers=world.operator.headers).json()
    assert {e["destination"]: e["pending"] for e in status["events"]["destinations"]}[CH] == 2
    assert status["status"] == "degraded"  # a parked delivery
    assert "events" not in client.get("/readyz").json()


@pytest.mark.parametrize("who", ["admin_a", "finance_a", "catalogue_admin", "patient_a", "service"])
def test_no_one_but_the_operations_team_reads_or_redelivers(
    client: TestClient, world: World, who: str
) -> None:
    headers = getattr(world, who).headers
    assert client.get("/v1/event-deliveries", headers=headers).status_code == 403
    answer = client.post("/v1/event-deliveries/redeliver", headers=headers, json={})
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/event-deliveries").status_code == 401


def test_parked_deliveries_are_queued_again_through_the_api(
    client: TestClient, world: World, context: AppContext, database: Database
) -> None:
    _backlog(context, database)

    for body, queued in (({"destination": CH}, 0), ({"destination": FIN}, 1), ({}, 0)):
        answer = client.post(
            "/v1/event-deliveries/redeliver", headers=world.operator.headers, json=body
        )
        assert (answer.status_code, answer.json()) == (200, {"queued": queued})
    (finance,) = deliveries(database, destination=FIN)
    assert (finance.status, finance.parked_at) == ("pending", None)
    refused = client.post(
        "/v1/event-deliveries/redeliver",
        headers=world.operator.headers,
        json={"destination": "accounts", "since": "yesterday"},
    )
    assert refused.status_code == 422


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_events_status_and_redeliver_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    key_pair: Any,
    context: AppContext,
    database: Database,
) -> None:
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", database.url)
    monkeypatch.setenv("PRODUCT_SHOP_JWT_PUBLIC_KEY", key_pair.public_pem)
    monkeypatch.setenv(
        "PRODUCT_SHOP_EVENT_SINKS", json.dumps({CH: {"kind": "off"}, FIN: {"kind": "off"}})
    )
    clock = FrozenClock(context.clock.now())
    with database.unit_of_work() as session:
        for day in range(2):
            context.outbox.emit(
                session,
                FINANCE_ORDER_RECORDED,
                aggregate_id=uuid.uuid4(),
                data={},
                at=clock.now() + timedelta(days=day),
            )
    OutboxRelay(database, {FIN: _refuse}, clock).run_once()

    status = json.loads(_cli(capsys, "events", "status", "--json"))
    finance = next(d for d in status["destinations"] if d["destination"] == FIN)
    assert (finance["sink"], finance["parked"]) == ("off", 2)
    table = _cli(capsys, "events", "status")
    assert any(line.split()[:1] == [FIN] and line.split()[-1] == "2" for line in table.splitlines())

    since = (clock.now() + timedelta(hours=12)).isoformat()
    out = _cli(capsys, "events", "redeliver", "--destination", FIN, "--since", since)
    assert out.strip().splitlines()[-1] == "queued 1 parked deliveries again"
    assert sorted(d.status for d in deliveries(database, destination=FIN)) == ["parked", "pending"]
    with pytest.raises(SystemExit) as refused:  # a time without its offset
        main(["events", "redeliver", "--since", "2026-11-30T09:00:00"])
    assert refused.value.code == 2


def test_simulate_receivers_serves_every_feed_with_its_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi import FastAPI

    from product_shop.core.signing import demo_destination_secret, new_secret

    served: dict[str, Any] = {}

    def run(app: FastAPI, **options: Any) -> None:  # instead of serving for ever
        served.update(app=app, **options)

    monkeypatch.setattr("uvicorn.run", run)
    secret = new_secret()

    assert main(["simulate", "receivers", "--port", "9124", "--secret", f"{FIN}={secret}"]) == 0

    assert (served["host"], served["port"]) == ("127.0.0.1", 9124)
    secrets = served["app"].state.sim.config.secrets
    assert secrets[FIN] == secret
    assert secrets[CH] == demo_destination_secret(CH)
    assert main(["simulate", "receivers", "--secret", "accounts=x"]) == 2
    assert "known destinations" in capsys.readouterr().err
