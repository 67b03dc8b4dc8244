"""What Rewards Manager's `redemption.confirmed` callback says (its `data`), read strictly:
every field present, of its own type (a number is never a string, a boolean or a fraction cut
to a whole), within its bounds, with no control characters, and no reference cut short (two
long references must never become one). Anything else is 400 `malformed_webhook`, so Rewards
Manager is told at once rather than retrying a message that can never apply."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from product_shop.core.errors import BadRequest
from product_shop.core.text import NO_CONTROL_CHARACTERS

Reference = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=64, pattern=NO_CONTROL_CHARACTERS),
]


class Confirmation(BaseModel):
    """A confirmed redemption: the points Rewards Manager deducted for our checkout."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    redemption_ref: Reference
    reference: Reference  # our checkout id
    points: Annotated[StrictInt, Field(gt=0, le=10**9)]
    amount_minor: Annotated[StrictInt, Field(gt=0, le=10**11)]
    currency: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z]{3}$")]
    settlement_ref: Reference


def parse_confirmation(data: Any) -> Confirmation:
    """A `redemption.confirmed` callback's data, or 400 `malformed_webhook`."""
    try:
        return Confirmation.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(
            "The webhook body is not a redemption confirmation.", code="malformed_webhook"
        ) from exc
