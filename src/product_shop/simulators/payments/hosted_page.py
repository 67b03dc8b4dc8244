"""The hosted payment page: POST {payment_url} with {"card_number": "..."} or
{"method": "apple_pay"} (an API client), or GET {payment_url} in a browser: a card form that
posts here and then sends the browser to the intent's `return_url`. Only this simulator ever
sees a card number. A payment schedules the signed callback (`callbacks`).

Test cards: 4242424242424242 and 5555555555554444 succeed; 4000000000000002 is declined;
4000000000009995 has insufficient funds; 4000002500003155 fails 3-D Secure; 4000000000000119 is a
processing error; 4000000000000077 succeeds slowly (`slow_seconds`); any other is declined."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from product_shop.simulators.payments import hosted_form
from product_shop.simulators.payments.callbacks import schedule_callbacks
from product_shop.simulators.payments.common import (
    Sim,
    after,
    before,
    intent_not_found,
    problem,
)
from product_shop.simulators.payments.state import WALLETS, State

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
CARD_NUMBER = re.compile(r"^\d{12,19}$")

router = APIRouter()


class PayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_number: str | None = Field(default=None, pattern=r"^\d{12,19}$")
    method: str = "card"
    wallet_token: str | None = None


def _scheme(card_number: str) -> str:
    return {"4": "visa", "5": "mastercard", "3": "amex"}.get(card_number[0], "unknown")


async def _take(
    state: State, intent_id: str, method: str, card_number: str | None
) -> dict[str, Any] | JSONResponse:
    """One payment attempt on an intent: its public document, or the refusal. A declined
    attempt leaves the page open for another card, as real ones do."""
    if method not in {"card", *WALLETS}:
        return problem(422, "method_not_supported", "Only card and wallet payments are accepted.")
    if method == "card":
        if card_number is None:
            return problem(422, "card_number_required", "Enter a card number.")
        outcome = CARD_OUTCOMES.get(card_number)
        if outcome is None:
            outcome = ("failed", "card_declined", "The card was declined.")
        scheme, last4 = _scheme(card_number), card_number[-4:]
        if card_number == SLOW_CARD:
            await asyncio.sleep(state.config.slow_seconds)
    else:
        outcome, scheme, last4 = ("captured", None, None), "visa", "4242"
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return intent_not_found()
        # A cancelled or captured intent takes no more money.
        if intent.status not in ("requires_payment", "failed"):
            return problem(409, "intent_closed", f"This payment is already {intent.status}.")
        intent.status, intent.failure_code, intent.failure_message = outcome
        intent.method, intent.card_scheme, intent.card_last4 = method, scheme, last4
        if intent.status == "captured":
            state.record_capture(intent)
        document = intent.public()
    schedule_callbacks(state, document)
    return document


@router.post("/pay/{intent_id}")
async def pay(intent_id: str, body: PayIn, state: Sim) -> JSONResponse:
    """The hosted payment page, as an API client drives it (JSON)."""
    stop, late = await before(state, "pay")
    if stop:
        return stop
    taken = await _take(state, intent_id, body.method, body.card_number)
    if isinstance(taken, JSONResponse):
        return taken
    await after(late)
    return JSONResponse(taken, status_code=200 if taken["status"] == "captured" else 402)


@router.get("/pay/{intent_id}", response_model=None)
async def payment_page(intent_id: str, state: Sim) -> Response:
    """The hosted payment page a browser opens: a card form, on Integrated Payments' origin."""
    with state.lock:
        intent = state.intents.get(intent_id)
        if intent is None:
            return hosted_form.unknown_page()
        if intent.status not in ("requires_payment", "failed"):
            return hosted_form.closed_page(
                "Payment closed", f"This payment is already {intent.status}.", 409
            )
        return hosted_form.card_page(intent)


@router.post("/pay/{intent_id}/card", response_model=None)
async def pay_by_form(intent_id: str, request: Request, state: Sim) -> Response:
    """The card form's submission: the payment, then the browser back to the merchant's
    `return_url` (given when the intent was created), or a page saying it is done."""
    form = await request.form()
    card_number = str(form.get("card_number", "")).replace(" ", "").strip()
    with state.lock:
        intent = state.intents.get(intent_id)
    if intent is None:
        return hosted_form.unknown_page()
    if not CARD_NUMBER.match(card_number):
        return hosted_form.card_page(intent, "Enter the long number on the front of your card.")
    stop, late = await before(state, "pay")
    if stop:
        return stop
    taken = await _take(state, intent_id, "card", card_number)
    await after(late)
    if isinstance(taken, JSONResponse):
        return hosted_form.closed_page("Payment closed", "This payment can no longer be made.", 409)
    if taken["status"] != "captured":
        return hosted_form.card_page(intent, taken["failure_message"], status=402)
    if intent.return_url is None:
        return hosted_form.closed_page("Payment received", "You can return to the app.", 200)
    return RedirectResponse(hosted_form.back_to(intent), status_code=303)
