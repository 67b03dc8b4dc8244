"""The network's API, as `integrations.suppliers_http` speaks it: submit a shipment (Bearer API
key, Idempotency-Key required), read one, and cancel one by our reference (Bearer API key,
Idempotency-Key required). Refusals are 4xx problem+json with a `code`: `invalid_shipment` (the
body is not a shipment), `address_problem` (the postcode `UNDELIVERABLE_POSTCODE`, or a queued
refusal), `out_of_stock` (a queued refusal), `idempotency_key_reused` (another body under a key
already used), `invalid_cancellation` (the body is not `{"reference": ...}`),
`already_dispatched` (409: the shipment to cancel left the warehouse), `shipment_not_found`.

Idempotency-Keys are one namespace for submissions and cancellations; a refusal is never kept
under its key (the same request later may succeed)."""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from product_shop.simulators.faults import parse_body
from product_shop.simulators.suppliers.callbacks import emit
from product_shop.simulators.suppliers.common import (
    Sim,
    after,
    before,
    problem,
    shipment_not_found,
    unauthorised,
)
from product_shop.simulators.suppliers.lifecycle import AlreadyDispatched, cancel, schedule_progress
from product_shop.simulators.suppliers.state import (
    UNDELIVERABLE_POSTCODE,
    ShipmentRecord,
    now_iso,
)

router = APIRouter()

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
REFUSAL_STATUS = {"out_of_stock": 409, "address_problem": 422, "invalid_shipment": 422}
REFUSAL_DETAIL = {
    "out_of_stock": "The supplier has none of this product in stock.",
    "address_problem": "The carrier cannot deliver to this address.",
    "invalid_shipment": "The shipment cannot be processed.",
}


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: Id
    name: Text
    quantity: Annotated[StrictInt, Field(ge=1, le=999)]


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # what a carrier does not need is left aside
    recipient_name: Text
    line1: Text
    line2: Text | None = None
    city: Text
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=10)]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = "GB"


class ShipmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: Id
    order_id: Id
    practice_id: Id
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=50)]
    delivery_address: AddressIn


class CancellationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: Id


def _refused(code: str) -> JSONResponse:
    return problem(REFUSAL_STATUS[code], code, REFUSAL_DETAIL[code])


def _undeliverable(body: ShipmentIn) -> bool:
    postcode = body.delivery_address.postcode.replace(" ", "").upper()
    return postcode == UNDELIVERABLE_POSTCODE.replace(" ", "")


@router.post("/v1/shipments", status_code=201)
async def submit_shipment(
    request: Request,
    state: Sim,
    authorization: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    if not idempotency_key:
        return problem(400, "idempotency_key_required", "Send an Idempotency-Key header.")
    body = parse_body(
        ShipmentIn, await request.body(), "invalid_shipment", "The body is not a JSON shipment."
    )
    if isinstance(body, JSONResponse):
        return body
    stop, late = await before(state, "submit")
    if stop:
        return stop
    document: dict[str, Any]
    with state.lock:  # re-entrant: the key check and the store are one atomic step
        digest, seen = state.idempotent(idempotency_key, body.model_dump())
        if seen == "mismatch":
            return problem(
                422, "idempotency_key_reused", "Idempotency-Key reused with another body."
            )
        if seen is not None:
            shipment = state.shipments[seen]
            shipment.requests += 1
        else:
            refusal = "address_problem" if _undeliverable(body) else None
            refusal = refusal or state.take_refusal(body.reference)
            if refusal is not None:
                return _refused(refusal)
            shipment = ShipmentRecord(
                shipment_id="shp_" + secrets.token_hex(12),
                reference=body.reference,
                order_id=body.order_id,
                practice_id=body.practice_id,
                items=[item.model_dump() for item in body.items],
                delivery_address=body.delivery_address.model_dump(),
                occurred_at=now_iso(),
            )
            state.shipments[shipment.shipment_id] = shipment
            state.idempotency[idempotency_key] = (digest, shipment.shipment_id)
            emit(state, shipment)
            schedule_progress(state, shipment.shipment_id)
        document = shipment.public()
    await after(late)
    return JSONResponse(document, status_code=201)


@router.get("/v1/shipments/{shipment_id}")
async def get_shipment(
    shipment_id: str, state: Sim, authorization: str | None = Header(default=None)
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    stop, late = await before(state, "get")
    if stop:
        return stop
    with state.lock:
        shipment = state.shipments.get(shipment_id)
        document = shipment.public() if shipment else None
    await after(late)
    if document is None:
        return shipment_not_found()
    return JSONResponse(document)


@router.post("/v1/shipments/cancellations")
async def cancel_shipment(
    request: Request,
    state: Sim,
    authorization: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    """Cancel the (latest) shipment made under our reference: 200 the shipment, `cancelled`."""
    if not state.authorised(authorization):
        return unauthorised()
    if not idempotency_key:
        return problem(400, "idempotency_key_required", "Send an Idempotency-Key header.")
    try:
        body = CancellationIn.model_validate(json.loads(await request.body()))
    except ValueError:  # not JSON, or a pydantic ValidationError
        return problem(422, "invalid_cancellation", 'The body is not {"reference": "..."}.')
    stop, late = await before(state, "cancel")
    if stop:
        return stop
    document: dict[str, Any]
    with state.lock:  # re-entrant: the key check, the cancellation and the key's store are one
        digest, seen = state.idempotent(idempotency_key, body.model_dump())
        if seen == "mismatch":
            return problem(
                422, "idempotency_key_reused", "Idempotency-Key reused with another body."
            )
        shipment = state.shipments.get(seen) if seen is not None else None
        if shipment is None:
            shipment = state.latest(body.reference)
            if shipment is None:
                return problem(404, "shipment_not_found", "No shipment under this reference.")
            try:
                cancel(state, shipment)  # nothing changes when it was already cancelled
            except AlreadyDispatched:
                return problem(
                    409,
                    "already_dispatched",
                    f"The shipment is {shipment.status}: it can no longer be cancelled.",
                )
            state.idempotency[idempotency_key] = (digest, shipment.shipment_id)
        shipment.cancellations += 1
        document = shipment.public()
    await after(late)
    return JSONResponse(document)
