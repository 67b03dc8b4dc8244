"""Timestamps and days that come from outside (query strings, bodies, page cursors, other
modules' callbacks, the command line): aware, and within the years this service can hold.

Python's `datetime` ends at year 1 and 9999. A timestamp at either end with an offset (say
`0001-01-01T00:00:00+14:00`) cannot be turned into UTC, and a day at either end cannot have a
day or a week added (ranges end at midnight after their last day): both failed deep in a query
as a 500. So what is read from outside is checked once, where it is read: a timestamp is aware
and is converted to UTC here, and both lie in years `FIRST_YEAR` to `LAST_YEAR`; anything else is
a client's mistake (422 `validation_failed` through the pydantic types below, 400
`invalid_cursor` for a cursor, a refused callback for another module).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

FIRST_YEAR = 1900
LAST_YEAR = 9998
RANGE = f"years {FIRST_YEAR} to {LAST_YEAR}"


def within_years(day: date) -> date:
    """`day` (or a timestamp's) when it lies in the years this service holds; else ValueError."""
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ValueError(f"must lie in {RANGE}")
    return day


def in_utc(moment: datetime) -> datetime:
    """An aware timestamp in the years this service holds, as UTC; else ValueError."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("must carry a time zone offset")
    within_years(moment)  # so the conversion below cannot leave the datetime range
    converted = moment.astimezone(UTC)
    within_years(converted)
    return converted


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 with an offset, as UTC; ValueError when it is not one, or out of range."""
    return in_utc(datetime.fromisoformat(text))


# For request models and query parameters: validated, in UTC.
Timestamp = Annotated[AwareDatetime, AfterValidator(in_utc)]
Day = Annotated[date, AfterValidator(within_years)]
