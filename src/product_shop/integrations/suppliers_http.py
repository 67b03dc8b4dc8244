"""HTTP adapter for the Primoro supplier network (drop-ship), on urllib3.

It speaks the contract in `integrations.suppliers` through `integrations.json_http`, the client
Integrated Payments' adapter uses too (one keep-alive pool, timeouts, one retry layer). Reads,
and the shipment and cancellation POSTs (they always carry an Idempotency-Key, so the network
answers a resend with the first outcome), are resent after a connection error, a timeout or a
408/429/5xx answer, with a short backoff or the answer's `Retry-After` (bounded): at most three
sends per call.

Answers map to the port's errors: no answer, 408/429/5xx after the retries, or an answer that is
not the contract's (not JSON, a missing field, an unknown status, a naive timestamp, another
line's shipment, a cancellation answered with a shipment that is not cancelled) is
`SupplierUnavailable` (try again later); another 4xx is `SupplierRejected` with the network's
problem `code` (`out_of_stock`, `address_problem`, `invalid_shipment`, `idempotency_key_reused`,
`shipment_not_found`, `already_dispatched`, ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from product_shop.core.moments import parse_timestamp
from product_shop.integrations.json_http import JsonHttpClient, NoAnswer, Refused
from product_shop.integrations.suppliers import (
    ExceptionReason,
    Shipment,
    ShipmentRequest,
    ShipmentStatus,
    SupplierRejected,
    SupplierUnavailable,
)

INTEGRATION = "supplier_network"  # its label in the integration metrics


class HttpSupplierNetwork:
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

    def cancel_shipment(self, reference: str, *, idempotency_key: str) -> Shipment:
        data = self._call(
            "POST",
            "/v1/shipments/cancellations",
            json_body={"reference": reference},
            idempotency_key=idempotency_key,
        )
        shipment = _shipment(data, "cancellation")
        if shipment.reference != reference:
            raise SupplierUnavailable(
                "the supplier network answered a cancellation with another line's shipment"
            )
        if shipment.status is not ShipmentStatus.CANCELLED:
            raise SupplierUnavailable(
                f"the supplier network answered a cancellation with a shipment that is "
                f"{shipment.status.value}"
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
        """One call (`JsonHttpClient`), its failures as the port's errors."""
        try:
            return self._client.call(
                method, path, json_body=json_body, idempotency_key=idempotency_key
            )
        except NoAnswer as exc:
            raise SupplierUnavailable(f"the supplier network did not answer ({exc})") from exc
        except Refused as exc:
            raise SupplierRejected(
                exc.code or f"http_{exc.status}",
                exc.detail or "The supplier network refused the request.",
            ) from exc


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
    return parse_timestamp(_text(value))  # aware, in range, as UTC; else ValueError
