"""Test controls under /_simulator: queue faults (delays, errors; per operation: `submit`,
`get`, `cancel`) and refusals (submissions only), move a shipment
on or stop it with an exception, hold callbacks and release them reordered or twice, change the
callback URL, inspect shipments, reset. No API key: tests and the demo only.

These are plain functions (run on the thread pool), as the payments simulator's are; none waits
for a callback to be delivered."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from product_shop.simulators.suppliers import callbacks
from product_shop.simulators.suppliers.common import Sim, problem, shipment_not_found
from product_shop.simulators.suppliers.lifecycle import ShipmentFinal, advance, raise_exception
from product_shop.simulators.suppliers.state import (
    ExceptionReasonCode,
    Fault,
    Refusal,
    RefusalCode,
    ShipmentRecord,
    State,
)

router = APIRouter(prefix="/_simulator")


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Literal["submit", "get", "cancel"]
    mode: Literal["delay", "error", "delay_after"]
    seconds: float = Field(default=0.0, ge=0)
    status: int = Field(default=503, ge=400, le=599)
    times: int = Field(default=1, ge=1)


class RefusalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: RefusalCode
    times: int = Field(default=1, ge=1)
    reference: str | None = None


class ConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    callback_url: str | None = None
    auto_advance: bool | None = None
    duplicate_rate: float | None = Field(default=None, ge=0, le=1)


class ExceptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: ExceptionReasonCode


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order: Literal["as_sent", "reverse"] = "as_sent"
    duplicate: bool = False


def _final(shipment: ShipmentRecord) -> JSONResponse:
    return problem(409, "shipment_final", f"The shipment is {shipment.status}: it moves no more.")


def _config(state: State) -> dict[str, Any]:
    config = state.config
    return {
        "callback_url": config.callback_url,
        "auto_advance": config.auto_advance,
        "duplicate_rate": config.duplicate_rate,
        "dispatch_after_seconds": config.dispatch_after_seconds,
        "in_transit_after_seconds": config.in_transit_after_seconds,
        "deliver_after_seconds": config.deliver_after_seconds,
        "tracking_base_url": config.tracking_base_url,
    }


@router.post("/faults", status_code=204)
def add_fault(body: FaultIn, state: Sim) -> None:
    with state.lock:
        state.faults[body.operation] = Fault(body.mode, body.seconds, body.status, body.times)


@router.post("/refusals", status_code=204)
def add_refusal(body: RefusalIn, state: Sim) -> None:
    """Refuse the next `times` new submissions (for `reference`, or any) with `code`."""
    with state.lock:
        state.refusals.append(Refusal(body.code, body.times, body.reference))


@router.get("/faults")
def pending_faults(state: Sim) -> JSONResponse:
    """What is still queued: a test checks its faults and refusals were all used."""
    with state.lock:
        return JSONResponse(
            {
                "faults": {
                    operation: {"mode": f.mode, "times": f.times}
                    for operation, f in state.faults.items()
                },
                "refusals": [
                    {"code": r.code, "times": r.times, "reference": r.reference}
                    for r in state.refusals
                ],
            }
        )


@router.post("/reset", status_code=204)
def reset(state: Sim) -> None:
    """Faults, refusals, held and queued callbacks gone; callback URL, auto_advance and
    duplicate_rate as configured at start. Shipments are kept."""
    with state.lock:
        state.faults.clear()
        state.refusals.clear()
        callbacks.forget_pending(state)
        if state.initial is not None:
            state.config.callback_url = state.initial.callback_url
            state.config.auto_advance = state.initial.auto_advance
            state.config.duplicate_rate = state.initial.duplicate_rate


@router.get("/config")
def get_config(state: Sim) -> JSONResponse:
    with state.lock:
        return JSONResponse(_config(state))


@router.post("/config")
def set_config(body: ConfigIn, state: Sim) -> JSONResponse:
    """Change only the fields given (`"callback_url": null` stops callbacks)."""
    with state.lock:
        for name in body.model_fields_set:
            value = getattr(body, name)
            if value is None and name != "callback_url":
                continue
            setattr(state.config, name, value)
        return JSONResponse(_config(state))


@router.get("/shipments")
def list_shipments(state: Sim, reference: str | None = None) -> JSONResponse:
    with state.lock:
        found = [
            state.inspect(s)
            for s in state.shipments.values()
            if reference is None or s.reference == reference
        ]
        return JSONResponse({"shipments": found})


@router.get("/shipments/{shipment_id}")
def inspect(shipment_id: str, state: Sim) -> JSONResponse:
    with state.lock:
        shipment = state.shipments.get(shipment_id)
        if shipment is None:
            return shipment_not_found()
        return JSONResponse(state.inspect(shipment))


@router.post("/shipments/{shipment_id}/advance")
def advance_now(shipment_id: str, state: Sim) -> JSONResponse:
    """Move the shipment to its next status now (its callback follows); the update."""
    with state.lock:
        shipment = state.shipments.get(shipment_id)
        if shipment is None:
            return shipment_not_found()
        try:
            advance(state, shipment)
        except ShipmentFinal:
            return _final(shipment)
        return JSONResponse(shipment.public())


@router.post("/shipments/{shipment_id}/exception")
def exception(shipment_id: str, body: ExceptionIn, state: Sim) -> JSONResponse:
    """Stop the shipment with an exception (its callback follows); the update."""
    with state.lock:
        shipment = state.shipments.get(shipment_id)
        if shipment is None:
            return shipment_not_found()
        try:
            raise_exception(state, shipment, body.reason)
        except ShipmentFinal:
            return _final(shipment)
        return JSONResponse(shipment.public())


@router.post("/callbacks/hold", status_code=204)
def hold_callbacks(state: Sim) -> None:
    """Keep every callback from now on until released."""
    callbacks.hold(state)


@router.post("/callbacks/release")
def release_callbacks(state: Sim, body: ReleaseIn | None = None) -> JSONResponse:
    """Stop holding and send what was held: as sent or reversed, once or twice over
    (a, b, a, b). Returns how many deliveries were queued."""
    body = body or ReleaseIn()
    return JSONResponse({"released": callbacks.release(state, body.order, body.duplicate)})
