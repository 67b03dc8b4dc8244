"""HTTP adapter for Integrated Payments.

Timeouts on every call. Retries only where a retry is safe: reads, the idempotent order-reference
PUT, and POSTs that carry an Idempotency-Key (the module returns the first result for a repeated
key, so a retry after a lost response never creates a second intent or refund). Product Shop never
captures funds itself: the patient pays on the hosted payment page, and an unknown outcome is
resolved by reading the payment's status.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from product_shop.integrations.http import HttpJsonClient, HttpResponse, TransportError
from product_shop.integrations.payments import (
    PaymentIntent,
    PaymentRejected,
    PaymentState,
    PaymentStatus,
    PaymentsUnavailable,
    RefundReason,
    RefundResult,
)

T = TypeVar("T")
RETRY_BACKOFF_SECONDS = (0.05, 0.2)


class HttpIntegratedPayments:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._client = HttpJsonClient(
            base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "primoro-product-shop"},
            timeout_seconds=timeout_seconds,
            connect_timeout_seconds=min(2.0, timeout_seconds),
        )

    def close(self) -> None:
        self._client.close()

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
            lambda: self._client.request(
                "POST",
                "/v1/payment-intents",
                json_body=body,
                headers={"Idempotency-Key": idempotency_key},
            )
        )
        return PaymentIntent(
            intent_id=data["intent_id"],
            payment_url=data["payment_url"],
            amount_minor=data["amount_minor"],
            currency=data["currency"],
            merchant_reference=data["merchant_reference"],
        )

    def get_payment(self, intent_id: str) -> PaymentStatus:
        data = self._call(lambda: self._client.request("GET", f"/v1/payment-intents/{intent_id}"))
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
            lambda: self._client.request(
                "POST",
                f"/v1/payment-intents/{intent_id}/cancel",
                json_body={},
                headers={"Idempotency-Key": f"cancel:{intent_id}"},
            )
        )
        try:
            return _status(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise PaymentsUnavailable(f"unexpected cancellation answer ({exc!r})") from exc

    def set_order_reference(self, intent_id: str, order_id: uuid.UUID | str) -> None:
        self._call(
            lambda: self._client.request(
                "PUT",
                f"/v1/payment-intents/{intent_id}/order-reference",
                json_body={"order_id": str(order_id)},
            )
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
        data = self._call(
            lambda: self._client.request(
                "POST", "/v1/refunds", json_body=body, headers={"Idempotency-Key": idempotency_key}
            )
        )
        return RefundResult(
            refund_ref=data["refund_ref"],
            transaction_ref=data["transaction_ref"],
            amount_minor=data["amount_minor"],
            currency=data["currency"],
            status=data["status"],
        )

    def refund_reasons(self) -> list[RefundReason]:
        data = self._call(lambda: self._client.request("GET", "/v1/refund-reasons"))
        return [RefundReason(code=r["code"], description=r["description"]) for r in data["reasons"]]

    def _call(self, send: Callable[[], HttpResponse]) -> Any:
        """Send (every caller here is safe to repeat); retry transport errors and 5xx."""
        last_error = "no attempt"
        for attempt in range(len(RETRY_BACKOFF_SECONDS) + 1):
            if attempt:
                time.sleep(RETRY_BACKOFF_SECONDS[attempt - 1])
            try:
                response = send()
            except TransportError as exc:
                last_error = str(exc)
                continue
            if response.status >= 500 or response.status in (408, 429):
                last_error = f"HTTP {response.status}"
                continue
            if response.status >= 400:
                problem = _json(response)
                raise PaymentRejected(
                    str(problem.get("code", f"http_{response.status}")),
                    str(problem.get("detail", "Integrated Payments refused the request.")),
                )
            return _json(response)
        raise PaymentsUnavailable(f"Integrated Payments did not answer ({last_error})")


def _json(response: HttpResponse) -> dict[str, Any]:
    try:
        data = response.json()
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
