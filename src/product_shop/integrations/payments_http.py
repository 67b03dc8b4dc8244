"""HTTP adapter for Integrated Payments, on urllib3.

One keep-alive connection pool per adapter (`urllib3.HTTPConnectionPool`, shared by the API's
threads), connect and read timeouts on every call, and one retry layer: urllib3's `Retry`. It
resends only what is safe to resend: reads, the idempotent order-reference PUT, and POSTs that
carry an Idempotency-Key (the module returns the first result for a repeated key, so a retry after
a lost response never creates a second intent or refund). Those are retried after a connection
error, a timeout, or a 408, 429 or 5xx answer, with a short backoff or the answer's `Retry-After`
(at most `RETRY_AFTER_MAX_SECONDS`); at most `RETRIES` times, so a call sends at most three times.
A POST without a key is sent once: only a connection that could not be opened is tried again.

Answers map to the port's errors: no answer, or 408/429/5xx after the retries, is
`PaymentsUnavailable` (the outcome is unknown); another 4xx is `PaymentRejected` with the
module's problem `code`. Product Shop never captures funds itself: the patient pays on the hosted
payment page, and an unknown outcome is resolved by reading the payment's status.

Why urllib3 rather than httpx: per keep-alive GET it costs about 1.5-1.7 times the CPU of a bare
`http.client` exchange and half of httpx's (about 195, 130 and 390 us on an idle machine), and
every completion makes two such calls (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from product_shop.integrations.payments import (
    PaymentIntent,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    PaymentsUnavailable,
    RefundReason,
    RefundResult,
)

RETRIES = 2  # after the first send: at most three sends per call
BACKOFF_FACTOR = 0.1  # urllib3: no wait before the first retry, 0.2 s before the second
RETRY_AFTER_MAX_SECONDS = 1  # a longer Retry-After is waited for this long (a patient is waiting)
POOL_SIZE = 32  # idle keep-alive connections kept; more threads open (and then drop) extra ones
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

# Requests that are safe to repeat: retried after a connection that could not be opened, broke or
# timed out, and after a 408/429/5xx answer.
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
# Requests that may not be repeated once they may have reached the server: only a connection
# that could not be opened (nothing was sent) is tried again.
_SEND_ONCE = _RETRY.new(read=False, status=0, allowed_methods=_IDEMPOTENT_METHODS)  # no POST


class HttpIntegratedPayments:
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

    def create_intent(
        self, *, amount_minor: int, currency: str, merchant_reference: str, idempotency_key: str
    ) -> PaymentIntent:
        body = {
            "amount_minor": amount_minor,
            "currency": currency,
            "merchant_reference": merchant_reference,
            "payment_methods": ["card", "apple_pay", "google_pay"],
            "capture": "immediate",
        }
        data = self._call(
            "POST", "/v1/payment-intents", json_body=body, idempotency_key=idempotency_key
        )
        return PaymentIntent(
            intent_id=data["intent_id"],
            payment_url=data["payment_url"],
            amount_minor=data["amount_minor"],
            currency=data["currency"],
            merchant_reference=data["merchant_reference"],
        )

    def get_payment(self, intent_id: str) -> PaymentStatus:
        data = self._call("GET", f"/v1/payment-intents/{intent_id}")
        try:
            status = _status(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise PaymentsUnavailable(f"unexpected payment status answer ({exc!r})") from exc
        if status.state is PaymentState.CAPTURED and not status.transaction_ref:
            raise PaymentsUnavailable("a capture without a transaction reference")
        return status

    def cancel_intent(self, intent_id: str) -> PaymentStatus:
        # Safe to resend: cancelling is idempotent at Integrated Payments (the key says so).
        data = self._call(
            "POST",
            f"/v1/payment-intents/{intent_id}/cancel",
            json_body={},
            idempotency_key=f"cancel:{intent_id}",
        )
        try:
            return _status(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise PaymentsUnavailable(f"unexpected cancellation answer ({exc!r})") from exc

    def set_order_reference(self, intent_id: str, order_id: uuid.UUID | str) -> None:
        self._call(
            "PUT",
            f"/v1/payment-intents/{intent_id}/order-reference",
            json_body={"order_id": str(order_id)},
        )

    def refund(
        self,
        *,
        transaction_ref: str,
        amount_minor: int,
        currency: str,
        reason_code: str,
        initiated_by: str,
        idempotency_key: str,
    ) -> RefundResult:
        body = {
            "transaction_ref": transaction_ref,
            "amount_minor": amount_minor,
            "currency": currency,
            "reason_code": reason_code,
            "initiated_by": initiated_by,
        }
        data = self._call("POST", "/v1/refunds", json_body=body, idempotency_key=idempotency_key)
        return RefundResult(
            refund_ref=data["refund_ref"],
            transaction_ref=data["transaction_ref"],
            amount_minor=data["amount_minor"],
            currency=data["currency"],
            status=data["status"],
        )

    def refund_reasons(self) -> list[RefundReason]:
        data = self._call("GET", "/v1/refund-reasons")
        return [RefundReason(code=r["code"], description=r["description"]) for r in data["reasons"]]

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One call, retried by urllib3 only if it is safe to repeat; the answer as a JSON object
        ({} when the body is not one)."""
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
            raise PaymentsUnavailable(_no_answer(exc.reason)) from exc
        except HTTPError as exc:
            raise PaymentsUnavailable(_no_answer(exc)) from exc
        if response.status >= 500 or response.status in RETRY_STATUSES:
            raise PaymentsUnavailable(_no_answer(f"HTTP {response.status}"))
        if response.status >= 400:
            problem = _json(response.data)
            raise PaymentRejected(
                str(problem.get("code", f"http_{response.status}")),
                str(problem.get("detail", "Integrated Payments refused the request.")),
            )
        return _json(response.data)


def _no_answer(error: BaseException | str | None) -> str:
    return f"Integrated Payments did not answer ({_describe(error)})"


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


def _status(data: dict[str, Any]) -> PaymentStatus:
    return PaymentStatus(
        intent_id=data["intent_id"],
        state=PaymentState(data["status"]),
        amount_minor=data["amount_minor"],
        currency=data["currency"],
        merchant_reference=data["merchant_reference"],
        transaction_ref=data.get("transaction_ref"),
        method=data.get("method"),
        card_scheme=data.get("card_scheme"),
        card_last4=data.get("card_last4"),
        failure_code=data.get("failure_code"),
        failure_message=data.get("failure_message"),
    )
