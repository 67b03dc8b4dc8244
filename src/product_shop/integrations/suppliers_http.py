"""HTTP adapter for the Primoro supplier network (drop-ship), on urllib3.

It speaks the contract in `integrations.suppliers` with the retry policy of `payments_http` (its
constants, so the two cannot drift apart): one keep-alive pool, connect and read timeouts on
every call, and urllib3's `Retry` as the one retry layer. Reads, and the shipment POST (it always
carries an Idempotency-Key, so the network answers a resend with the first shipment), are resent
after a connection error, a timeout or a 408/429/5xx answer, with a short backoff or the answer's
`Retry-After` (at most `RETRY_AFTER_MAX_SECONDS`): at most three sends per call.

Answers map to the port's errors: no answer, 408/429/5xx after the retries, or an answer that is
not the contract's (not JSON, a missing field, an unknown status, a naive timestamp, another
line's shipment) is `SupplierUnavailable` (try again later); another 4xx is `SupplierRejected`
with the network's problem `code` (`out_of_stock`, `address_problem`, `invalid_shipment`,
`idempotency_key_reused`, `shipment_not_found`, ...).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from product_shop.integrations.payments_http import (
    BACKOFF_FACTOR,
    POOL_SIZE,
    RETRIES,
    RETRY_AFTER_MAX_SECONDS,
    RETRY_STATUSES,
)
from product_shop.integrations.suppliers import (
    ExceptionReason,
    Shipment,
    ShipmentRequest,
    ShipmentStatus,
    SupplierRejected,
    SupplierUnavailable,
)

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

# Requests that are safe to repeat (reads, POSTs with an Idempotency-Key): resent after a
# connection that could not be opened, broke or timed out, and after a 408/429/5xx answer.
_RETRY = urllib3.Retry(
    total=RETRIES,
    other=0,  # an error urllib3 cannot place (e.g. TLS) is not one a resend would cure
    redirect=False,  # a 3xx is an answer, not an instruction to follow
    allowed_methods=None,  # any method: `_call` chooses this policy only for repeatable requests
    status_forcelist=RETRY_STATUSES,
    backoff_factor=BACKOFF_FACTOR,
    respect_retry_after_header=True,
    retry_after_max=RETRY_AFTER_MAX_SECONDS,
    raise_on_status=False,  # the last 5xx is returned, and mapped like any other
)
# Anything else: only a connection that could not be opened (nothing was sent) is tried again.
_SEND_ONCE = _RETRY.new(read=False, status=0, allowed_methods=_IDEMPOTENT_METHODS)


class HttpSupplierNetwork:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout_seconds: float = 5.0,
    ) -> None:
        url = urllib3.util.parse_url(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self._prefix = url.path or ""
        self._headers = {
            "Accept": "application/json",
            "Authorization": f"Bearer {api_key}",
            "User-Agent": "primoro-product-shop",
        }
        self._pool = urllib3.connection_from_url(
            base_url,
            maxsize=POOL_SIZE,
            block=False,
            timeout=urllib3.Timeout(connect=min(2.0, timeout_seconds), read=timeout_seconds),
            retries=_SEND_ONCE,
        )

    def close(self) -> None:
        self._pool.close()

    def submit_shipment(self, request: ShipmentRequest, *, idempotency_key: str) -> Shipment:
        body = {
            "reference": request.reference,
            "order_id": request.order_id,
            "practice_id": request.practice_id,
            "items": [
                {"product_id": item.product_id, "name": item.name, "quantity": item.quantity}
                for item in request.items
            ],
            "delivery_address": request.delivery_address,
        }
        data = self._call("POST", "/v1/shipments", json_body=body, idempotency_key=idempotency_key)
        shipment = _shipment(data, "submission")
        if shipment.reference != request.reference:
            raise SupplierUnavailable(
                "the supplier network answered a submission with another line's shipment"
            )
        return shipment

    def get_shipment(self, shipment_id: str) -> Shipment:
        data = self._call("GET", f"/v1/shipments/{quote(shipment_id, safe='')}")
        shipment = _shipment(data, "shipment")
        if shipment.shipment_id != shipment_id:
            raise SupplierUnavailable("the supplier network answered with another shipment")
        return shipment

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One call, retried by urllib3 only if it is safe to repeat; a 2xx answer's JSON object
        ({} when the body is not one, which the caller then finds malformed)."""
        headers = self._headers
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        if idempotency_key is not None:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        repeatable = method in _IDEMPOTENT_METHODS or idempotency_key is not None
        try:
            response = self._pool.urlopen(
                method,
                self._prefix + path,
                body=body,
                headers=headers,
                retries=_RETRY if repeatable else _SEND_ONCE,
                redirect=False,
            )
        except MaxRetryError as exc:
            raise SupplierUnavailable(_no_answer(exc.reason)) from exc
        except HTTPError as exc:
            raise SupplierUnavailable(_no_answer(exc)) from exc
        if response.status >= 500 or response.status in RETRY_STATUSES:
            raise SupplierUnavailable(
                f"unexpected answer from the supplier network (HTTP {response.status})"
            )
        if response.status >= 400:
            problem = _json(response.data)
            raise SupplierRejected(
                str(problem.get("code", f"http_{response.status}")),
                str(problem.get("detail", "The supplier network refused the request.")),
            )
        if not 200 <= response.status < 300:
            raise SupplierUnavailable(
                f"unexpected answer from the supplier network (HTTP {response.status})"
            )
        return _json(response.data)


def _no_answer(error: BaseException | str | None) -> str:
    return f"the supplier network did not answer ({_describe(error)})"


def _describe(error: BaseException | str | None) -> str:
    """'Timeout', 'HTTP 503', or the name of the socket-level error (ConnectionRefusedError,
    RemoteDisconnected, ...)."""
    if error is None or isinstance(error, str):
        return error or "no answer"
    if isinstance(error, NewConnectionError):  # a subclass of ConnectTimeoutError
        return type(error.__cause__ or error).__name__
    if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
        return "Timeout"
    if isinstance(error, ProtocolError) and len(error.args) > 1:
        cause = error.args[1]
        return type(cause).__name__ if isinstance(cause, BaseException) else str(cause)
    return type(error).__name__


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _shipment(data: dict[str, Any], what: str) -> Shipment:
    """The contract's shipment document; SupplierUnavailable when the answer is not one."""
    try:
        sequence = data["sequence"]
        if type(sequence) is not int or sequence < 1:
            raise ValueError(f"sequence {sequence!r}")
        reason = data.get("exception_reason")
        return Shipment(
            shipment_id=_text(data["shipment_id"]),
            reference=_text(data["reference"]),
            status=ShipmentStatus(data["status"]),
            sequence=sequence,
            carrier=_optional_text(data.get("carrier")),
            tracking_number=_optional_text(data.get("tracking_number")),
            tracking_url=_optional_text(data.get("tracking_url")),
            dispatched_at=_optional_time(data.get("dispatched_at")),
            delivered_at=_optional_time(data.get("delivered_at")),
            exception_reason=ExceptionReason(reason) if reason is not None else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SupplierUnavailable(
            f"unexpected {what} answer from the supplier network ({exc!r})"
        ) from exc


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a non-empty string: {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _optional_time(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError(f"a timestamp without a time zone: {value!r}")
    return moment
