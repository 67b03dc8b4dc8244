"""Webhook signatures per the Standard Webhooks specification, through its reference library.

    webhook-id: <unique message id>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))>

The secret is `whsec_` followed by base64; the HMAC key is the decoded bytes, not the secret's
text, so our signatures verify at any Standard Webhooks receiver and theirs verify here. Signing
and the signature check are the `standardwebhooks` package's own code; this module only keeps
callers simple and turns every way the library can refuse a request (a WebhookVerificationError,
but also ValueError and binascii.Error from a malformed `webhook-signature`, UnicodeDecodeError
from a body that is not UTF-8, an empty secret) into SignatureError, so a bad header is a 401 and
never a 500.

Several space-separated signatures may be sent (key rotation); one valid one suffices. A
timestamp outside the tolerance window is refused, so a captured request cannot be replayed later.

The time window, honestly: the library checks `webhook-timestamp` against the wall clock with a
fixed 5-minute window and takes no clock. `verify` first checks it against the caller's `now`
(the app's Clock) with `tolerance_seconds`, which may only narrow the library's window, never
widen it; then the library checks the signature (and its own window). A webhook must be inside
both. In production `now` is the wall clock, so the two checks agree.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks.webhooks import (
    EmptyWebhookSecretError,
    Webhook,
    WebhookVerificationError,
)

DEFAULT_TOLERANCE_SECONDS = 300
# The window `standardwebhooks.Webhook.verify` applies against the wall clock.
LIBRARY_TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
MIN_SECRET_BYTES = 24
# The demo value (decodes to b"demo-webhook-secret-not-for-prod"); production refuses it.
DEMO_WEBHOOK_SECRET = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1ub3QtZm9yLXByb2Q="  # noqa: S105
# The supplier network's demo value, a separate secret (decodes to
# b"demo-supplier-webhook-secret-not-for-prod"); production refuses it too.
DEMO_REWARDS_WEBHOOK_SECRET = "whsec_ZGVtby1yZXdhcmRzLXdlYmhvb2stc2VjcmV0LW5vdC1mb3ItcHJvZA=="  # noqa: S105
DEMO_SUPPLIER_WEBHOOK_SECRET = "whsec_ZGVtby1zdXBwbGllci13ZWJob29rLXNlY3JldC1ub3QtZm9yLXByb2Q="  # noqa: S105
# Appointment Manager's demo value (decodes to b"demo-appointments-webhook-secret-not-for-prod").
DEMO_APPOINTMENTS_WEBHOOK_SECRET = (
    "whsec_ZGVtby1hcHBvaW50bWVudHMtd2ViaG9vay1zZWNyZXQtbm90LWZvci1wcm9k"  # noqa: S105
)


def demo_destination_secret(destination: str) -> str:
    """The demo secret our event webhooks to `destination` are signed with (and the receivers
    simulator checks), one per destination; it decodes to `demo-...`, so production refuses it."""
    return (
        SECRET_PREFIX
        + base64.b64encode(f"demo-{destination}-receiver-secret-not-for-prod".encode()).decode()
    )


SECRET_FORMAT = (
    f"a Standard Webhooks secret: '{SECRET_PREFIX}' followed by the base64 of at least "
    f"{MIN_SECRET_BYTES} random bytes"
)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """The webhook is not authentic (bad or missing signature, or outside the time window)."""


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    message_id: str
    timestamp: int
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            "webhook-id": self.message_id,
            "webhook-timestamp": str(self.timestamp),
            "webhook-signature": self.signature,
        }


def new_secret() -> str:
    """A fresh secret in the Standard Webhooks format (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def decode_secret(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for; ValueError unless it is well formed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"the webhook secret must be {SECRET_FORMAT}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the webhook secret must be {SECRET_FORMAT} (bad base64)") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the webhook secret must be {SECRET_FORMAT} (it has {len(key)})")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> SignedHeaders:
    """Standard Webhooks headers for `body`, signed by the reference library."""
    try:
        webhook = Webhook(secret)
    except (EmptyWebhookSecretError, ValueError) as exc:
        raise ValueError(f"the webhook secret must be {SECRET_FORMAT}") from exc
    signature = webhook.sign(message_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    return SignedHeaders(message_id, timestamp, signature)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Returns the message id of an authentic webhook; raises SignatureError otherwise."""
    if not 0 <= tolerance_seconds <= LIBRARY_TOLERANCE_SECONDS:
        raise ValueError(
            f"tolerance_seconds must be 0..{LIBRARY_TOLERANCE_SECONDS} (the library's window)"
        )
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and raw_timestamp and signatures):
        raise SignatureError("missing webhook signature headers")
    if not _TIMESTAMP.fullmatch(raw_timestamp):
        raise SignatureError("malformed webhook timestamp")
    if abs(now - int(raw_timestamp)) > tolerance_seconds:
        raise SignatureError("webhook timestamp outside the tolerance window")
    signed = {
        "webhook-id": message_id,
        "webhook-timestamp": raw_timestamp,
        "webhook-signature": signatures,
    }
    try:
        Webhook(secret).verify(body, signed, json_parse=False)
    except (
        WebhookVerificationError,
        EmptyWebhookSecretError,
        binascii.Error,  # a signature that is not base64
        UnicodeDecodeError,  # a body that is not UTF-8
        ValueError,  # "v1" with no comma, or more than one; a secret that is not base64
        TypeError,
        RuntimeError,
    ) as exc:
        raise SignatureError(f"no valid webhook signature ({type(exc).__name__})") from exc
    return message_id
