"""The checkout as the patient app sees it, from its rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.model import CheckoutStatus
from product_shop.checkout.schemas import (
    CheckoutFailure,
    CheckoutLineOut,
    CheckoutOut,
    DeliveryAddress,
    PaymentLink,
    RedemptionOut,
)
from product_shop.checkout.tables import Checkout, CheckoutLine
from product_shop.db.fast import columns_of


def view(checkout: Checkout, lines: Sequence[CheckoutLine]) -> CheckoutOut:
    return checkout_view(columns_of(checkout), [columns_of(line) for line in lines])


def checkout_view(checkout: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]) -> CheckoutOut:
    """The checkout JSON from rows (column names as keys)."""
    failure: CheckoutFailure | None = None
    if checkout["status"] == CheckoutStatus.FAILED:
        failure = CheckoutFailure(
            code=checkout["failure_code"] or "payment_failed",
            reason=checkout["failure_reason"] or "The payment did not go through.",
            retry_url=f"/v1/checkouts/{checkout['checkout_id']}/retry",
        )
    return CheckoutOut(
        id=checkout["checkout_id"],
        status=CheckoutStatus(checkout["status"]),
        total_minor=checkout["total_minor"],
        amount_due_minor=checkout["amount_due_minor"],
        redemption=RedemptionOut(
            points=checkout["redemption_points"],
            amount_minor=checkout["redemption_amount_minor"],
            redemption_ref=checkout["redemption_ref"],
        )
        if checkout.get("redemption_points")
        else None,
        currency=checkout["currency"],
        lines=[
            CheckoutLineOut(
                line_no=line["line_no"],
                product_id=line["product_id"],
                name=line["product_name"],
                quantity=line["quantity"],
                unit_price_minor=line["unit_price_minor"],
                line_total_minor=line["unit_price_minor"] * line["quantity"],
                fulfilment_type=FulfilmentType(line["fulfilment_type"]),
            )
            for line in lines
        ],
        delivery_address=DeliveryAddress.model_validate(checkout["delivery_address"])
        if checkout["delivery_address"]
        else None,
        payment=PaymentLink(
            intent_id=checkout["payment_intent_id"],
            payment_url=checkout["payment_url"] or "",
            attempts=checkout["payment_attempts"],
        )
        if checkout["payment_intent_id"]
        else None,
        failure=failure,
        order_id=checkout["order_id"],
        created_at=checkout["created_at"],
        expires_at=checkout["expires_at"],
    )
