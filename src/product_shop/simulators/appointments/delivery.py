"""Making events and sending them, signed (Standard Webhooks, by `core.signing.sign`), to the
callback URL configured at the moment of sending; nothing while it is None.

An event's body is fixed when it is made and its id derives from what it is about (the
appointment id and the type), so every copy of one event is the same bytes under the same
`webhook-id`; only the signature's timestamp differs. A copy is retried on a 5xx, a 409 or no
answer (`callback_attempts` in all, `retry_pause_seconds` x the attempt number between), then
given up; any other answer ends it (a 401 is the receiver's refusal, not to be retried).
Deliveries under way when the simulator is reset try no more.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx

from product_shop.core.signing import sign
from product_shop.logging import get_logger
from product_shop.simulators.appointments.state import EventRecord, State, now_iso

log = get_logger("product_shop.simulators.appointments")


def event_id(subject: str, event_type: str) -> str:
    """The id of the `event_type` event about `subject` (an appointment id): the same every time."""
    return "evt_" + hashlib.sha256(f"{subject}:{event_type}".encode()).hexdigest()[:24]


def make_event(identifier: str, event_type: str, data: Any) -> EventRecord:
    """The event, its body fixed now (`created_at` is this moment)."""
    event = {"id": identifier, "type": event_type, "created_at": now_iso(), "data": data}
    return EventRecord(identifier, event_type, data, json.dumps(event).encode())


def deliver(
    state: State, event: EventRecord, count: int, *, secret: str | None = None
) -> list[dict[str, Any]]:
    """Send the event `count` times (each copy retried on failure), signed with the configured
    secret or `secret` (a forgery); each copy's outcome: {"status_code", "attempts"} or
    {"error", "attempts"}. None is sent without a callback URL."""
    with state.lock:
        config = state.config
        url, generation = config.callback_url, state.generation
        signing_secret = secret or config.webhook_secret
    if not url:
        return []
    outcomes: list[dict[str, Any]] = []
    with httpx.Client(timeout=config.callback_timeout_seconds) as client:
        for copy in range(1, count + 1):
            tries = _send(state, client, url, generation, event, signing_secret)
            outcome = {**tries[-1], "attempts": len(tries)} if tries else {"error": "reset"}
            outcomes.append(outcome)
            state.log(
                {
                    "event_id": event.event_id,
                    "type": event.type,
                    "forged": secret is not None,
                    "copy": copy,
                    "sent_at": now_iso(),
                    "url": url,
                    "outcome": outcome,
                    "tries": tries,
                    "event": json.loads(event.body),
                }
            )
            log.info(
                "appointments_event_sent",
                event_id=event.event_id,
                type=event.type,
                forged=secret is not None,
                **outcome,
            )
            if not tries:
                break  # reset meanwhile
    return outcomes


def _send(
    state: State,
    client: httpx.Client,
    url: str,
    generation: int,
    event: EventRecord,
    secret: str,
) -> list[dict[str, Any]]:
    """One copy, retried on a 5xx, a 409 or no answer: each attempt's {"status_code"} or
    {"error"} (empty when a reset came first)."""
    tries: list[dict[str, Any]] = []
    attempts = max(1, state.config.callback_attempts)
    pause = max(0.0, state.config.retry_pause_seconds)
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause * attempt)
        if generation != state.generation:
            break
        headers = sign(secret, event.event_id, int(time.time()), event.body).as_dict()
        try:
            response = client.post(
                url, content=event.body, headers={**headers, "Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            tries.append({"error": type(exc).__name__})
            continue
        tries.append({"status_code": response.status_code})
        if response.status_code < 500 and response.status_code != 409:
            break
    return tries
