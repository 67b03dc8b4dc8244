"""Test controls under /_simulator: queue faults (delays, errors) per operation, inspect and
alter intents, force a capture, resend a callback. No API key: tests and the demo only.

These are plain functions (run on the thread pool): a resent callback blocks while it is sent."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from product_shop.simulators.payments.callbacks import deliver
from product_shop.simulators.payments.common import Sim, intent_not_found
from product_shop.simulators.payments.state import Fault

router = APIRouter(prefix="/_simulator")


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Literal[
        "create_intent",
        "get_payment",
        "cancel_intent",
        "set_order_reference",
        "pay",
        "refund",
        "get_refund",
    ]
    mode: Literal["delay", "error", "delay_after"]
    seconds: float = 0.0
    status: int = 503
    times: int = Field(default=1, ge=1)


@router.post("/faults", status_code=204)
def add_fault(body: FaultIn, state: Sim) -> None:
    with state.lock:
        state.faults[body.operation] = Fault(body.mode, body.seconds, body.status, body.times)


@router.post("/reset", status_code=204)
def reset_faults(state: Sim) -> None:
    with state.lock:
        state.faults.clear()


@router.get("/intents/{intent_id}")
def inspect(intent_id: str, state: Sim) -> JSONResponse:
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return intent_not_found()
        return JSONResponse(
            {
                **intent.public(),
                "capture_count": intent.capture_count,
                "callbacks_sent": intent.callbacks_sent,
                "return_url": intent.return_url,
            }
        )


@router.patch("/intents/{intent_id}")
def tamper(intent_id: str, body: dict[str, int], state: Sim) -> JSONResponse:
    """Test control: make the gateway report another amount (a mismatched capture)."""
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return intent_not_found()
        intent.amount_minor = int(body["amount_minor"])
        return JSONResponse(intent.public())


@router.post("/intents/{intent_id}/capture")
def force_capture(intent_id: str, state: Sim) -> JSONResponse:
    """Test control: capture the intent whatever its state, as a gateway race would (a
    payment authorised just before the cancellation arrived)."""
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return intent_not_found()
        intent.status, intent.failure_code, intent.failure_message = "captured", None, None
        intent.method, intent.card_scheme, intent.card_last4 = "card", "visa", "4242"
        state.record_capture(intent)
        return JSONResponse(intent.public())


@router.post("/callbacks/{intent_id}", status_code=202)
def resend_callback(intent_id: str, state: Sim) -> None:
    """Send the intent's callback again (as a gateway's retry would)."""
    with state.lock:
        intent = state.intents.get(intent_id)
        document = intent.public() if intent else None
    if document is not None:
        deliver(state, document, copies=1)


@router.get("/refunds")
def list_refunds(transaction_ref: str, state: Sim) -> JSONResponse:
    """Test control: every refund made of a transaction (to count them)."""
    with state.lock:
        found = [r for r in state.refunds.values() if r["transaction_ref"] == transaction_ref]
    return JSONResponse({"refunds": found})


@router.get("/intents")
def list_intents(merchant_reference: str, state: Sim) -> JSONResponse:
    """Test control: every intent opened under a merchant reference (a checkout id)."""
    with state.lock:
        found = [
            {**intent.public(), "capture_count": intent.capture_count}
            for intent in state.intents.values()
            if intent.merchant_reference == merchant_reference
        ]
    return JSONResponse({"intents": found})
