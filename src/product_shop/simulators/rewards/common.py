"""What every route shares: the state as a dependency, problem bodies and fault injection."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from product_shop.simulators.rewards.state import Fault, State


async def simulator(request: Request) -> State:
    """The app's simulator state. A coroutine, so resolving it costs no thread hand-off."""
    state: State = request.app.state.sim
    return state


Sim = Annotated[State, Depends(simulator)]


def problem(status: int, code: str, detail: str) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def unauthorised() -> JSONResponse:
    return problem(401, "unauthorised", "Bad API key.")


def redemption_not_found() -> JSONResponse:
    return problem(404, "redemption_not_found", "No such redemption.")


# The module's own routes are coroutines (no thread hand-off); their simulated delays sleep
# without blocking other requests.
async def before(state: State, operation: str) -> tuple[JSONResponse | None, Fault | None]:
    """Apply the fault queued for `operation` before it runs: sleep ("delay"), answer with the
    fault's status ("error", returned first), or hand back a fault to apply after ("delay_after",
    returned second: the operation takes effect, its answer comes late)."""
    found = state.take_fault(operation)
    if found is None:
        return None, None
    if found.mode == "delay":
        await asyncio.sleep(found.seconds)
    if found.mode == "error":
        return problem(found.status, "simulated_failure", "Simulated failure."), None
    return None, found if found.mode == "delay_after" else None


async def after(found: Fault | None) -> None:
    if found is not None:
        await asyncio.sleep(found.seconds)
