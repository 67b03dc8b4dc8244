"""Webhook signatures per the Standard Webhooks specification.

    webhook-id: <unique message id>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"))>

Several space-separated signatures may be sent (key rotation); one valid one suffices. A
timestamp outside the tolerance window is refused, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_TOLERANCE_SECONDS = 300


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


def _mac(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> SignedHeaders:
    return SignedHeaders(message_id, timestamp, f"v1,{_mac(secret, message_id, timestamp, body)}")


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Returns the message id of an authentic webhook; raises SignatureError otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and raw_timestamp and signatures):
        raise SignatureError("missing webhook signature headers")
    try:
        timestamp = int(raw_timestamp)
    except ValueError as exc:
        raise SignatureError("malformed webhook timestamp") from exc
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("webhook timestamp outside the tolerance window")
    expected = _mac(secret, message_id, timestamp, body)
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return message_id
    raise SignatureError("no valid webhook signature")
