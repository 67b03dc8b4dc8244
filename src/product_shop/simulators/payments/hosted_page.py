"""The hosted payment page: POST {payment_url} with {"card_number": "..."} or
{"method": "apple_pay"}. Only this simulator ever sees a card number. A payment schedules the
signed callback (`callbacks`).

Test cards: 4242424242424242 and 5555555555554444 succeed; 4000000000000002 is declined;
4000000000009995 has insufficient funds; 4000002500003155 fails 3-D Secure; 4000000000000119 is a
processing error; 4000000000000077 succeeds slowly (`slow_seconds`); any other is declined."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from product_shop.simulators.payments.callbacks import schedule_callbacks
from product_shop.simulators.payments.common import (
    Sim,
    after,
    before,
    intent_not_found,
    problem,
)
from product_shop.simulators.payments.state import WALLETS

CARD_OUTCOMES: dict[str, tuple[str, str | None, str | None]] = {
    # card number: (state, failure_code, failure_message)
    "4242424242424242": ("captured", None, None),
    "5555555555554444": ("captured", None, None),
    "4000000000000077": ("captured", None, None),
    "4000000000000002": ("failed", "card_declined", "The card was declined."),
    "4000000000009995": ("failed", "insufficient_funds", "The card has insufficient funds."),
    "4000002500003155": (
        "failed",
        "authentication_failed",
        "3-D Secure authentication was required and failed.",
    ),
    "4000000000000119": (
        "failed",
        "processing_error",
        "The card issuer could not process the payment.",
    ),
}
SLOW_CARD = "4000000000000077"

router = APIRouter()


class PayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_number: str | None = Field(default=None, pattern=r"^\d{12,19}$")
    method: str = "card"
    wallet_token: str | None = None


def _scheme(card_number: str) -> str:
    return {"4": "visa", "5": "mastercard", "3": "amex"}.get(card_number[0], "unknown")


@router.post("/pay/{intent_id}")
async def pay(intent_id: str, body: PayIn, state: Sim) -> JSONResponse:
    """The hosted payment page, as the patient app drives it."""
    stop, late = await before(state, "pay")
    if stop:
        return stop
    if body.method not in {"card", *WALLETS}:
        return problem(422, "method_not_supported", "Only card and wallet payments are accepted.")
    if body.method == "card":
        if body.card_number is None:
            return problem(422, "card_number_required", "Enter a card number.")
        outcome = CARD_OUTCOMES.get(body.card_number)
        if outcome is None:
            outcome = ("failed", "card_declined", "The card was declined.")
        scheme, last4 = _scheme(body.card_number), body.card_number[-4:]
        if body.card_number == SLOW_CARD:
            await asyncio.sleep(state.config.slow_seconds)
    else:
        outcome, scheme, last4 = ("captured", None, None), "visa", "4242"
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return intent_not_found()
        # A declined attempt leaves the hosted page open for another card, as real ones do;
        # a cancelled or captured one takes no more money.
        if intent.status not in ("requires_payment", "failed"):
            return problem(409, "intent_closed", f"This payment is already {intent.status}.")
        intent.status, intent.failure_code, intent.failure_message = outcome
        intent.method, intent.card_scheme, intent.card_last4 = body.method, scheme, last4
        if intent.status == "captured":
            state.record_capture(intent)
        document = intent.public()
    schedule_callbacks(state, document)
    await after(late)
    status = 200 if document["status"] == "captured" else 402
    return JSONResponse(document, status_code=status)
