"""The service's detailed status for Primoro's operations team (`GET /v1/ops/status`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.context import AppContext
from product_shop.insights.status import OpsStatus, database_status, ops_status
from product_shop.web.deps import ContextDep, permitted
from product_shop.web.events import DeliveryStatusOut, DestinationStatusOut
from product_shop.web.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["operations"])

Operator = Annotated[Actor, Depends(permitted(Action.VIEW_OPS_STATUS))]


class DatabaseOut(BaseModel):
    status: Literal["ok", "unreachable"]
    latency_ms: float | None = Field(description="One `SELECT 1` round trip")
    migrations: Literal["at_head", "behind", "unknown"]
    revision: str | None
    head: str | None


class IntegrationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    integration: str = Field(description="payments, suppliers, rewards, ai, ...")
    last_success_at: datetime | None = Field(
        description="The last call that succeeded, from any of this deployment's API or "
        "relay processes since they started"
    )
    last_failure_at: datetime | None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    job: str
    last_started_at: datetime | None
    last_succeeded_at: datetime | None
    last_failed_at: datetime | None
    last_error: str | None = Field(description="The failure's kind (never its message)")
    runs: int
    failures: int


class OpsStatusOut(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="degraded: the database is unreachable or behind, a delivery is parked, "
        "or a job's last run failed"
    )
    checked_at: datetime
    database: DatabaseOut
    integrations: list[IntegrationOut]
    events: DeliveryStatusOut | None = Field(
        description="Event delivery per destination (as `GET /v1/event-deliveries`)"
    )
    jobs: list[JobOut]


@router.get(
    "/ops/status",
    operation_id="getOpsStatus",
    response_model=OpsStatusOut,
    summary="Database, migrations, integrations, event backlog and jobs (operations)",
    description=(
        "The detail behind `/readyz`, for Primoro's operations team: the database's latency "
        "and migrations, each integration's last success and failure, the event backlog per "
        "destination (pending, oldest age, parked) and each background job's last start, "
        "success and failure. No patient, practice or order data."
    ),
    responses=problem_responses(401, 403, 422),
)
async def get_ops_status(context: ContextDep, actor: Operator) -> OpsStatusOut:
    return _out(await run_in_threadpool(_read, context))


def _read(context: AppContext) -> OpsStatus:
    """One connection for the database's own figures, then one read for the rest if the
    database is there and migrated (a status page answers even when the database is not)."""
    try:
        with context.database.engine.connect() as connection:
            db = database_status(connection)
    except Exception:  # unreachable: said so in the answer, not raised
        db = database_status(None)
    now = context.clock.now()
    if db.migrations != "at_head":
        return ops_status(None, db, now, context.feeds.kinds)
    with context.database.reading() as session:
        return ops_status(session, db, now, context.feeds.kinds)


def _out(status: OpsStatus) -> OpsStatusOut:
    db, events = status.database, status.events
    return OpsStatusOut(
        status="ok" if status.healthy else "degraded",
        checked_at=status.checked_at,
        database=DatabaseOut(
            status="ok" if db.reachable else "unreachable",
            latency_ms=db.latency_ms,
            migrations=db.migrations,
            revision=db.revision,
            head=db.head,
        ),
        integrations=[IntegrationOut.model_validate(i) for i in status.integrations],
        events=None
        if events is None
        else DeliveryStatusOut(
            unrouted=events.unrouted,
            oldest_unrouted_at=events.oldest_unrouted_at,
            destinations=[DestinationStatusOut(**d.as_dict()) for d in events.destinations],
        ),
        jobs=[JobOut.model_validate(j) for j in status.jobs],
    )
