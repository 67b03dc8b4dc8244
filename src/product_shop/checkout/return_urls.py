"""Where Integrated Payments' hosted payment page may send a patient back to.

A checkout started through the API may name a `return_url`: after paying, the hosted page
sends the patient's browser there. Only the origins of settings `payment_return_origins` and
`portal_public_url` are allowed (`Settings.payment_return_allowed`), so a caller cannot make
the payment page a way to send patients to a site of its choosing. The patient app preview
builds its own return URL from its own address and does not pass through here.
"""

from __future__ import annotations

from product_shop.core.errors import Unprocessable
from product_shop.core.urls import origin_of


def check_return_url(url: str | None, allowed: frozenset[str]) -> None:
    """Refuse (422 `return_url_not_allowed`) a return URL outside the allowed origins."""
    if url is None:
        return
    if origin_of(url) not in allowed:
        raise Unprocessable(
            "return_url must be a page of the patient app: its origin is not one this "
            "deployment allows (setting payment_return_origins).",
            code="return_url_not_allowed",
        )
