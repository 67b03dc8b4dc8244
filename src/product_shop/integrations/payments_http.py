"""HTTP adapter for Integrated Payments, on urllib3 (`integrations.json_http`: one keep-alive
pool, timeouts, one retry layer). It resends only what is safe to resend: reads, the idempotent
order-reference PUT, and POSTs that carry an Idempotency-Key (the module returns the first result
for a repeated key, so a retry after a lost response never creates a second intent or refund):
at most three sends per call. A POST without a key is sent once.

Answers map to the port's errors: no answer, or 408/429/5xx after the retries, is
`PaymentsUnavailable` (the outcome is unknown); another 4xx is `PaymentRejected` with the
module's problem `code`. Product Shop never captures funds itself: the patient pays on the hosted
payment page, and an unknown outcome is resolved by reading the payment's status.

Why urllib3 rather than httpx: per keep-alive GET it costs about 1.5-1.7 times the CPU of a bare
`http.client` exchange and half of httpx's (about 195, 130 and 390 us on an idle machine), and
every completion makes two such calls (docs/benchmarks.md).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

from product_shop.integrations.json_http import (
    RETRY_AFTER_MAX_SECONDS,
    JsonHttpClient,
    NoAnswer,
    Refused,
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

INTEGRATION = "integrated_payments"  # its label in the integration metrics

__all__ = ["RETRY_AFTER_MAX_SECONDS", "HttpIntegratedPayments"]


class HttpIntegratedPayments:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._client = JsonHttpClient(
            base_url, integration=INTEGRATION, api_key=api_key, timeout_seconds=timeout_seconds
        )

    def close(self) -> None:
        self._client.close()

    def create_intent(
        self,
        *,
        amount_minor: int,
        currency: str,
        merchant_reference: str,
        idempotency_key: str,
        return_url: str | None = None,
    ) -> PaymentIntent:
        body: dict[str, Any] = {
            "amount_minor": amount_minor,
            "currency": currency,
            "merchant_reference": merchant_reference,
            "payment_methods": ["card", "apple_pay", "google_pay"],
            "capture": "immediate",
        }
        if return_url is not None:
            body["return_url"] = return_url
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
        data = self._call("GET", f"/v1/payment-intents/{quote(intent_id, safe='')}")
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
            f"/v1/payment-intents/{quote(intent_id, safe='')}/cancel",
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
            f"/v1/payment-intents/{quote(intent_id, safe='')}/order-reference",
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
        merchant_reference: str | None = None,
    ) -> RefundResult:
        body: dict[str, Any] = {
            "transaction_ref": transaction_ref,
            "amount_minor": amount_minor,
            "currency": currency,
            "reason_code": reason_code,
            "initiated_by": initiated_by,
        }
        if merchant_reference is not None:
            body["merchant_reference"] = merchant_reference
        data = self._call("POST", "/v1/refunds", json_body=body, idempotency_key=idempotency_key)
        return _refund(data)

    def get_refund(self, merchant_reference: str) -> RefundResult | None:
        data = self._call("GET", "/v1/refunds", fields={"merchant_reference": merchant_reference})
        try:
            found = data["refunds"]
            return _refund(found[0]) if found else None
        except (KeyError, IndexError, TypeError) as exc:
            raise PaymentsUnavailable(f"unexpected refund lookup answer ({exc!r})") from exc

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
        fields: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call (`JsonHttpClient`), its failures as the port's errors."""
        if fields:
            path = f"{path}?{urlencode(fields)}"
        try:
            return self._client.call(
                method, path, json_body=json_body, idempotency_key=idempotency_key
            )
        except NoAnswer as exc:
            raise PaymentsUnavailable(f"Integrated Payments did not answer ({exc})") from exc
        except Refused as exc:
            raise PaymentRejected(
                exc.code or f"http_{exc.status}",
                exc.detail or "Integrated Payments refused the request.",
            ) from exc


def _refund(data: dict[str, Any]) -> RefundResult:
    return RefundResult(
        refund_ref=data["refund_ref"],
        transaction_ref=data["transaction_ref"],
        amount_minor=data["amount_minor"],
        currency=data["currency"],
        status=data["status"],
        merchant_reference=data.get("merchant_reference"),
        method=data.get("method"),
    )


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
