"""The staff portal in a real browser (Playwright driving Debian's Chromium, headless): sign-in
through Access Manager's OpenID Connect pages, the order list, a refund with the MFA step-up,
the fulfilment queues and AI suggestion decisions. Each test checks the database outcome, and
saves screenshots of the pages it passes through into test-artifacts/screenshots/."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.db.engine import Database
from product_shop.refunds.tables import Refund
from product_shop.simulators.access import demo_totp_secret
from tests.conftest import World
from tests.e2e.browser_support import (  # noqa: F401 (fixtures)
    TABLET,
    access_manager,
    app_port,
    browser,
    engine_name,
    page,
    pass_mfa,
    portal,
    screenshot,
    settings,
    sign_in_as,
)
from tests.integration.checkout_support import Shop
from tests.integration.conftest import make_product, offer, shop  # noqa: F401 (fixtures)
from tests.integration.fulfilment_support import place_order


def test_a_practice_admin_filters_orders_and_refunds_one_through_the_mfa_step_up(
    page: Page,  # noqa: F811
    portal: str,  # noqa: F811
    client: TestClient,
    world: World,
    shop: Shop,  # noqa: F811
    database: Database,
) -> None:
    brush = place_order(client, world.patient_a, [(shop.toothbrush, 2)])
    kit = place_order(client, world.patient_a2, [(shop.kit, 1)])

    sign_in_as(page, portal, "Alice Admin")
    expect(page.get_by_role("heading", name="Orders")).to_be_visible()
    screenshot(page, "portal-orders")
    page.get_by_label("Fulfilment").select_option("Drop-Ship")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.list tbody tr")
    expect(rows).to_have_count(1)
    expect(page.get_by_role("link", name=brush["order_id"].rsplit("-", 1)[-1])).to_be_visible()
    expect(page.get_by_text(kit["order_id"].rsplit("-", 1)[-1])).to_have_count(0)

    page.get_by_role("link", name=brush["order_id"].rsplit("-", 1)[-1]).click()
    expect(page.get_by_role("heading", name=re.compile("^Order"))).to_be_visible()
    expect(page.get_by_role("cell", name="Oral-B Pro 3")).to_be_visible()
    screenshot(page, "portal-order")
    page.get_by_role("link", name="Start a refund").click()
    page.get_by_label("An amount").check()
    page.get_by_label("Amount (£)").fill("20.00")
    page.get_by_label("Reason").select_option("customer_request")
    page.get_by_label("Note (optional, kept with the refund)").fill("One brush returned")
    screenshot(page, "portal-refund-form")
    page.get_by_role("button", name="Refund").click()

    # Access Manager asks for the authentication code; nothing is refunded before it.
    pass_mfa(page, demo_totp_secret(world.admin_a.actor.actor_id))
    expect(page.get_by_text("You have confirmed your identity")).to_be_visible()
    expect(page.get_by_label("Amount (£)")).to_have_value("20.00")
    expect(page.get_by_label("Note (optional, kept with the refund)")).to_have_value(
        "One brush returned"
    )
    page.get_by_role("button", name="Refund").click()

    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.locator("#refunds")).to_contain_text("£20.00")
    screenshot(page, "portal-order-refunded")
    page.get_by_role("link", name="Refunds").first.click()
    expect(page.locator("#refund-list")).to_contain_text("£20.00")
    screenshot(page, "portal-refunds")
    with Session(database.engine) as session:
        (refund,) = session.scalars(
            select(Refund).where(Refund.order_id == uuid.UUID(brush["order_id"]))
        )
        assert refund.amount_minor == 2000
        assert refund.reason_code == "customer_request"
        assert refund.note == "One brush returned"
        assert refund.initiated_by == world.admin_a.actor.actor_id


def test_the_order_list_reads_on_a_tablet_and_sign_out_ends_the_session(
    page: Page,  # noqa: F811
    portal: str,  # noqa: F811
    client: TestClient,
    world: World,
    shop: Shop,  # noqa: F811
) -> None:
    place_order(client, world.patient_a, [(shop.kit, 1)])
    page.set_viewport_size(TABLET)

    sign_in_as(page, portal, "Alice Admin")
    expect(page.get_by_text("Home Whitening Kit")).to_be_visible()
    screenshot(page, "portal-orders-tablet")
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{portal}/orders")

    expect(page.get_by_role("heading", name="Sign in to Primoro (demo)")).to_be_visible()
