"""The practice admin's dashboard in a real browser (Playwright driving Debian's Chromium): the
charts and their tables show the figures of three seeded months, the same as computed from the
rows themselves; screenshots are saved (test-artifacts/screenshots/)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from product_shop.db.engine import Database
from tests.conftest import World
from tests.e2e.browser_support import (  # noqa: F401 (fixtures)
    access_manager,
    app_port,
    engine_name,
    page,
    portal,
    screenshot,
    settings,
    sign_in_as,
)
from tests.integration.conftest import make_product, offer, shop, with_mfa  # noqa: F401
from tests.integration.test_dashboards import RANGE, expected_from_rows, seed


def _pounds(minor: int) -> str:
    return f"£{minor // 100:,}.{minor % 100:02d}"


def test_the_admin_opens_the_dashboard_and_the_charts_show_the_seeded_figures(
    page: Page,  # noqa: F811
    portal: str,  # noqa: F811
    request: pytest.FixtureRequest,
    world: World,
    database: Database,
) -> None:
    seed(request)
    expected = expected_from_rows(database, world.practice_a)

    sign_in_as(page, portal, "Alice Admin", start="/orders")
    page.get_by_role("link", name="Dashboard").click()
    page.get_by_label("From", exact=True).fill(RANGE["from"])
    page.get_by_label("To", exact=True).fill(RANGE["to"])
    page.get_by_label("By", exact=True).select_option("month")
    page.get_by_role("button", name="Show").click()

    charts = page.locator("svg.chart[role=img]")
    expect(charts).to_have_count(5)
    june = expected["periods"][0]
    revenue = page.locator("#revenue-table")
    expect(revenue).to_contain_text(_pounds(june["gross_minor"]))
    bar_titles = page.locator("svg.chart rect.bar title").all_text_contents()
    assert f"Jun 2026: {_pounds(june['net_minor'])}" in bar_titles
    for reason in expected["by_reason"]:
        expect(page.locator("#refunds-table")).to_contain_text(reason["reason_code"])
        assert f"{reason['reason_code']}: {_pounds(reason['amount_minor'])}" in bar_titles
    screenshot(page, "portal-dashboard")
