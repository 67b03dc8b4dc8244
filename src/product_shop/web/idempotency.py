"""Creating POSTs run through here: claim the Idempotency-Key, replay or run, release on error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.context import AppContext
from product_shop.idempotency.store import Claim, Replay, in_flight
from product_shop.web.docs import response_headers
from product_shop.web.problems import problem_responses
from product_shop.web.responses import model_response

Created = TypeVar("Created", bound=BaseModel)

REPLAYED_HEADER = "Idempotent-Replayed"
# Sent too, under the name some clients look for (issue 8 names it); same meaning.
REPLAYED_HEADER_ALIAS = "Idempotency-Replayed"

# Read as optional so that a missing key reaches run_idempotent and is answered 400
# `idempotency_key_required` (clients branch on that code), not FastAPI's 422; the OpenAPI
# document declares it required instead (IDEMPOTENT_CREATE, the routes' openapi_extra).
IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", include_in_schema=False)
]

IDEMPOTENT_CREATE: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "A unique key per intended creation (e.g. a UUID). The same key and "
            "body replay the first response; another body is 422 `idempotency_key_reused`; a "
            "duplicate still in flight is 409. Kept 24 hours, per caller. Without it: 400 "
            "`idempotency_key_required`.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
        }
    ]
}


def creating_responses(*problem_statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses` of a creating POST: 201 with Location (and Idempotent-Replayed on a replay),
    and the problems, 400 saying what a missing or malformed key answers."""
    responses = problem_responses(400, *problem_statuses)
    responses[400] = {
        **responses[400],
        "description": "Bad request (problem+json); without an Idempotency-Key "
        "`idempotency_key_required`, with a malformed one `idempotency_key_invalid`",
    }
    responses[201] = {
        "description": "Created; or the first response replayed (`Idempotent-Replayed: true`)",
        **response_headers("Location", REPLAYED_HEADER, REPLAYED_HEADER_ALIAS),
    }
    return responses


def run_idempotent(
    context: AppContext,
    actor: Actor,
    key: str | None,
    operation: str,
    payload: BaseModel,
    create: Callable[[Claim], tuple[BaseModel, str]],
    *,
    status_of: Callable[[BaseModel], int] | None = None,
    prepare: Callable[[Session], None] | None = None,
) -> Response:
    """Claim the key in a unit of work of its own (committed, so a duplicate sees it), run
    `create` (which stores its response with `IdempotencyStore.complete` in its own unit of
    work, alongside its effect), and release the key in another if `create` fails.

    `prepare`, when given, runs in the claim's unit of work once the key is claimed (never for
    a replay): the reads and checks `create` builds on, without a transaction of their own. A
    refusal raised there rolls the claim back with it, so the key stays free."""
    store, database = context.idempotency, context.database
    try:
        with database.unit_of_work() as session:
            outcome = store.claim(
                session, actor.actor_id, key, operation, payload.model_dump(mode="json")
            )
            if prepare is not None and not isinstance(outcome, Replay):
                prepare(session)
    except IntegrityError as exc:  # a concurrent request claimed the same key first
        raise in_flight() from exc
    if isinstance(outcome, Replay):
        headers = {REPLAYED_HEADER: "true", REPLAYED_HEADER_ALIAS: "true"}
        if outcome.location:
            headers["Location"] = outcome.location
        return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)
    try:
        created, location = create(outcome)
    except BaseException:
        with database.unit_of_work() as session:
            store.release(session, outcome)
        raise
    status = 201 if status_of is None else status_of(created)
    return model_response(created, status_code=status, headers={"Location": location})


def stored_with_answer(
    context: AppContext, claim: Claim, location: str, make: Callable[[Session], Created]
) -> Created:
    """What `make` creates, in a unit of work (`Database.run`) that also stores it as the
    claim's 201 answer, so the effect and its replay commit together."""

    def work(session: Session) -> Created:
        made = make(session)
        context.idempotency.complete(session, claim, 201, made.model_dump(mode="json"), location)
        return made

    return context.database.run(work)
