"""What every route shares: the state as a dependency, problem bodies and fault injection."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from product_shop.simulators.faults import Fault, after, before, problem, unauthorised
from product_shop.simulators.payments.state import State

__all__ = [
    "Fault",
    "Sim",
    "after",
    "before",
    "intent_not_found",
    "problem",
    "simulator",
    "unauthorised",
]


async def simulator(request: Request) -> State:
    """The app's simulator state. A coroutine, so resolving it costs no thread hand-off."""
    state: State = request.app.state.sim
    return state


Sim = Annotated[State, Depends(simulator)]


def intent_not_found() -> JSONResponse:
    return problem(404, "intent_not_found", "No such payment intent.")
