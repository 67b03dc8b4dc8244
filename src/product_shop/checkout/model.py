"""Checkout rules, free of web and database code."""

from __future__ import annotations

from enum import StrEnum

from product_shop.core.errors import InvalidTransition


class CheckoutStatus(StrEnum):
    OPEN = "open"
    AWAITING_REDEMPTION = "awaiting_redemption"  # Rewards Manager points (rewards issue)
    AWAITING_PAYMENT = "awaiting_payment"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"


_S = CheckoutStatus
CHECKOUT_TRANSITIONS: dict[CheckoutStatus, frozenset[CheckoutStatus]] = {
    _S.OPEN: frozenset({_S.AWAITING_REDEMPTION, _S.AWAITING_PAYMENT, _S.FAILED}),
    _S.AWAITING_REDEMPTION: frozenset({_S.AWAITING_PAYMENT, _S.COMPLETED, _S.FAILED, _S.EXPIRED}),
    _S.AWAITING_PAYMENT: frozenset({_S.COMPLETED, _S.FAILED, _S.EXPIRED}),
    # A failed payment may be retried through the payments UI with a new intent; a capture
    # confirmed late for an earlier attempt still completes the checkout.
    _S.FAILED: frozenset({_S.AWAITING_PAYMENT, _S.COMPLETED}),
    _S.COMPLETED: frozenset(),
    _S.EXPIRED: frozenset(),
}


def transition(current: CheckoutStatus, target: CheckoutStatus) -> CheckoutStatus:
    if target not in CHECKOUT_TRANSITIONS[current]:
        raise InvalidTransition(
            f"A checkout cannot go from '{current.value}' to '{target.value}'.",
            code=f"checkout_{current.value}",
        )
    return target


MAX_LINES = 20
MAX_QUANTITY = 10
