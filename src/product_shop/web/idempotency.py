"""Creating POSTs run through here: claim the Idempotency-Key, replay or run, release on error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.context import AppContext
from product_shop.idempotency.store import Claim, Replay
from product_shop.web.responses import model_response

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required. A unique key per intended creation (e.g. a UUID); repeats replay.",
    ),
]


def run_idempotent(
    context: AppContext,
    actor: Actor,
    key: str | None,
    operation: str,
    payload: BaseModel,
    create: Callable[[Claim], tuple[BaseModel, str]],
) -> Response:
    outcome = context.idempotency.claim(
        actor.actor_id, key, operation, payload.model_dump(mode="json")
    )
    if isinstance(outcome, Replay):
        headers = {"Idempotent-Replayed": "true"}
        if outcome.location:
            headers["Location"] = outcome.location
        return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)
    try:
        created, location = create(outcome)
    except BaseException:
        context.idempotency.release(outcome)
        raise
    return model_response(created, status_code=201, headers={"Location": location})
