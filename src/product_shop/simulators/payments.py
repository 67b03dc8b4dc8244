"""Integrated Payments simulator (DNA Payments behind it).

Contract (what `integrations.payments_http` speaks):
- POST /v1/payment-intents               (Idempotency-Key) -> intent with `payment_url`
- GET  /v1/payment-intents/{id}          -> status, transaction reference, card scheme, last four
- POST /v1/payment-intents/{id}/cancel   -> cancelled (idempotent); 409 `intent_captured` once paid
- PUT  /v1/payment-intents/{id}/order-reference   {"order_id"}
- POST /v1/refunds                       (Idempotency-Key)
- GET  /v1/refund-reasons
The hosted payment page: POST {payment_url} with {"card_number": "..."} or {"method": "apple_pay"}.
Only this simulator ever sees a card number. After a payment it sends a signed callback
(Standard Webhooks) to the configured URL, sometimes twice, as real gateways do.

Test cards: 4242424242424242 and 5555555555554444 succeed; 4000000000000002 is declined;
4000000000009995 has insufficient funds; 4000002500003155 fails 3-D Secure; 4000000000000119 is a
processing error; 4000000000000077 succeeds slowly (`slow_seconds`).

Test controls under /_simulator: inject faults (delays, errors) per operation, inspect intents.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from product_shop.core.signing import sign
from product_shop.logging import get_logger

log = get_logger("product_shop.simulators.payments")

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
WALLETS = frozenset({"apple_pay", "google_pay"})
REFUND_REASONS = (
    ("customer_request", "The patient asked for a refund (distance selling / change of mind)."),
    ("damaged_item", "The item arrived damaged or faulty."),
    ("item_not_received", "The item did not arrive."),
    ("wrong_item", "The wrong item was supplied."),
    ("clinical_advice", "The clinician advised against the product after purchase."),
    ("duplicate_payment", "The patient was charged twice."),
    ("order_error", "The order was placed in error."),
)


@dataclass
class SimulatorConfig:
    api_key: str = "demo-payments-api-key"
    # core.signing.DEMO_WEBHOOK_SECRET, the API's demo default (a Standard Webhooks secret).
    webhook_secret: str = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1ub3QtZm9yLXByb2Q="  # noqa: S105
    callback_url: str | None = None
    public_url: str = "http://127.0.0.1:0"
    duplicate_callback_rate: float = 0.3
    callback_delay_seconds: float = 0.05
    slow_seconds: float = 3.0


@dataclass
class Fault:
    mode: Literal["delay", "error", "delay_after"]
    seconds: float = 0.0
    status: int = 503
    times: int = 1


@dataclass
class Intent:
    intent_id: str
    amount_minor: int
    currency: str
    merchant_reference: str
    created_at: str
    status: str = "requires_payment"
    transaction_ref: str | None = None
    method: str | None = None
    card_scheme: str | None = None
    card_last4: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    order_reference: str | None = None
    capture_count: int = 0
    refunded_minor: int = 0
    callbacks_sent: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "intent_id": self.intent_id,
            "status": self.status,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "merchant_reference": self.merchant_reference,
            "transaction_ref": self.transaction_ref,
            "method": self.method,
            "card_scheme": self.card_scheme,
            "card_last4": self.card_last4,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "order_reference": self.order_reference,
            "refunded_minor": self.refunded_minor,
            "created_at": self.created_at,
        }


@dataclass
class State:
    config: SimulatorConfig
    intents: dict[str, Intent] = field(default_factory=dict)
    by_transaction: dict[str, str] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (hash, result)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=random.Random)


class IntentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_minor: int = Field(gt=0, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    merchant_reference: str = Field(min_length=1, max_length=64)
    payment_methods: list[str] = Field(default_factory=lambda: ["card"])
    capture: Literal["immediate"] = "immediate"


class PayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_number: str | None = Field(default=None, pattern=r"^\d{12,19}$")
    method: str = "card"
    wallet_token: str | None = None


class OrderReferenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(min_length=1, max_length=64)


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transaction_ref: str
    amount_minor: int = Field(gt=0, strict=True)
    currency: str
    reason_code: str
    initiated_by: str = Field(min_length=1)


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Literal[
        "create_intent", "get_payment", "cancel_intent", "set_order_reference", "pay", "refund"
    ]
    mode: Literal["delay", "error", "delay_after"]
    seconds: float = 0.0
    status: int = 503
    times: int = Field(default=1, ge=1)


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _scheme(card_number: str) -> str:
    return {"4": "visa", "5": "mastercard", "3": "amex"}.get(card_number[0], "unknown")


def create_payments_simulator(config: SimulatorConfig | None = None) -> FastAPI:
    state = State(config=config or SimulatorConfig())
    app = FastAPI(title="Integrated Payments simulator", docs_url=None, redoc_url=None)
    app.state.sim = state

    def authorised(authorization: str | None) -> bool:
        return authorization == f"Bearer {state.config.api_key}"

    def fault(operation: str) -> Fault | None:
        with state.lock:
            found = state.faults.get(operation)
            if found is None:
                return None
            found.times -= 1
            if found.times <= 0:
                del state.faults[operation]
            return found

    # The gateway's own routes are coroutines (cheap under load: no thread hand-off); their
    # simulated delays sleep without blocking other requests.
    async def before(operation: str) -> tuple[JSONResponse | None, Fault | None]:
        found = fault(operation)
        if found is None:
            return None, None
        if found.mode == "delay":
            await asyncio.sleep(found.seconds)
        if found.mode == "error":
            return _problem(found.status, "simulated_failure", "Simulated failure."), None
        return None, found if found.mode == "delay_after" else None

    async def after(found: Fault | None) -> None:
        if found is not None:
            await asyncio.sleep(found.seconds)

    def idempotent(key: str | None, body: dict[str, Any]) -> tuple[str | None, str | None]:
        if key is None:
            return None, None
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with state.lock:
            seen = state.idempotency.get(key)
        if seen is None:
            return digest, None
        if seen[0] != digest:
            return digest, "mismatch"
        return digest, seen[1]

    @app.post("/v1/payment-intents", status_code=201)
    async def create_intent(
        body: IntentIn,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> JSONResponse:
        if not authorised(authorization):
            return _problem(401, "unauthorised", "Bad API key.")
        refused = set(body.payment_methods) - {"card", *WALLETS}
        if refused:
            return _problem(
                422, "method_not_supported", f"Not accepted: {', '.join(sorted(refused))}."
            )
        stop, late = await before("create_intent")
        if stop:
            return stop
        with state.lock:  # re-entrant: the key check and the store are one atomic step
            digest, seen = idempotent(idempotency_key, body.model_dump())
            if seen == "mismatch":
                return _problem(
                    422, "idempotency_key_reused", "Idempotency-Key reused with another body."
                )
            if seen is not None:
                intent = state.intents[seen]
            else:
                intent_id = "pi_" + secrets.token_hex(12)
                intent = Intent(
                    intent_id=intent_id,
                    amount_minor=body.amount_minor,
                    currency=body.currency,
                    merchant_reference=body.merchant_reference,
                    created_at=datetime.now(UTC).isoformat(),
                )
                state.intents[intent_id] = intent
                if idempotency_key and digest:
                    state.idempotency[idempotency_key] = (digest, intent_id)
            document = {
                **intent.public(),
                "payment_url": f"{state.config.public_url}/pay/{intent.intent_id}",
            }
        await after(late)
        return JSONResponse(document, status_code=201)

    @app.get("/v1/payment-intents/{intent_id}")
    async def get_intent(
        intent_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        if not authorised(authorization):
            return _problem(401, "unauthorised", "Bad API key.")
        stop, late = await before("get_payment")
        if stop:
            return stop
        with state.lock:
            intent = state.intents.get(intent_id)
            document = intent.public() if intent else None
        await after(late)
        if document is None:
            return _problem(404, "intent_not_found", "No such payment intent.")
        return JSONResponse(document)

    @app.post("/v1/payment-intents/{intent_id}/cancel")
    async def cancel_intent(
        intent_id: str, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        """Close an unpaid intent: its hosted page refuses every later payment, as a real
        gateway's does. Idempotent; a captured intent cannot be cancelled (refund it instead)."""
        if not authorised(authorization):
            return _problem(401, "unauthorised", "Bad API key.")
        stop, late = await before("cancel_intent")
        if stop:
            return stop
        with state.lock:
            intent = state.intents.get(intent_id)
            if intent is None:
                return _problem(404, "intent_not_found", "No such payment intent.")
            if intent.status == "captured":
                return _problem(
                    409, "intent_captured", "This payment was captured; refund it instead."
                )
            intent.status = "cancelled"
            document = intent.public()
        await after(late)
        return JSONResponse(document)

    @app.put("/v1/payment-intents/{intent_id}/order-reference")
    async def set_order_reference(
        intent_id: str, body: OrderReferenceIn, authorization: str | None = Header(default=None)
    ) -> JSONResponse:
        if not authorised(authorization):
            return _problem(401, "unauthorised", "Bad API key.")
        stop, late = await before("set_order_reference")
        if stop:
            return stop
        with state.lock:
            intent = state.intents.get(intent_id)
            if intent is None:
                return _problem(404, "intent_not_found", "No such payment intent.")
            if intent.status != "captured":
                return _problem(
                    409, "not_captured", "Only a captured payment takes an order reference."
                )
            if intent.order_reference not in (None, body.order_id):
                return _problem(
                    409, "order_reference_set", "A different order reference is already set."
                )
            intent.order_reference = body.order_id
            document = intent.public()
        await after(late)
        return JSONResponse(document)

    @app.post("/pay/{intent_id}")
    async def pay(intent_id: str, body: PayIn, request: Request) -> JSONResponse:
        """The hosted payment page, as the patient app drives it."""
        stop, late = await before("pay")
        if stop:
            return stop
        if body.method not in {"card", *WALLETS}:
            return _problem(
                422, "method_not_supported", "Only card and wallet payments are accepted."
            )
        if body.method == "card":
            if body.card_number is None:
                return _problem(422, "card_number_required", "Enter a card number.")
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
                return _problem(404, "intent_not_found", "No such payment intent.")
            # A declined attempt leaves the hosted page open for another card, as real ones do;
            # a cancelled or captured one takes no more money.
            if intent.status not in ("requires_payment", "failed"):
                return _problem(409, "intent_closed", f"This payment is already {intent.status}.")
            intent.status, intent.failure_code, intent.failure_message = outcome
            intent.method, intent.card_scheme, intent.card_last4 = body.method, scheme, last4
            if intent.status == "captured":
                intent.capture_count += 1
                intent.transaction_ref = "DNA-" + secrets.token_hex(8).upper()
                state.by_transaction[intent.transaction_ref] = intent.intent_id
            document = intent.public()
        _schedule_callbacks(state, document)
        await after(late)
        status = 200 if document["status"] == "captured" else 402
        return JSONResponse(document, status_code=status)

    @app.get("/v1/refund-reasons")
    async def refund_reasons(authorization: str | None = Header(default=None)) -> JSONResponse:
        if not authorised(authorization):
            return _problem(401, "unauthorised", "Bad API key.")
        return JSONResponse({"reasons": [{"code": c, "description": d} for c, d in REFUND_REASONS]})

    @app.post("/v1/refunds", status_code=201)
    async def refund(
        body: RefundIn,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> JSONResponse:
        if not authorised(authorization):
            return _problem(401, "unauthorised", "Bad API key.")
        if body.reason_code not in {c for c, _ in REFUND_REASONS}:
            return _problem(
                422, "unknown_reason_code", "Use a reason code from /v1/refund-reasons."
            )
        stop, late = await before("refund")
        if stop:
            return stop
        with state.lock:  # re-entrant: the key check and the store are one atomic step
            digest, seen = idempotent(idempotency_key, body.model_dump())
            if seen == "mismatch":
                return _problem(
                    422, "idempotency_key_reused", "Idempotency-Key reused with another body."
                )
            if seen is not None:
                document = state.refunds[seen]
            else:
                intent_id = state.by_transaction.get(body.transaction_ref)
                intent = state.intents.get(intent_id) if intent_id else None
                if intent is None:
                    return _problem(404, "transaction_not_found", "No such transaction.")
                if body.currency != intent.currency:
                    return _problem(422, "currency_mismatch", "Refund in the payment's currency.")
                if intent.refunded_minor + body.amount_minor > intent.amount_minor:
                    return _problem(
                        422, "refund_exceeds_capture", "Refunds would exceed the captured amount."
                    )
                intent.refunded_minor += body.amount_minor
                refund_ref = "DNA-RF-" + secrets.token_hex(6).upper()
                document = {
                    "refund_ref": refund_ref,
                    "transaction_ref": body.transaction_ref,
                    "amount_minor": body.amount_minor,
                    "currency": body.currency,
                    "reason_code": body.reason_code,
                    "status": "succeeded",
                }
                state.refunds[refund_ref] = document
                if idempotency_key and digest:
                    state.idempotency[idempotency_key] = (digest, refund_ref)
        await after(late)
        return JSONResponse(document, status_code=201)

    # ---- test controls -------------------------------------------------------------------

    @app.post("/_simulator/faults", status_code=204)
    def add_fault(body: FaultIn) -> None:
        with state.lock:
            state.faults[body.operation] = Fault(body.mode, body.seconds, body.status, body.times)

    @app.post("/_simulator/reset", status_code=204)
    def reset_faults() -> None:
        with state.lock:
            state.faults.clear()

    @app.get("/_simulator/intents/{intent_id}")
    def inspect(intent_id: str) -> JSONResponse:
        with state.lock:
            intent = state.intents.get(intent_id)
            if intent is None:
                return _problem(404, "intent_not_found", "No such payment intent.")
            return JSONResponse(
                {
                    **intent.public(),
                    "capture_count": intent.capture_count,
                    "callbacks_sent": intent.callbacks_sent,
                }
            )

    @app.patch("/_simulator/intents/{intent_id}")
    def tamper(intent_id: str, body: dict[str, int]) -> JSONResponse:
        """Test control: make the gateway report another amount (a mismatched capture)."""
        with state.lock:
            intent = state.intents.get(intent_id)
            if intent is None:
                return _problem(404, "intent_not_found", "No such payment intent.")
            intent.amount_minor = int(body["amount_minor"])
            return JSONResponse(intent.public())

    @app.post("/_simulator/intents/{intent_id}/capture")
    def force_capture(intent_id: str) -> JSONResponse:
        """Test control: capture the intent whatever its state, as a gateway race would (a
        payment authorised just before the cancellation arrived)."""
        with state.lock:
            intent = state.intents.get(intent_id)
            if intent is None:
                return _problem(404, "intent_not_found", "No such payment intent.")
            intent.status, intent.failure_code, intent.failure_message = "captured", None, None
            intent.method, intent.card_scheme, intent.card_last4 = "card", "visa", "4242"
            intent.capture_count += 1
            intent.transaction_ref = "DNA-" + secrets.token_hex(8).upper()
            state.by_transaction[intent.transaction_ref] = intent.intent_id
            return JSONResponse(intent.public())

    @app.post("/_simulator/callbacks/{intent_id}", status_code=202)
    def resend_callback(intent_id: str) -> None:
        """Send the intent's callback again (as a gateway's retry would)."""
        with state.lock:
            intent = state.intents.get(intent_id)
            document = intent.public() if intent else None
        if document is not None:
            _deliver(state, document, copies=1)

    return app


def _schedule_callbacks(state: State, document: dict[str, Any]) -> None:
    if not state.config.callback_url:
        return
    copies = 2 if state.rng.random() < state.config.duplicate_callback_rate else 1
    timer = threading.Timer(
        state.config.callback_delay_seconds, _deliver, args=(state, document, copies)
    )
    timer.daemon = True
    timer.start()


def _deliver(state: State, document: dict[str, Any], copies: int) -> None:
    """Send the signed callback `copies` times (same event id), retrying on failure."""
    url = state.config.callback_url
    if not url:
        return
    event_type = "payment.captured" if document["status"] == "captured" else "payment.failed"
    event_id = (
        "evt_" + hashlib.sha256(f"{document['intent_id']}:{event_type}".encode()).hexdigest()[:24]
    )
    body = json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created_at": datetime.now(UTC).isoformat(),
            "data": document,
        }
    ).encode()
    for _ in range(copies):
        for attempt in range(4):
            headers = sign(state.config.webhook_secret, event_id, int(time.time()), body).as_dict()
            try:
                response = httpx.post(
                    url,
                    content=body,
                    headers={**headers, "Content-Type": "application/json"},
                    timeout=5,
                )
                if response.status_code < 500 and response.status_code != 409:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2 * (attempt + 1))
        with state.lock:
            intent = state.intents.get(document["intent_id"])
            if intent is not None:
                intent.callbacks_sent += 1
    log.info("payment_callback_sent", event_type=event_type, copies=copies)
