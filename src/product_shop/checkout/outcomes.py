"""What completing a checkout came to, and what that means for the patient app: the order, or
the problem to answer with (a failed payment, a mismatched capture, a product that can no longer
be bought, a payment not made yet)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from product_shop.checkout.cancellation import PRODUCT_UNAVAILABLE
from product_shop.checkout.repository import CheckoutRow
from product_shop.core.errors import Conflict, ProductShopError
from product_shop.orders.schemas import OrderOut


class PaymentFailed(ProductShopError):
    status = 402
    code = "payment_failed"
    title = "Payment failed"


class PaymentMismatch(Conflict):
    code = "payment_mismatch"
    title = "Payment does not match the checkout"


class ProductNoLongerAvailable(Conflict):
    code = PRODUCT_UNAVAILABLE
    title = "A product can no longer be bought"


class PointsReturned(Conflict):
    code = "redemption_reversed"
    title = "The points were returned"


class Result(StrEnum):
    ORDER = "order_created"
    PAYMENT_FAILED = "payment_failed"
    NOT_CAPTURED = "not_captured"
    PAYMENT_MISMATCH = "payment_mismatch"
    PRODUCT_UNAVAILABLE = "payment_exception"
    POINTS_RETURNED = "points_returned"
    CHECKOUT_EXPIRED = "checkout_expired"  # paid after it expired: a payment exception


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    order: OrderOut | None = None
    checkout: CheckoutRow | None = None
    captured_minor: int | None = None
    close_intent: str | None = None  # a payment page to close once committed


def answer(outcome: Outcome) -> OrderOut:
    """The order, or the problem the outcome means for the patient."""
    if outcome.result is Result.ORDER:
        assert outcome.order is not None
        return outcome.order
    if outcome.result is Result.PAYMENT_FAILED:
        checkout = outcome.checkout
        assert checkout is not None
        raise PaymentFailed(
            f"{checkout.failure_reason or 'The payment did not go through.'} "
            "No order was created. To try again, ask for a new payment page (retry_url); the "
            "previous page is then closed.",
            failure_code=checkout.failure_code,
            retry_url=f"/v1/checkouts/{checkout.checkout_id}/retry",
        )
    if outcome.result is Result.PAYMENT_MISMATCH:
        assert outcome.checkout is not None
        raise PaymentMismatch(
            "Integrated Payments captured a different amount than this checkout's; no "
            "order was created and staff have been asked to refund it.",
            captured_minor=outcome.captured_minor,
            expected_minor=outcome.checkout.amount_due_minor,
        )
    if outcome.result is Result.PRODUCT_UNAVAILABLE:
        raise ProductNoLongerAvailable(
            "A product in this checkout can no longer be bought, so no order was "
            "created. The practice has been asked to refund your payment."
        )
    if outcome.result is Result.POINTS_RETURNED:
        raise PointsReturned(
            "The points redeemed for this checkout were returned after its payment failed, so "
            "no order was created. The practice has been asked to refund this payment; start a "
            "new checkout."
        )
    if outcome.result is Result.CHECKOUT_EXPIRED:
        raise Conflict(
            "This checkout expired before its payment arrived, so no order was created. The "
            "practice has been asked to refund this payment; start a new checkout.",
            code="checkout_expired",
        )
    raise Conflict(
        "The payment has not been made yet: complete it on the payment page first.",
        code="payment_not_captured",
    )
