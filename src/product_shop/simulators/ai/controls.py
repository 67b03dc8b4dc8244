"""Test controls under /_simulator: change the failure rate, latency and malformed answers,
queue one-off faults (operation `suggest`: delay, error, delay_after), list the requests received,
reset. No API key: tests and the demo only. Plain functions (run on the thread pool)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from product_shop.simulators.ai.common import Sim
from product_shop.simulators.ai.state import Malformed
from product_shop.simulators.faults import Fault

router = APIRouter(prefix="/_simulator")


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Literal["suggest"] = "suggest"
    mode: Literal["delay", "error", "delay_after"]
    seconds: float = Field(default=0.0, ge=0)
    status: int = Field(default=503, ge=400, le=599)
    times: int = Field(default=1, ge=1)


class ConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failure_rate: float | None = Field(default=None, ge=0, le=1)
    latency_seconds: float | None = Field(default=None, ge=0, le=60)
    malformed: Malformed | None = None


@router.get("/config")
def get_config(state: Sim) -> JSONResponse:
    return JSONResponse(state.public_config())


@router.post("/config")
def set_config(body: ConfigIn, state: Sim) -> JSONResponse:
    """Change only the fields given (`"malformed": null` makes answers the contract's again)."""
    with state.lock:
        for name in body.model_fields_set:
            value = getattr(body, name)
            if value is None and name != "malformed":
                continue
            setattr(state.config, name, value)
    return JSONResponse(state.public_config())


@router.post("/faults", status_code=204)
def add_fault(body: FaultIn, state: Sim) -> None:
    with state.lock:
        state.faults[body.operation] = Fault(body.mode, body.seconds, body.status, body.times)


@router.get("/faults")
def pending_faults(state: Sim) -> JSONResponse:
    """What is still queued: a test checks its faults were all used."""
    with state.lock:
        return JSONResponse(
            {
                "faults": {
                    operation: {"mode": f.mode, "times": f.times}
                    for operation, f in state.faults.items()
                }
            }
        )


@router.get("/requests")
def list_requests(state: Sim) -> JSONResponse:
    """The requests to /v1/suggestions, oldest first (at most `max_recorded`), and how many
    arrived in all: each with its body as sent, whether its key was right (never the key) and
    its content type, Idempotency-Key and user agent."""
    with state.lock:
        return JSONResponse({"received": state.received, "requests": list(state.requests)})


@router.post("/reset", status_code=204)
def reset(state: Sim) -> None:
    """The configuration as at start; faults and recorded requests gone."""
    state.reset()
