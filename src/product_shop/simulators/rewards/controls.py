"""Test controls under /_simulator: queue faults (delays, errors; per operation: `account`,
`redeem`, `reverse`, `get_redemption`), change the configuration (callback URL, auto-confirm,
duplicate rate, practices with rewards, default balance), set a balance, inspect redemptions and
reversals, confirm a redemption now, reset. No API key: tests and the demo only.

These are plain functions (run on the thread pool); only `confirm` waits for its callback's
deliveries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from product_shop.simulators.rewards import callbacks
from product_shop.simulators.rewards.common import Sim, redemption_not_found
from product_shop.simulators.rewards.state import Fault, State

router = APIRouter(prefix="/_simulator")


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Literal["account", "redeem", "reverse", "get_redemption"]
    mode: Literal["delay", "error", "delay_after"]
    seconds: float = Field(default=0.0, ge=0)
    status: int = Field(default=503, ge=400, le=599)
    times: int = Field(default=1, ge=1)


class ConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    callback_url: str | None = None
    auto_confirm: bool | None = None
    duplicate_callback_rate: float | None = Field(default=None, ge=0, le=1)
    enabled_practices: dict[str, Annotated[StrictInt, Field(ge=1)]] | None = None
    default_balance_points: StrictInt | None = Field(default=None, ge=0)


class BalanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    practice_id: str = Field(min_length=1, max_length=64)
    balance_points: StrictInt = Field(ge=0)


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    copies: int = Field(default=1, ge=1, le=10)


def _config(state: State) -> dict[str, Any]:
    config = state.config
    return {
        "callback_url": config.callback_url,
        "auto_confirm": config.auto_confirm,
        "confirm_delay_seconds": config.confirm_delay_seconds,
        "duplicate_callback_rate": config.duplicate_callback_rate,
        "enabled_practices": dict(config.enabled_practices),
        "default_balance_points": config.default_balance_points,
    }


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


@router.post("/reset", status_code=204)
def reset(state: Sim) -> None:
    """Faults gone; confirmations and callbacks not yet sent dropped (their redemptions stay as
    they are); the configuration as at start. Accounts, redemptions and reversals are kept."""
    with state.lock:
        state.faults.clear()
        state.generation += 1
        initial = state.initial
        if initial is not None:
            state.config.callback_url = initial.callback_url
            state.config.auto_confirm = initial.auto_confirm
            state.config.duplicate_callback_rate = initial.duplicate_callback_rate
            state.config.enabled_practices = dict(initial.enabled_practices)
            state.config.default_balance_points = initial.default_balance_points


@router.get("/config")
def get_config(state: Sim) -> JSONResponse:
    with state.lock:
        return JSONResponse(_config(state))


@router.post("/config")
def set_config(body: ConfigIn, state: Sim) -> JSONResponse:
    """Change only the fields given (`"callback_url": null` stops callbacks;
    `enabled_practices` replaces the whole map)."""
    with state.lock:
        for name in body.model_fields_set:
            value = getattr(body, name)
            if value is None and name != "callback_url":
                continue
            setattr(state.config, name, dict(value) if isinstance(value, dict) else value)
        return JSONResponse(_config(state))


@router.put("/accounts/{patient_id}")
def set_balance(patient_id: str, body: BalanceIn, state: Sim) -> JSONResponse:
    """Set a patient's balance at a practice; the account as the API shows it (a practice
    without rewards still shows 0 points, until it has rewards)."""
    with state.lock:
        state.accounts[(patient_id, body.practice_id)] = body.balance_points
        return JSONResponse(state.account(patient_id, body.practice_id))


@router.get("/redemptions")
def list_redemptions(state: Sim, reference: str | None = None) -> JSONResponse:
    """The redemptions made (under our `reference`, or all), in the order they were made."""
    with state.lock:
        found = [
            state.inspect(r)
            for r in state.redemptions.values()
            if reference is None or r.reference == reference
        ]
        return JSONResponse({"redemptions": found})


@router.get("/redemptions/{redemption_ref}")
def inspect(redemption_ref: str, state: Sim) -> JSONResponse:
    with state.lock:
        redemption = state.redemptions.get(redemption_ref)
        if redemption is None:
            return redemption_not_found()
        return JSONResponse(state.inspect(redemption))


@router.post("/redemptions/{redemption_ref}/confirm")
def confirm(redemption_ref: str, state: Sim, body: ConfirmIn | None = None) -> JSONResponse:
    """Confirm the redemption now (when auto_confirm is off; already confirmed: the same
    confirmation) and send its callback `copies` times under one event id, waiting for the
    deliveries. Answers the redemption and how many copies the receiver answered."""
    body = body or ConfirmIn()
    delivered = callbacks.confirm_now(state, redemption_ref, body.copies)
    if delivered is None:
        return redemption_not_found()
    with state.lock:
        redemption = state.inspect(state.redemptions[redemption_ref])
    return JSONResponse({"redemption": redemption, "delivered": delivered})


@router.get("/reversals")
def list_reversals(state: Sim, redemption_ref: str | None = None) -> JSONResponse:
    """The reversals made (of one redemption, or all), in the order they were made."""
    with state.lock:
        found = [
            state.inspect_reversal(r)
            for r in state.reversals.values()
            if redemption_ref is None or r.redemption_ref == redemption_ref
        ]
        return JSONResponse({"reversals": found})
