"""What every route shares: the state as a dependency, problem bodies and fault injection."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from product_shop.simulators.faults import Fault, after, before, problem, unauthorised
from product_shop.simulators.rewards.state import State

__all__ = [
    "Fault",
    "Sim",
    "after",
    "before",
    "problem",
    "redemption_not_found",
    "simulator",
    "unauthorised",
]


async def simulator(request: Request) -> State:
    """The app's simulator state. A coroutine, so resolving it costs no thread hand-off."""
    state: State = request.app.state.sim
    return state


Sim = Annotated[State, Depends(simulator)]


def redemption_not_found() -> JSONResponse:
    return problem(404, "redemption_not_found", "No such redemption.")
