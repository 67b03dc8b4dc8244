"""The plain summary writer (recommendations/ai/summary.py): it states a period's figures in words
for staff and nothing beyond them. Spec §7: AI may summarise activity but may not make
commitments on the practice's behalf, so no sentence advises, forecasts or promises."""

from __future__ import annotations

import dataclasses
import re

import pytest

from product_shop.recommendations.ai.port import ActivityFigures, SummaryWriter
from product_shop.recommendations.ai.summary import PlainSummaryWriter, format_money

COMMITMENT = re.compile(
    r"\b(will|guarantee\w*|promis\w*|should|must|recommend that|we commit\w*|ensure\w*)\b",
    re.IGNORECASE,
)
RETAIL = re.compile(r"trending|popular|customers also bought|best[- ]?seller", re.IGNORECASE)

ZERO = ActivityFigures(
    period_from="2025-03-01",
    period_to="2025-03-31",
    currency="GBP",
    recommendations_made=0,
    recommendations_withdrawn=0,
    patients_recommended=0,
    recommendations_purchased=0,
    orders=0,
    orders_from_recommendations=0,
    revenue_minor=0,
    suggestions_pending=0,
    suggestions_approved=0,
    suggestions_rejected=0,
    suggestions_expired=0,
    top_categories=(),
)
BUSY = dataclasses.replace(
    ZERO,
    recommendations_made=12,
    recommendations_withdrawn=1,
    patients_recommended=9,
    recommendations_purchased=5,
    orders=20,
    orders_from_recommendations=5,
    revenue_minor=123450,
    suggestions_pending=3,
    suggestions_approved=7,
    suggestions_rejected=2,
    suggestions_expired=1,
    top_categories=(("Interdental cleaning", 5), ("Electric toothbrushes", 3)),
)


def _summary(figures: ActivityFigures) -> str:
    return PlainSummaryWriter().summarise(figures)


def test_writer_satisfies_the_port_and_names_itself() -> None:
    writer: SummaryWriter = PlainSummaryWriter()
    assert writer.info.name == "plain-summary"
    assert writer.info.version == "1"


def test_conversion_rate_is_a_percentage_with_one_decimal() -> None:
    text = _summary(dataclasses.replace(ZERO, recommendations_made=2, recommendations_purchased=1))
    assert "50.0%" in text
    assert "2 recommendations were made" in text
    assert "1 recommendation was purchased" in text
    assert "41.7%" in _summary(BUSY)  # 5 of 12


def test_summary_states_every_figure() -> None:
    text = _summary(BUSY)
    assert "2025-03-01" in text
    assert "2025-03-31" in text
    assert "12 recommendations were made for 9 patients" in text
    assert "1 recommendation was withdrawn" in text
    assert "5 recommendations were purchased" in text
    assert "20 orders were placed, 5 of them from recommendations" in text
    assert "GBP 1,234.50" in text
    assert "3 pending review, 7 approved, 2 rejected and 1 expired" in text
    assert "Interdental cleaning (5), Electric toothbrushes (3)" in text


def test_no_conversion_rate_without_recommendations() -> None:
    text = _summary(dataclasses.replace(ZERO, orders=3, revenue_minor=1999))
    assert "%" not in text
    assert "No recommendations were made." in text
    assert "3 orders were placed, 0 of them from recommendations" in text
    assert "GBP 19.99" in text


def test_zero_activity_says_there_was_none() -> None:
    text = _summary(ZERO)
    assert text == (
        "There was no recommendation, suggestion or order activity from 2025-03-01 to 2025-03-31."
    )


@pytest.mark.parametrize(
    "figures",
    [
        ZERO,
        BUSY,
        dataclasses.replace(BUSY, currency=None),
        dataclasses.replace(ZERO, suggestions_pending=4),
        dataclasses.replace(ZERO, recommendations_made=1, patients_recommended=1),
    ],
)
def test_summary_states_figures_only_and_commits_to_nothing(figures: ActivityFigures) -> None:
    text = _summary(figures)
    assert not COMMITMENT.search(text), text
    assert not RETAIL.search(text), text
    assert text.endswith(".")


def test_money_is_minor_units_shown_as_major_units() -> None:
    assert format_money(123450, "GBP") == "GBP 1,234.50"
    assert format_money(5, "EUR") == "EUR 0.05"
    assert format_money(0, "GBP") == "GBP 0.00"
    assert format_money(100000000, "GBP") == "GBP 1,000,000.00"
    assert format_money(-2599, "GBP") == "GBP -25.99"
    assert format_money(2599, None) == "25.99"
