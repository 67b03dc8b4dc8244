"""Integrated Payments simulator (DNA Payments behind it).

Contract (what `integrations.payments_http` speaks):
- POST /v1/payment-intents               (Idempotency-Key; optional `return_url`) -> intent
                                         with `payment_url`
- GET  /v1/payment-intents/{id}          -> status, transaction reference, card scheme, last four
- POST /v1/payment-intents/{id}/cancel   -> cancelled (idempotent); 409 `intent_captured` once paid
- PUT  /v1/payment-intents/{id}/order-reference   {"order_id"}
- POST /v1/refunds                       (Idempotency-Key; refunds only a captured payment)
- GET  /v1/refunds?merchant_reference=  (the refunds made under our reference)
- GET  /v1/refund-reasons
The hosted payment page: POST {payment_url} with {"card_number": "..."} or {"method": "apple_pay"}
(an API client), or GET {payment_url} in a browser: a card form (`hosted_form`) that sends the
browser back to the intent's `return_url` with `intent_id` and `merchant_reference` added.
Only this simulator ever sees a card number. After a payment it sends a signed callback
(Standard Webhooks) to the configured URL, sometimes twice, as real gateways do.

Test cards: 4242424242424242 and 5555555555554444 succeed; 4000000000000002 is declined;
4000000000009995 has insufficient funds; 4000002500003155 fails 3-D Secure; 4000000000000119 is a
processing error; 4000000000000077 succeeds slowly (`slow_seconds`).

Test controls under /_simulator: inject faults (delays, errors) per operation, inspect intents.

Layout: `state` (intents, faults, idempotency keys), `gateway` (the API above), `hosted_page`
(the card page and test cards), `callbacks` (signed delivery), `controls` (/_simulator). Routes
reach the state through `common.Sim` (the app's `state.sim`), never through closures.
"""

from __future__ import annotations

from fastapi import FastAPI

from product_shop.simulators.payments import controls, gateway, hosted_page
from product_shop.simulators.payments.state import Fault, Intent, SimulatorConfig, State

__all__ = ["Fault", "Intent", "SimulatorConfig", "State", "create_payments_simulator"]


def create_payments_simulator(config: SimulatorConfig | None = None) -> FastAPI:
    app = FastAPI(title="Integrated Payments simulator", docs_url=None, redoc_url=None)
    app.state.sim = State(config=config or SimulatorConfig())
    app.include_router(gateway.payment_intents)
    app.include_router(hosted_page.router)
    app.include_router(gateway.refunds)
    app.include_router(controls.router)
    return app
