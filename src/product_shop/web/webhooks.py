"""What every inbound webhook route does first: check the Standard Webhooks signature."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from product_shop.context import AppContext
from product_shop.core.errors import BadRequest, Unauthenticated
from product_shop.core.signing import SignatureError, verify
from product_shop.db import tenancy
from product_shop.events.inbox import MAX_MESSAGE_ID
from product_shop.web.problems import Problem, problem_responses


def verified_message_id(
    context: AppContext, secret: SecretStr, headers: dict[str, str], body: bytes
) -> str:
    """The message id of an authentic webhook (401 `invalid_signature` otherwise; 400
    `malformed_webhook` for an id longer than the inbox keeps). An authentic webhook comes
    from another module of the platform and acts across practices: the request's transactions
    take the system scope (db/tenancy.py) from here on."""
    try:
        message_id = verify(
            secret.get_secret_value(), headers, body, now=int(context.clock.now().timestamp())
        )
    except SignatureError as exc:
        raise Unauthenticated(
            "The webhook signature is not valid.", code="invalid_signature"
        ) from exc
    if len(message_id) > MAX_MESSAGE_ID:
        raise BadRequest("The webhook id is too long.", code="malformed_webhook")
    tenancy.enter(tenancy.SYSTEM)
    return message_id


def _signature_header(name: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}


# The OpenAPI description every signed JSON webhook route carries: the three Standard Webhooks
# headers and a JSON object body (read raw, so the signature is checked over its bytes).
SIGNED_JSON_WEBHOOK: dict[str, Any] = {
    "parameters": [
        _signature_header("webhook-id"),
        _signature_header("webhook-timestamp"),
        _signature_header("webhook-signature"),
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}

# What the guards in front of every route (web/abuse.py) may answer a webhook with, before the
# signature is looked at: a body over `max_body_bytes`, a card number in the body (refused and
# never stored, whoever sends it), or a sender over `webhook_rate_limit`.
WEBHOOK_GUARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **problem_responses(413, 429),
    422: {
        "model": Problem,
        "description": "A card number in the body (`card_data_refused`): refused, never stored",
    },
}
