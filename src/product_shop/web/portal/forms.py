"""What people type into the portal's and the patient app's forms, read one way everywhere:
amounts in pounds and pence (as text, never through a float), whole numbers and dates."""

from __future__ import annotations

import re
from datetime import date

from product_shop.core.errors import BadRequest
from product_shop.core.moments import RANGE, within_years

_POUNDS = re.compile(r"^\s*£?\s*(\d{1,10})(?:\.(\d{1,2}))?\s*$")
# ASCII digits only: str.isdigit() also takes "²", which int() then refuses (a 500).
_WHOLE = re.compile(r"[0-9]{1,9}")


def whole_number(text: str) -> int | None:
    """A whole number typed as up to nine digits 0-9 (spaces around allowed), else None."""
    found = _WHOLE.fullmatch(text.strip())
    return int(found.group()) if found else None


def form_version(text: str) -> int | None:
    """A form's hidden `version`, its If-Match: none sent checks nothing, as in the API, and a
    malformed one is 400 `invalid_if_match`."""
    if not text.strip():
        return None
    version = whole_number(text)
    if version is None:
        raise BadRequest(
            "The form's version is not valid. Reload the page.", code="invalid_if_match"
        )
    return version


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
