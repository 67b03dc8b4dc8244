"""FastAPI dependencies: the unit of work, the authenticated Actor, the app context."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

import structlog
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from product_shop.access.actor import Actor
from product_shop.access.policy import Action, require
from product_shop.context import AppContext
from product_shop.core.errors import BadRequest, Unauthenticated
from product_shop.db import tenancy

_bearer = HTTPBearer(auto_error=False, description="Access Manager JWT")


# The cheap dependencies are coroutines: FastAPI runs a plain function in the thread pool, and
# that hand-off costs more than the work itself (two thread hops per request, measured).


async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


def db_session(context: Annotated[AppContext, Depends(get_context)]) -> Iterator[Session]:
    """One unit of work per request: commit when the route returns, roll back when it raises.

    Runs with scope="function", so the commit happens before the response is sent: a client
    never sees success for a change that did not commit.
    """
    with context.database.unit_of_work() as session:
        yield session


async def current_actor(
    context: Annotated[AppContext, Depends(get_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("Send an Access Manager token as 'Authorization: Bearer <token>'.")
    actor = context.verifier.verify_cached(credentials.credentials)
    if actor is None:
        # A first sight of this token: verifying it may fetch the JWKS, so not on the event loop.
        actor = await run_in_threadpool(context.verifier.verify, credentials.credentials)
    # Who acted, on every later log line of the request, the request line too (the id and
    # role: never the name or the token).
    structlog.contextvars.bind_contextvars(actor_id=actor.actor_id, actor_role=actor.role.value)
    # Whose rows the request's transactions may see from here on (row-level security).
    tenancy.enter(tenant_scope(actor))
    return actor


def tenant_scope(actor: Actor) -> tenancy.TenantScope:
    """The rows a caller's transactions may see in PostgreSQL (db/tenancy.py): a patient their
    own at their practice, a practice's staff and AI engine their practice's, and the roles
    that are no practice's (other modules' service role, the platform's catalogue admins and
    operators) every practice's; what each may do with them is the permission table's."""
    if actor.practice_id is None:
        return tenancy.SYSTEM
    if actor.patient_id is not None:
        return tenancy.patient_scope(actor.practice_id, actor.patient_id)
    return tenancy.practice_scope(actor.practice_id)


def permitted(action: Action) -> Callable[..., Awaitable[Actor]]:
    """The caller, once their role may perform `action` (403 otherwise).

    As a dependency it runs before FastAPI validates the request body, so a caller who may not
    use a route learns that (403), not the shape of the body it expects (422)."""

    async def dependency(actor: Annotated[Actor, Depends(current_actor)]) -> Actor:
        require(actor, action)
        return actor

    return dependency


_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')


async def if_match_version(
    if_match: Annotated[
        str | None,
        Header(description='Optimistic concurrency: the version you read, e.g. "3".'),
    ] = None,
) -> int | None:
    if if_match is None:
        return None
    found = _IF_MATCH.match(if_match)
    if not found:
        raise BadRequest('If-Match must be a version such as "3".', code="invalid_if_match")
    return int(found.group(1))


ContextDep = Annotated[AppContext, Depends(get_context)]
SessionDep = Annotated[Session, Depends(db_session, scope="function")]
ActorDep = Annotated[Actor, Depends(current_actor)]
IfMatchDep = Annotated[int | None, Depends(if_match_version)]
