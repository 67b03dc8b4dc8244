"""`core/moments.py`: what is read from outside is aware, in years 1900 to 9998, and in UTC."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from product_shop.cli_events import aware_time
from product_shop.core.moments import Day, Timestamp, parse_timestamp, within_years


def test_a_timestamp_with_an_offset_comes_back_in_utc() -> None:
    moment = parse_timestamp("2026-12-01T09:30:00+02:00")
    assert moment == datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    assert TypeAdapter(Timestamp).validate_python("2026-12-01T09:30:00-05:00").hour == 14


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC: astimezone would overflow
        "9999-12-31T23:59:59-12:00",  # year 10000 in UTC
        "1899-12-31T23:00:00+00:00",
        "9999-01-01T00:00:00+00:00",
        "1900-01-01T00:30:00+01:00",  # 1899 once in UTC
        "2026-12-01T09:30:00",  # no offset
    ],
)
def test_a_timestamp_without_an_offset_or_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"time zone offset|years 1900 to 9998"):
        parse_timestamp(text)
    with pytest.raises(ValidationError):
        TypeAdapter(Timestamp).validate_python(text)
    with pytest.raises(argparse.ArgumentTypeError):
        aware_time(text)


def test_days_are_held_to_the_same_years() -> None:
    assert within_years(date(1900, 1, 1)) == date(1900, 1, 1)
    assert TypeAdapter(Day).validate_python("9998-12-31") == date(9998, 12, 31)
    for text in ("0001-01-01", "1899-12-31", "9999-01-01", "9999-12-31"):
        with pytest.raises(ValidationError):
            TypeAdapter(Day).validate_python(text)


def test_the_last_day_held_still_has_a_week_after_it() -> None:
    """Ranges end at midnight after their last day; weeks start on Monday before the first."""
    last = TypeAdapter(Day).validate_python("9998-12-31")
    first = TypeAdapter(Day).validate_python("1900-01-01")
    assert last + timedelta(days=7) > last
    assert first - timedelta(days=first.weekday()) <= first
    aware = datetime(9998, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-12)))
    with pytest.raises(ValueError, match="years 1900 to 9998"):  # 9999 in UTC
        parse_timestamp(aware.isoformat())
