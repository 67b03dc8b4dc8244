"""How a shipment moves: accepted -> dispatched (carrier, tracking number and URL) -> in_transit
-> delivered (delivered_at), or to `exception` (with a reason) at any step before delivery, or to
`cancelled` (Product Shop asked) before dispatch. Every change adds one to `sequence`, stamps
`occurred_at` and queues its signed callback. With `auto_advance` the steps happen by themselves
on the simulator's timeline, `*_after_seconds` after acceptance; the steps of a shipment that
reached a final status (delivered, exception, cancelled) do nothing."""

from __future__ import annotations

import string

from product_shop.simulators.suppliers.callbacks import emit
from product_shop.simulators.suppliers.state import (
    CARRIERS,
    FINAL,
    PROGRESSION,
    ShipmentRecord,
    State,
    now_iso,
)


class ShipmentFinal(Exception):
    """The shipment was delivered, has an exception or was cancelled: it moves no further."""


class AlreadyDispatched(Exception):
    """The shipment left the warehouse (dispatched, in transit or delivered): it cannot be
    cancelled."""


def advance(state: State, shipment: ShipmentRecord) -> None:
    """Move the shipment to its next status now and queue the callback."""
    with state.lock:
        if shipment.status in FINAL:
            raise ShipmentFinal(shipment.status)
        status = PROGRESSION[PROGRESSION.index(shipment.status) + 1]
        moment = now_iso()
        if status == "dispatched":
            name, slug, style = CARRIERS[state.rng.randrange(len(CARRIERS))]
            number = _tracking_number(state, style)
            shipment.carrier, shipment.tracking_number = name, number
            base = state.config.tracking_base_url.rstrip("/")
            shipment.tracking_url = f"{base}/{slug}/{number}"
            shipment.dispatched_at = moment
        elif status == "delivered":
            shipment.delivered_at = moment
        _changed(state, shipment, status, moment)


def raise_exception(state: State, shipment: ShipmentRecord, reason: str) -> None:
    """Stop the shipment with an exception (`out_of_stock`, `address_problem`, `lost`,
    `damaged`, `other`) and queue the callback."""
    with state.lock:
        if shipment.status in FINAL:
            raise ShipmentFinal(shipment.status)
        shipment.exception_reason = reason
        _changed(state, shipment, "exception", now_iso())


def cancel(state: State, shipment: ShipmentRecord) -> bool:
    """Cancel the shipment unless it is already (False: nothing changed, no callback); queue the
    callback. AlreadyDispatched once it was dispatched (an exception raised after dispatch
    included); an exception raised before dispatch may be cancelled, keeping its reason."""
    with state.lock:
        if shipment.status == "cancelled":
            return False
        if shipment.dispatched_at is not None or shipment.status not in ("accepted", "exception"):
            raise AlreadyDispatched(shipment.status)
        _changed(state, shipment, "cancelled", now_iso())
        return True


def schedule_progress(state: State, shipment_id: str) -> None:
    """With auto_advance: steps on the simulator's timeline that take the shipment to
    dispatched, in transit and delivered at the configured times after acceptance (a later step
    never before an earlier one)."""
    config = state.config
    if not config.auto_advance:
        return
    at = 0.0
    for target, seconds in (
        ("dispatched", config.dispatch_after_seconds),
        ("in_transit", config.in_transit_after_seconds),
        ("delivered", config.deliver_after_seconds),
    ):
        at = max(at, seconds)
        state.timeline.after(at, _progress, state, shipment_id, target)


def _progress(state: State, shipment_id: str, target: str) -> None:
    """A timeline step: advance until `target` unless the shipment is already there, further on
    (a test control moved it) or stopped."""
    with state.lock:
        shipment = state.shipments.get(shipment_id)
        while (
            shipment is not None
            and shipment.status not in FINAL
            and PROGRESSION.index(shipment.status) < PROGRESSION.index(target)
        ):
            advance(state, shipment)


def _changed(state: State, shipment: ShipmentRecord, status: str, moment: str) -> None:
    shipment.status = status
    shipment.sequence += 1
    shipment.occurred_at = moment
    emit(state, shipment)


def _tracking_number(state: State, style: str) -> str:
    digits = "".join(state.rng.choice(string.digits) for _ in range(16))
    if style == "royal_mail":  # e.g. TT123456785GB
        letters = "".join(state.rng.choice(string.ascii_uppercase) for _ in range(2))
        return f"{letters}{digits[:9]}GB"
    if style == "evri":  # 16 characters, starting with H
        middle = "".join(state.rng.choice(string.ascii_uppercase + string.digits) for _ in range(3))
        return f"H{middle}{digits[:12]}"
    return digits[:14]  # DPD: 14 digits
