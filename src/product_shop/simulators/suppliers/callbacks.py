"""The network's signed callbacks (Standard Webhooks, signed by `core.signing`).

Each change of a shipment queues one callback (two, same event id, at `duplicate_rate`) to the
callback URL configured at that moment. One worker thread sends them in the order the changes
happened, so the request or timeline step that made a change never waits for its delivery. A
delivery is retried on a 5xx, a 409 or no answer (`callback_attempts` in all, a short pause
between), then given up. A test control can hold callbacks back and release them reversed
and/or twice.

Body: {"id": "evt_...", "type": "shipment.<status>", "created_at": <the change's occurred_at>,
"data": <the shipment as GET /v1/shipments/{id} shows it at that change>}. The event id is derived
from the shipment and its sequence, so every copy of one change carries the same id.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from typing import Literal

import httpx

from product_shop.core.signing import sign
from product_shop.logging import get_logger
from product_shop.simulators.suppliers.state import Callback, ShipmentRecord, State

log = get_logger("product_shop.simulators.suppliers")

RETRY_PAUSE_SECONDS = 0.2  # times the attempt number: 0.2 s, 0.4 s, 0.6 s, ...


def event_id(shipment_id: str, sequence: int) -> str:
    return "evt_" + hashlib.sha256(f"{shipment_id}:{sequence}".encode()).hexdigest()[:24]


def emit(state: State, shipment: ShipmentRecord) -> None:
    """Queue (or hold) the callback for the shipment's change just made. The caller holds the
    lock, so callbacks are queued in the order of the changes."""
    url = state.config.callback_url
    if not url:
        return
    document = shipment.public()
    identifier = event_id(shipment.shipment_id, shipment.sequence)
    body = json.dumps(
        {
            "id": identifier,
            "type": f"shipment.{shipment.status}",
            "created_at": shipment.occurred_at,
            "data": document,
        }
    ).encode()
    callback = Callback(url, identifier, shipment.shipment_id, body, state.generation)
    rate = state.config.duplicate_rate
    copies = 2 if rate > 0 and state.rng.random() < rate else 1
    for _ in range(copies):
        if state.holding:
            state.held.append(callback)
        else:
            _enqueue(state, callback)


def hold(state: State) -> None:
    with state.lock:
        state.holding = True


def release(state: State, order: Literal["as_sent", "reverse"], duplicate: bool) -> int:
    """Stop holding; queue what was held (reversed, and/or all of it twice: a, b, a, b).
    Returns how many deliveries were queued."""
    with state.lock:
        batch, state.held, state.holding = state.held, [], False
        if order == "reverse":
            batch.reverse()
        if duplicate:
            batch = batch + batch
        for callback in batch:
            _enqueue(state, callback)
        return len(batch)


def forget_pending(state: State) -> None:
    """Drop every callback queued or held so far (a reset: the next test starts clean). Later
    callbacks go through a fresh queue and worker, so none waits behind a delivery still in
    flight to a receiver of before the reset (one that hangs holds its worker for up to
    `callback_attempts` x `callback_timeout_seconds`)."""
    with state.lock:
        state.generation += 1
        state.holding = False
        state.held.clear()
        old = state.outbox
        state.outbox = queue.Queue()
        state.worker = None
        old.put(None)  # wakes the old worker, which then ends


def _enqueue(state: State, callback: Callback) -> None:
    with state.lock:
        if state.worker is None or not state.worker.is_alive():
            state.worker = threading.Thread(
                target=_work, args=(state, state.outbox), name="supplier-callbacks", daemon=True
            )
            state.worker.start()
        state.outbox.put(callback)


def _work(state: State, callbacks: queue.Queue[Callback | None]) -> None:
    with httpx.Client(timeout=state.config.callback_timeout_seconds) as client:
        while True:
            callback = callbacks.get()
            if callback is None:  # a reset gave later callbacks a worker of their own
                return
            try:
                if callback.generation == state.generation:
                    deliver(state, callback, client)
            except Exception:  # the worker must outlive any one delivery
                log.exception("supplier_callback_crashed", event_id=callback.event_id)


def deliver(state: State, callback: Callback, client: httpx.Client) -> bool:
    """Send one signed callback, retrying on failure; True once the receiver answered."""
    answered: int | None = None
    for attempt in range(max(1, state.config.callback_attempts)):
        if attempt:
            time.sleep(RETRY_PAUSE_SECONDS * attempt)
        if callback.generation != state.generation:
            return False  # reset meanwhile
        headers = sign(
            state.config.webhook_secret, callback.event_id, int(time.time()), callback.body
        ).as_dict()
        try:
            response = client.post(
                callback.url,
                content=callback.body,
                headers={**headers, "Content-Type": "application/json"},
            )
        except httpx.TransportError:
            continue
        answered = response.status_code
        if answered < 500 and answered != 409:
            break
    else:
        answered = None
    with state.lock:
        shipment = state.shipments.get(callback.shipment_id)
        if shipment is not None:
            if answered is None:
                shipment.callbacks_failed += 1
            else:
                shipment.callbacks_sent += 1
    if answered is None:
        log.warning(
            "supplier_callback_failed",
            event_id=callback.event_id,
            shipment_id=callback.shipment_id,
        )
        return False
    log.info(
        "supplier_callback_sent",
        event_id=callback.event_id,
        shipment_id=callback.shipment_id,
        status=answered,
    )
    return True
