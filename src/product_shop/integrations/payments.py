"""Integrated Payments: the only payment path (spec §5.1). Product Shop never sees card data.

The port names what Product Shop needs; `HttpIntegratedPayments` speaks the module's HTTP
contract (served for the demo and tests by `simulators.payments`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class PaymentState(StrEnum):
    REQUIRES_PAYMENT = "requires_payment"
    PROCESSING = "processing"
    CAPTURED = "captured"
    FAILED = "failed"
    CANCELLED = "cancelled"  # closed by us before payment; its page can no longer be paid


# Card and wallet payments only (spec §5.1). Direct debit and other gateways are refused.
ACCEPTED_METHODS = frozenset({"card", "apple_pay", "google_pay"})
REFUSED_GATEWAYS = frozenset({"stripe", "paypal", "adyen", "square", "klarna", "braintree"})
REFUSED_METHODS = frozenset({"direct_debit", "bacs", "sepa_debit", "bank_transfer"})


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    intent_id: str
    payment_url: str
    amount_minor: int
    currency: str
    merchant_reference: str


@dataclass(frozen=True, slots=True)
class PaymentStatus:
    intent_id: str
    state: PaymentState
    amount_minor: int
    currency: str
    merchant_reference: str
    transaction_ref: str | None = None
    method: str | None = None
    card_scheme: str | None = None
    card_last4: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True, slots=True)
class RefundReason:
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class RefundResult:
    """A refund Integrated Payments made: `refund_ref` is its own reference, `merchant_reference`
    ours (the refund id), `method` the original payment method the money went back to."""

    refund_ref: str
    transaction_ref: str
    amount_minor: int
    currency: str
    status: str
    merchant_reference: str | None = None
    method: str | None = None


class PaymentsUnavailable(Exception):
    """Integrated Payments did not answer (timeout, connection, 5xx). The outcome is unknown."""


class PaymentRejected(Exception):
    """Integrated Payments answered with a definite refusal (4xx)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class IntegratedPayments(Protocol):
    def create_intent(
        self,
        *,
        amount_minor: int,
        currency: str,
        merchant_reference: str,
        idempotency_key: str,
        return_url: str | None = None,
    ) -> PaymentIntent:
        """A payment intent and its hosted payment page. `return_url`: where that page sends the
        patient's browser once they have paid (with `intent_id` and `merchant_reference` added
        to its query); without one, the page just says the payment is done."""
        ...

    def get_payment(self, intent_id: str) -> PaymentStatus: ...

    def cancel_intent(self, intent_id: str) -> PaymentStatus:
        """Close an intent that has not been captured, so its payment page can no longer take
        money (idempotent: cancelling a cancelled intent answers the same). A captured intent
        is refused with `PaymentRejected` code `intent_captured`: the money was taken."""
        ...

    def set_order_reference(self, intent_id: str, order_id: uuid.UUID | str) -> None: ...

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
        """Refund part or all of a captured transaction, to its original payment method. A
        repeated `idempotency_key` answers the first refund, never a second one. Refused
        (`PaymentRejected`): an unknown transaction, one not captured, more than is left of the
        capture, an unknown reason code, or the gateway's own decline."""
        ...

    def get_refund(self, merchant_reference: str) -> RefundResult | None:
        """The refund made under our reference, or None when Integrated Payments has none (an
        unknown outcome is settled by this read, never by refunding again)."""
        ...

    def refund_reasons(self) -> list[RefundReason]: ...
