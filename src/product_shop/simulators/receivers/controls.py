"""Test controls under /_simulator: set or clear a destination's fault, list what a destination
received (filtered by type, subject or order), count per destination, forget everything
received. No secret: tests and the demo only.

Fault bodies (one fault per destination; a new one replaces it):
    {"mode": "fail", "status": 503, "count": N}    the next N deliveries answer `status`
    {"mode": "hang", "seconds": S, "count": N}     sleep S, then answer `status` (default 503)
    {"mode": "slow", "seconds": S, "count": N}     sleep S, then record and answer as usual
    {"mode": "down", "status": 503}                every request answers `status`
`count` omitted: until DELETE /_simulator/{destination}/faults. Neither `fail` nor `hang`
records the event (the sender retries).

Plain functions (run on the thread pool), but for the one that reads a body."""

from __future__ import annotations

from typing import Annotated, Self

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from product_shop.simulators.faults import parse_body
from product_shop.simulators.receivers.common import Sim, unknown_destination
from product_shop.simulators.receivers.state import FaultMode, ReceiverFault

router = APIRouter(prefix="/_simulator")

MAX_FAULT_SECONDS = 600.0


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: FaultMode
    status: StrictInt = Field(default=503, ge=400, le=599)
    seconds: float = Field(default=0.0, ge=0, le=MAX_FAULT_SECONDS)
    count: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.mode in ("hang", "slow") and not self.seconds:
            raise ValueError(f"a {self.mode} fault needs seconds > 0")
        if self.mode == "down" and self.count is not None:
            raise ValueError("a down fault lasts until cleared: give no count")
        return self


@router.get("/received")
def summary(state: Sim) -> JSONResponse:
    """How many events each destination recorded, with its duplicates, refusals, failures."""
    return JSONResponse(state.summary())


@router.delete("/received", status_code=204)
def clear_received(state: Sim) -> Response:
    """Forget every recorded event, every webhook id seen (a resent event is new again) and the
    counters; sequences start from 1 again. Faults stay until cleared."""
    state.clear_received()
    return Response(status_code=204)


@router.get("/{destination}/received")
def received(
    destination: str,
    state: Sim,
    event_type: Annotated[str | None, Query(alias="type")] = None,
    subject: str | None = None,
    order_id: str | None = None,
) -> JSONResponse:
    """The events the destination recorded, in arrival order: `type` the full CloudEvents type
    or without `com.primoro.productshop.`; `subject` exact; `order_id` the data's `order_id` or
    the subject. The counters are the destination's, unfiltered."""
    inbox = state.inbox(destination)
    if inbox is None:
        return unknown_destination(destination)
    return JSONResponse(state.received(inbox, event_type, subject, order_id))


@router.post("/{destination}/faults")
async def set_fault(destination: str, request: Request, state: Sim) -> JSONResponse:
    inbox = state.inbox(destination)
    if inbox is None:
        return unknown_destination(destination)
    body = parse_body(FaultIn, await request.body(), "invalid_fault")
    if isinstance(body, JSONResponse):
        return body
    state.set_fault(inbox, ReceiverFault(body.mode, body.status, body.seconds, body.count))
    return JSONResponse({"destination": destination, "fault": state.fault_of(inbox)})


@router.get("/{destination}/faults")
def get_fault(destination: str, state: Sim) -> JSONResponse:
    """The destination's fault still in force (`count` left), or null: a test checks its fault
    was used up."""
    inbox = state.inbox(destination)
    if inbox is None:
        return unknown_destination(destination)
    return JSONResponse({"destination": destination, "fault": state.fault_of(inbox)})


@router.delete("/{destination}/faults", status_code=204)
def clear_fault(destination: str, state: Sim) -> Response:
    inbox = state.inbox(destination)
    if inbox is None:
        return unknown_destination(destination)
    state.set_fault(inbox, None)
    return Response(status_code=204)
