"""The gateway's signed callbacks (Standard Webhooks, signed by `core.signing`): sent a moment
after a payment to the configured URL, sometimes twice (same event id), as real gateways do, and
retried on a 5xx, a 409 or a transport error."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from product_shop.core.signing import sign
from product_shop.logging import get_logger
from product_shop.simulators.payments.state import State

log = get_logger("product_shop.simulators.payments")


def schedule_callbacks(state: State, document: dict[str, Any]) -> None:
    """Deliver the intent's callback on a timer thread (once, or twice at the duplicate rate)."""
    if not state.config.callback_url:
        return
    copies = 2 if state.rng.random() < state.config.duplicate_callback_rate else 1
    timer = threading.Timer(
        state.config.callback_delay_seconds, deliver, args=(state, document, copies)
    )
    timer.daemon = True
    timer.start()


def deliver(state: State, document: dict[str, Any], copies: int) -> None:
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
