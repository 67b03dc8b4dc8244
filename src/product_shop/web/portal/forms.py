"""What people type into the portal's forms, read one way everywhere: amounts in pounds and
pence (as text, never through a float) and dates."""

from __future__ import annotations

import re
from datetime import date

from product_shop.core.errors import BadRequest
from product_shop.core.moments import RANGE, within_years

_POUNDS = re.compile(r"^\s*£?\s*(\d{1,10})(?:\.(\d{1,2}))?\s*$")


def minor_units(text: str, *, help_text: str, code: str = "invalid_input") -> int:
    """ "12.50" (or "£12.50", "12.5") -> 1250, "12" -> 1200; BadRequest(help_text) otherwise."""
    found = _POUNDS.match(text)
    if not found:
        raise BadRequest(help_text, code=code)
    return int(found.group(1)) * 100 + int((found.group(2) or "0").ljust(2, "0"))


def day(value: str | None, what: str) -> date | None:
    """A filter's date (YYYY-MM-DD); None when left empty."""
    if not value:
        return None
    try:
        return within_years(date.fromisoformat(value))
    except ValueError as exc:
        raise BadRequest(
            f"The {what} date must be a date (YYYY-MM-DD) in {RANGE}.", code="invalid_filter"
        ) from exc
