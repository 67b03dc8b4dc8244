"""What every route shares: the state as a dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from product_shop.simulators.appointments.state import State

__all__ = ["Sim", "simulator"]


async def simulator(request: Request) -> State:
    """The app's simulator state. A coroutine, so resolving it costs no thread hand-off."""
    state: State = request.app.state.sim
    return state


Sim = Annotated[State, Depends(simulator)]
