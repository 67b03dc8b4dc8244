"""Liveness and readiness: open to anonymous callers (load balancers, orchestrators). Readiness
stays cheap (one query and the migration table); the detail is `GET /v1/ops/status`
(web/ops.py)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from product_shop.db.migrate import current_revision, head_revision
from product_shop.web.deps import ContextDep
from product_shop.web.docs import response_headers
from product_shop.web.problems import problem_responses

router = APIRouter(tags=["health"])
RETRY_AFTER = {"Retry-After": "5"}


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: Literal["ok", "unreachable"]
    migrations: Literal["at_head", "behind", "unknown"]
    revision: str | None
    head: str | None


@router.get(
    "/healthz", operation_id="healthz", response_model=Health, summary="The process is alive"
)
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Readiness,
    summary="The database is reachable and migrated to head",
    responses={
        503: {"model": Readiness, "description": "Not ready", **response_headers("Retry-After")}
    },
)
def readyz(context: ContextDep) -> Readiness | JSONResponse:
    head = head_revision()
    try:
        with context.database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            revision = current_revision(connection)
    except Exception:  # any failure to reach the database means not ready
        body = Readiness(
            status="not_ready",
            database="unreachable",
            migrations="unknown",
            revision=None,
            head=head,
        )
        return JSONResponse(body.model_dump(), status_code=503, headers=RETRY_AFTER)
    at_head = revision == head
    body = Readiness(
        status="ready" if at_head else "not_ready",
        database="ok",
        migrations="at_head" if at_head else "behind",
        revision=revision,
        head=head,
    )
    return (
        body if at_head else JSONResponse(body.model_dump(), status_code=503, headers=RETRY_AFTER)
    )


__all__ = ["problem_responses", "router"]
