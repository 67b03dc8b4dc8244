"""What every route shares: the state as a dependency and problem bodies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from product_shop.simulators.faults import problem
from product_shop.simulators.receivers.state import State

__all__ = ["Sim", "problem", "simulator", "unknown_destination"]


async def simulator(request: Request) -> State:
    """The app's simulator state. A coroutine, so resolving it costs no thread hand-off."""
    state: State = request.app.state.sim
    return state


Sim = Annotated[State, Depends(simulator)]


def unknown_destination(destination: str) -> JSONResponse:
    return problem(404, "unknown_destination", f"No receiver for destination {destination!r}.")
