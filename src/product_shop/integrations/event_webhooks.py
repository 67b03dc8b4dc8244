"""The HTTP webhook sink: one event, as a structured CloudEvents document, POSTed to a receiving
module's endpoint and signed per Standard Webhooks with that destination's own secret.

    POST <url>
    content-type: application/cloudevents+json
    webhook-id: <the event id>          (the receiver deduplicates by it)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<HMAC-SHA256 by the `standardwebhooks` library>

A 2xx answer is a delivery. 410 Gone says the endpoint will never take it (parked at once, as
Standard Webhooks asks). Anything else (no connection, a timeout, another status) fails this
try; the relay tries again on its schedule. The sink never retries by itself: the relay records
each try.
"""

from __future__ import annotations

from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError

from product_shop.core.clock import Clock, SystemClock
from product_shop.core.signing import sign
from product_shop.events.delivery import DeliveryFailed, PendingEvent, PermanentDeliveryError
from product_shop.events.outbox import cloudevent_bytes

CONTENT_TYPE = "application/cloudevents+json"
POOL_SIZE = 16


@dataclass(frozen=True, slots=True)
class WebhookReceipt:
    """What the receiver answered a delivered event (`status_code` goes to the attempt)."""

    status_code: int


class WebhookSink:
    """One destination's endpoint, secret and timeouts; safe to call from several threads."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        connect_timeout_seconds: float = 3.0,
        read_timeout_seconds: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._url = url
        self._secret = secret
        self._clock = clock or SystemClock()
        self._http = urllib3.PoolManager(
            maxsize=POOL_SIZE,
            timeout=urllib3.Timeout(connect=connect_timeout_seconds, read=read_timeout_seconds),
            retries=False,
            cert_reqs="CERT_REQUIRED",  # https receivers' certificates verified (the default)
        )

    def __call__(self, event: PendingEvent) -> WebhookReceipt:
        body = cloudevent_bytes(event)
        signed = sign(self._secret, str(event.event_id), int(self._clock.now().timestamp()), body)
        headers = {"content-type": CONTENT_TYPE, **signed.as_dict()}
        try:
            response = self._http.request(
                "POST", self._url, body=body, headers=headers, redirect=False
            )
        except HTTPError as exc:
            raise DeliveryFailed(f"no answer from {self._url}: {type(exc).__name__}") from exc
        status = response.status
        if 200 <= status < 300:
            return WebhookReceipt(status)
        detail = response.data[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {status} from {self._url}" + (f": {detail}" if detail else "")
        if status == 410:
            raise PermanentDeliveryError(message, status_code=status)
        raise DeliveryFailed(message, status_code=status)

    def close(self) -> None:
        self._http.clear()
