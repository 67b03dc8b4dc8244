"""The module's signed callbacks (Standard Webhooks, signed by `core.signing`) to the callback
URL configured at the moment of sending; none while it is None.

- `redemption.confirmed`: with `auto_confirm`, a timer thread confirms a pending redemption
  `confirm_delay_seconds` after it was made (status `confirmed`, a settlement ref) and sends it;
  otherwise the test control `/_simulator/redemptions/{ref}/confirm` does, at once.
- `redemption.reversed`: a timer thread sends it `confirm_delay_seconds` after each reversal
  (status `confirmed` when sent).

Body: {"id": "evt_...", "type", "created_at": <the confirmation or reversal time>, "data"}; it is
fixed when the event happens and the id derives from the ref and the type, so every copy of one
event is the same bytes under the same id (only the signature's timestamp differs). Each event
is delivered twice at `duplicate_callback_rate`. A delivery is retried on a 5xx, a 409 or no
answer (`callback_attempts` in all, a short pause between), then given up. Timers and
deliveries started before a reset do nothing more.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx

from product_shop.core.signing import sign
from product_shop.logging import get_logger
from product_shop.simulators.rewards.state import (
    RedemptionRecord,
    ReversalRecord,
    State,
    new_ref,
    now_iso,
)

log = get_logger("product_shop.simulators.rewards")

RETRY_PAUSE_SECONDS = 0.2  # times the attempt number: 0.2 s, 0.4 s, 0.6 s, ...
CONFIRMED = "redemption.confirmed"
REVERSED = "redemption.reversed"
Kind = Literal["redemption", "reversal"]


def event_id(ref: str, event_type: str) -> str:
    return "evt_" + hashlib.sha256(f"{ref}:{event_type}".encode()).hexdigest()[:24]


def copies(state: State) -> int:
    """1, or 2 at the duplicate rate."""
    rate = state.config.duplicate_callback_rate
    return 2 if rate > 0 and state.rng.random() < rate else 1


def confirm(state: State, redemption: RedemptionRecord) -> bytes:
    """Confirm the redemption (once: a settlement ref and the time) and answer its callback's
    body, the same bytes every time. The caller holds the lock."""
    if redemption.confirmation is None:
        redemption.status = "confirmed"
        redemption.settlement_ref = new_ref("RM-ST")
        redemption.confirmed_at = now_iso()
        redemption.confirmation = _body(
            event_id(redemption.redemption_ref, CONFIRMED),
            CONFIRMED,
            redemption.confirmed_at,
            {
                "redemption_ref": redemption.redemption_ref,
                "reference": redemption.reference,
                "patient_id": redemption.patient_id,
                "practice_id": redemption.practice_id,
                "points": redemption.points,
                "amount_minor": redemption.amount_minor,
                "currency": redemption.currency,
                "settlement_ref": redemption.settlement_ref,
            },
        )
    return redemption.confirmation


def schedule_confirmation(state: State, redemption_ref: str) -> None:
    """With auto_confirm: confirm and send the callback after the delay, on a timer thread."""
    if not state.config.auto_confirm:
        return
    _later(state, _confirm_later, redemption_ref)


def confirm_now(state: State, redemption_ref: str, count: int) -> int | None:
    """Confirm the redemption now (if it is still pending) and send its callback `count` times,
    waiting for the deliveries; how many the receiver answered (None: no such redemption)."""
    with state.lock:
        redemption = state.redemptions.get(redemption_ref)
        if redemption is None:
            return None
        body = confirm(state, redemption)
        url, generation = state.config.callback_url, state.generation
    return deliver(state, url, generation, "redemption", redemption_ref, CONFIRMED, body, count)


def schedule_reversed(state: State, reversal_ref: str) -> None:
    """Send the reversal's callback after the delay, on a timer thread."""
    _later(state, _reversed_later, reversal_ref)


def _later(state: State, work: Callable[[State, str, int], None], ref: str) -> None:
    timer = threading.Timer(
        state.config.confirm_delay_seconds, work, args=(state, ref, state.generation)
    )
    timer.daemon = True
    timer.start()


def _confirm_later(state: State, redemption_ref: str, generation: int) -> None:
    with state.lock:
        redemption = state.redemptions.get(redemption_ref)
        if generation != state.generation or redemption is None:
            return
        if redemption.status != "pending":
            return  # confirmed meanwhile (the test control): its callback went then
        body = confirm(state, redemption)
        url, count = state.config.callback_url, copies(state)
    deliver(state, url, generation, "redemption", redemption_ref, CONFIRMED, body, count)


def _reversed_later(state: State, reversal_ref: str, generation: int) -> None:
    with state.lock:
        reversal = state.reversals.get(reversal_ref)
        if generation != state.generation or reversal is None:
            return
        reversal.status = "confirmed"
        body = reversal_body(reversal)
        url, count = state.config.callback_url, copies(state)
    deliver(state, url, generation, "reversal", reversal_ref, REVERSED, body, count)


def reversal_body(reversal: ReversalRecord) -> bytes:
    return _body(
        event_id(reversal.reversal_ref, REVERSED),
        REVERSED,
        reversal.created_at,
        {
            "redemption_ref": reversal.redemption_ref,
            "reversal_ref": reversal.reversal_ref,
            "points": reversal.points,
            "reference": reversal.reference,
        },
    )


def _body(identifier: str, event_type: str, created_at: str, data: dict[str, Any]) -> bytes:
    event = {"id": identifier, "type": event_type, "created_at": created_at, "data": data}
    return json.dumps(event).encode()


def deliver(
    state: State,
    url: str | None,
    generation: int,
    kind: Kind,
    ref: str,
    event_type: str,
    body: bytes,
    count: int,
) -> int:
    """Send the signed callback `count` times, each retried on failure; how many copies the
    receiver answered. Nothing is sent without a URL or after a reset."""
    if not url:
        return 0
    identifier = event_id(ref, event_type)
    answered_copies = 0
    with httpx.Client(timeout=state.config.callback_timeout_seconds) as client:
        for _ in range(count):
            answered = _send(state, client, url, generation, identifier, body)
            if answered is None and generation != state.generation:
                return answered_copies  # reset meanwhile: counted nowhere
            _count(state, kind, ref, answered)
            if answered is None:
                log.warning("rewards_callback_failed", event_id=identifier, ref=ref)
            else:
                answered_copies += 1
                log.info("rewards_callback_sent", event_id=identifier, ref=ref, status=answered)
    return answered_copies


def _send(
    state: State,
    client: httpx.Client,
    url: str,
    generation: int,
    identifier: str,
    body: bytes,
) -> int | None:
    """One copy, retried on a 5xx, a 409 or no answer; the receiver's status, or None when
    every attempt failed."""
    for attempt in range(max(1, state.config.callback_attempts)):
        if attempt:
            time.sleep(RETRY_PAUSE_SECONDS * attempt)
        if generation != state.generation:
            return None
        headers = sign(state.config.webhook_secret, identifier, int(time.time()), body).as_dict()
        try:
            response = client.post(
                url, content=body, headers={**headers, "Content-Type": "application/json"}
            )
        except httpx.TransportError:
            continue
        if response.status_code < 500 and response.status_code != 409:
            return response.status_code
    return None


def _count(state: State, kind: Kind, ref: str, answered: int | None) -> None:
    with state.lock:
        record: RedemptionRecord | ReversalRecord | None = (
            state.redemptions.get(ref) if kind == "redemption" else state.reversals.get(ref)
        )
        if record is None:
            return
        if answered is None:
            record.callbacks_failed += 1
        else:
            record.callbacks_sent += 1
