"""The portal's SVG charts: an axis whose ticks are whole numbers and above every bar."""

from __future__ import annotations

import re

import pytest

from product_shop.web.portal.charts import _nice_top, bar_chart


@pytest.mark.parametrize(
    ("largest", "top"), [(0, 1), (1, 1), (3, 4), (5, 6), (7, 8), (9, 10), (30899, 40000)]
)
def test_the_axis_top_is_even_and_at_or_above_the_largest_value(largest: int, top: int) -> None:
    assert _nice_top(largest) == top


def test_the_half_way_tick_says_the_value_its_gridline_stands_for() -> None:
    svg = str(bar_chart("Conversion", ["Recommended", "Bought"], [3, 2]))

    ticks = re.findall(r'text-anchor="end"[^>]*>(\d+)</text>', svg)
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"', svg)]

    assert ticks == ["0", "2", "4"]
    assert heights[0] / heights[1] == pytest.approx(3 / 2)
