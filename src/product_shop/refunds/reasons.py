"""Integrated Payments' refund reason codes (spec §5.3: the reason set is theirs), read through
the port and kept briefly so that a refund does not wait for a second call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

from product_shop.core.errors import ServiceUnavailable, Unprocessable
from product_shop.integrations.payments import IntegratedPayments, PaymentsUnavailable, RefundReason


class RefundReasons:
    def __init__(
        self,
        payments: IntegratedPayments,
        *,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._payments = payments
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: tuple[float, list[RefundReason]] | None = None

    def all(self) -> list[RefundReason]:
        """The current set: from the cache while it is fresh, else from Integrated Payments. If
        Integrated Payments does not answer, a set read before is still used (reason codes change
        rarely); with none, 503."""
        now = self._monotonic()
        cached = self._cached
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            reasons = self._payments.refund_reasons()
        except PaymentsUnavailable as exc:
            if cached is not None:
                return cached[1]
            raise ServiceUnavailable(
                "Integrated Payments did not answer; refund reason codes cannot be read now.",
                code="payments_unavailable",
            ) from exc
        with self._lock:
            self._cached = (now, reasons)
        return reasons

    def codes(self) -> frozenset[str]:
        return frozenset(reason.code for reason in self.all())


def check_reason(code: str, known: Collection[str]) -> None:
    """422 `unknown_reason_code` unless `code` is in Integrated Payments' set (`known`)."""
    if code not in known:
        raise Unprocessable(
            "The reason code is not one of Integrated Payments' refund reason codes (see "
            "GET /v1/refund-reason-codes).",
            code="unknown_reason_code",
            errors=[{"loc": ["body", "reason_code"], "type": "unknown_reason_code"}],
            reason_codes=sorted(known),
        )
