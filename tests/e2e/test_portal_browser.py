"""The staff portal in a real browser (Playwright driving Debian's Chromium, headless): sign-in
through Access Manager's OpenID Connect pages, the order list, a refund with the MFA step-up,
the fulfilment queues and AI suggestion decisions. Each test checks the database outcome, and
saves screenshots of the pages it passes through into test-artifacts/screenshots/."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.orders.tables import OrderLine
from product_shop.recommendations.tables import AiSuggestion, Recommendation
from product_shop.refunds.tables import Refund
from product_shop.simulators.access import demo_totp_secret
from tests.conftest import World
from tests.e2e.browser_support import (  # noqa: F401 (fixtures)
    TABLET,
    access_manager,
    app_port,
    engine_name,
    page,
    pass_mfa,
    portal,
    screenshot,
    settings,
    sign_in_as,
)
from tests.integration.ai_support import perio_catalogue, suggest
from tests.integration.checkout_support import Shop
from tests.integration.conftest import make_product, offer, shop  # noqa: F401 (fixtures)
from tests.integration.fulfilment_support import place_order, refused_by_the_supplier


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


def test_a_clinician_approves_one_ai_suggestion_and_rejects_another(
    page: Page,  # noqa: F811
    portal: str,  # noqa: F811
    client: TestClient,
    world: World,
    make_product: Callable[..., uuid.UUID],  # noqa: F811
    offer: Callable[..., None],  # noqa: F811
    database: Database,
) -> None:
    catalogue = perio_catalogue(client, world, make_product, offer)
    made = {s["product"]["product_id"]: s for s in suggest(client, world, world.patient_a)}
    brushes, mouthwash = made[str(catalogue.brushes)], made[str(catalogue.mouthwash)]

    sign_in_as(page, portal, "Dr Clare", start="/recommendations")
    expect(page.get_by_text(brushes["rationale"][:40])).to_be_visible()
    screenshot(page, "portal-recommendations")
    approve = page.get_by_role("form", name=f"Approve {brushes['product']['name']}")
    approve.get_by_label(re.compile("^Note to the patient")).fill("Use them every evening.")
    approve.get_by_role("button", name=re.compile("^Approve")).click()
    expect(page.get_by_role("status")).to_contain_text("Suggestion approved")
    reject = page.get_by_role("form", name=f"Reject {mouthwash['product']['name']}")
    reject.get_by_label(re.compile("^Reason for rejecting")).fill("Sensitive to alcohol rinses.")
    reject.get_by_role("button", name=re.compile("^Reject")).click()
    expect(page.get_by_role("status")).to_contain_text("Suggestion rejected")

    with Session(database.engine) as session:
        approved = session.get(AiSuggestion, uuid.UUID(brushes["suggestion_id"]))
        rejected = session.get(AiSuggestion, uuid.UUID(mouthwash["suggestion_id"]))
        assert approved is not None
        assert rejected is not None
        assert approved.status == "approved"
        assert approved.decided_by == world.clinician_a.actor.actor_id
        recommendation = session.get(Recommendation, approved.recommendation_id)
        assert recommendation is not None
        assert recommendation.note == "Use them every evening."
        assert rejected.status == "rejected"
        assert rejected.decision_reason == "Sensitive to alcohol rinses."
        assert rejected.recommendation_id is None


def test_staff_hand_over_an_in_clinic_line_and_resolve_a_drop_ship_exception(
    page: Page,  # noqa: F811
    portal: str,  # noqa: F811
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,  # noqa: F811
    database: Database,
    suppliers_url: str,
) -> None:
    kit = place_order(client, world.patient_a, [(shop.kit, 1)])
    (brush,) = refused_by_the_supplier(  # the supplier network refuses it: an exception
        client, context, world.patient_a, shop.toothbrush, suppliers_url
    )
    kit_line = kit["lines"][0]["line_item_id"]
    brush_line = brush["lines"][0]["line_item_id"]

    sign_in_as(page, portal, "Stan Staff", start="/fulfilment")
    expect(page.locator(f"#line-{brush_line}")).to_contain_text("Out of stock")
    expect(page.locator(f"#line-{kit_line}")).to_contain_text("In stock")
    screenshot(page, "portal-fulfilment")
    page.locator(f"#line-{kit_line}").get_by_role(
        "button", name=re.compile("^Mark ready for collection")
    ).click()
    expect(page.get_by_role("status")).to_be_visible()
    assert _line_state(database, kit_line) == "ready_for_collection"
    page.locator(f"#line-{kit_line}").get_by_role(
        "button", name=re.compile("^Mark collected")
    ).click()
    expect(page.get_by_role("status")).to_be_visible()
    page.locator(f"#line-{brush_line}").get_by_role(
        "button", name=re.compile("^Mark delivered")
    ).click()
    expect(page.get_by_role("status")).to_be_visible()
    expect(page.locator(f"#line-{brush_line}")).to_have_count(0)

    assert _line_state(database, kit_line) == "collected"
    assert _line_state(database, brush_line) == "delivered"


def _line_state(database: Database, line_item_id: str) -> str:
    with Session(database.engine) as session:
        line = session.get(OrderLine, uuid.UUID(line_item_id))
        assert line is not None
        return str(line.fulfilment_status)


def test_the_order_filters_work_with_the_keyboard_alone(
    page: Page,  # noqa: F811
    portal: str,  # noqa: F811
    client: TestClient,
    world: World,
    shop: Shop,  # noqa: F811
) -> None:
    place_order(client, world.patient_a, [(shop.kit, 1)])
    sign_in_as(page, portal, "Alice Admin")
    page.locator("body").focus()

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    focused = ""
    for _ in range(40):  # on through the navigation to the first filter
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
        if focused == "status":
            break
    assert focused == "status"
    page.keyboard.press("ArrowDown")  # Any -> the first status
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Filter":
            break
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"status=Created"))
    expect(page.get_by_label("Status")).to_have_value("Created")
    expect(page.locator("table.list caption")).to_be_visible()
