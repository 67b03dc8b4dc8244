"""The Primoro supplier network simulator (drop-ship, spec §6.1).

Contract (what `integrations.suppliers_http` speaks; see `integrations.suppliers`):
- POST /v1/shipments       (Bearer API key, Idempotency-Key) -> 201 the shipment, `accepted`
- GET  /v1/shipments/{id}  -> the shipment as it is now
- POST /v1/shipments/cancellations (Bearer API key, Idempotency-Key) `{"reference": ...}` -> 200
  the shipment, `cancelled` (accepted, or an exception before dispatch; already cancelled: the
  same answer, nothing changes)
Refusals are 4xx problem+json with a `code`: `invalid_shipment`, `address_problem` (always for
the postcode "XX0 0XX"), `out_of_stock`, `idempotency_key_reused`, `idempotency_key_required`,
`unauthorised`, `shipment_not_found`, `invalid_cancellation`, `already_dispatched` (409).

Each change of a shipment (accepted, dispatched, in_transit, delivered, exception, cancelled)
adds one to its `sequence` and sends a signed callback (Standard Webhooks) to the configured URL,
off the request that caused it. With `auto_advance` (the demo) a shipment is dispatched with a
carrier, tracking number and tracking URL, in transit and delivered by itself, `*_after_seconds`
after acceptance; a cancelled shipment (or one with an exception) stops there.

Test controls under /_simulator (no API key): faults per operation (`submit`, `get`, `cancel`),
refusals, advance a shipment or give it an exception, hold callbacks and release them reversed
and/or twice, set the callback URL, inspect shipments, reset.

Layout: `state` (configuration, shipments, keys, faults, callback queue), `network` (the API),
`lifecycle` (how a shipment moves, auto-advance steps on one timeline thread), `callbacks`
(signed delivery, hold and release), `controls` (/_simulator). Routes reach the state through
`common.Sim` (the app's `state.sim`), never through closures.
"""

from __future__ import annotations

from fastapi import FastAPI

from product_shop.core.signing import decode_secret
from product_shop.simulators.suppliers import controls, network
from product_shop.simulators.suppliers.state import (
    UNDELIVERABLE_POSTCODE,
    ShipmentRecord,
    State,
    SupplierSimulatorConfig,
)

__all__ = [
    "UNDELIVERABLE_POSTCODE",
    "ShipmentRecord",
    "State",
    "SupplierSimulatorConfig",
    "create_suppliers_simulator",
]


def create_suppliers_simulator(config: SupplierSimulatorConfig | None = None) -> FastAPI:
    config = config or SupplierSimulatorConfig()
    decode_secret(config.webhook_secret)  # ValueError now rather than at the first callback
    if not 0 <= config.duplicate_rate <= 1:
        raise ValueError("duplicate_rate must be between 0 and 1")
    steps = (
        config.dispatch_after_seconds,
        config.in_transit_after_seconds,
        config.deliver_after_seconds,
    )
    if min(steps) < 0:
        raise ValueError("the *_after_seconds settings may not be negative")
    app = FastAPI(title="Primoro supplier network simulator", docs_url=None, redoc_url=None)
    app.state.sim = State(config=config)
    app.include_router(network.router)
    app.include_router(controls.router)
    return app
