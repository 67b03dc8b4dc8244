"""POST /{destination}: one receiving module's webhook endpoint, as our `WebhookSink` calls it.

In order: an unknown destination is 404; a destination that is `down` answers its status to
everything; the Standard Webhooks signature is checked with the destination's own secret (401,
nothing recorded); the body must be a structured CloudEvent (`application/cloudevents+json`, 415
otherwise; a JSON object with `specversion` "1.0" and non-empty string `id`, `source`, `type`,
read and validated by the CloudEvents SDK, 400 otherwise) whose `id` is the `webhook-id` header
(400 otherwise). Then the destination's
`fail`, `hang` or `slow` fault, if any, applies; then the event is recorded, once per webhook id:
a repeat answers 200 and is counted as a duplicate.

A coroutine: a hung or slow delivery sleeps on the event loop without holding up the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from product_shop.core.signing import SignatureError, verify
from product_shop.simulators.receivers.common import Sim, problem, unknown_destination
from product_shop.simulators.receivers.state import ReceiverFault

# The contract's own constant (not imported from the sink it checks).
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
REQUIRED_ATTRIBUTES = ("id", "source", "type")
OPTIONAL_STRING_ATTRIBUTES = ("subject", "time", "datacontenttype")

router = APIRouter()


@router.post("/{destination}")
async def receive(destination: str, request: Request, state: Sim) -> JSONResponse:
    inbox = state.inbox(destination)
    if inbox is None:
        return unknown_destination(destination)
    down = state.take_fault(inbox, ("down",))
    if down is not None:
        state.bump(inbox, "failed")
        return _simulated(down)
    body = await request.body()
    try:
        webhook_id = verify(
            inbox.secret,
            request.headers,
            body,
            now=int(time.time()),
            tolerance_seconds=state.config.tolerance_seconds,
        )
    except SignatureError as exc:
        state.bump(inbox, "refused")
        return problem(401, "invalid_signature", str(exc))
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != CLOUDEVENTS_CONTENT_TYPE:
        state.bump(inbox, "refused")
        return problem(
            415,
            "unsupported_media_type",
            f"Send a structured CloudEvent as {CLOUDEVENTS_CONTENT_TYPE}, not {media_type!r}.",
        )
    event = _cloudevent(body)
    if isinstance(event, str):
        state.bump(inbox, "refused")
        return problem(400, "invalid_cloudevent", event)
    if event["id"] != webhook_id:
        state.bump(inbox, "refused")
        return problem(
            400,
            "webhook_id_mismatch",
            f"webhook-id {webhook_id!r} is not the CloudEvents id {event['id']!r}.",
        )
    fault = state.take_fault(inbox, ("fail", "hang", "slow"))
    if fault is not None and fault.mode != "slow":
        state.bump(inbox, "failed")  # counted now: a hung delivery's sender may be gone
        if fault.mode == "hang":
            await asyncio.sleep(fault.seconds)
        return _simulated(fault)
    if fault is not None:
        await asyncio.sleep(fault.seconds)  # slow: recorded all the same, however late
    sequence, new = state.record(inbox, event)
    return JSONResponse({"status": "received" if new else "duplicate", "sequence": sequence})


def _cloudevent(body: bytes) -> dict[str, Any] | str:
    """The body as a CloudEvents 1.0 structured document, or why it is not one."""
    try:
        event = json.loads(body)
    except ValueError:
        return "The body is not JSON."
    if not isinstance(event, dict):
        return "The body is not a JSON object."
    if event.get("specversion") != "1.0":
        return 'specversion must be "1.0".'
    for name in REQUIRED_ATTRIBUTES:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string."
    for name in OPTIONAL_STRING_ATTRIBUTES:
        if name in event and not isinstance(event[name], str):
            return f"{name} must be a string."
    try:  # the CloudEvents SDK's own reading and validation of the envelope
        parsed = JSONFormat().read(None, body)
    except (BaseCloudEventException, ValueError) as exc:
        return f"Not a valid CloudEvent: {exc}"
    time = parsed.get_time()
    return {
        "specversion": parsed.get_specversion(),
        "id": parsed.get_id(),
        "source": parsed.get_source(),
        "type": parsed.get_type(),
        "subject": parsed.get_subject(),
        "time": time.isoformat() if time is not None else None,
        "datacontenttype": parsed.get_datacontenttype(),
        "data": parsed.get_data(),
    }


def _simulated(fault: ReceiverFault) -> JSONResponse:
    codes = {"down": "simulated_outage", "hang": "simulated_hang", "fail": "simulated_failure"}
    return problem(fault.status, codes.get(fault.mode, "simulated_failure"), "Simulated failure.")
