"""The patient app preview in a real browser, in a phone-sized window (375x740): a patient signs
in through Access Manager, buys what their clinician recommended on Integrated Payments' hosted
card page, comes back to the app and sees the order. Checks the database outcome and saves
screenshots into test-artifacts/screenshots/."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.checkout.tables import Checkout
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.orders.tables import Order
from product_shop.simulators.server import BackgroundServer, serve_in_background
from product_shop.web.app import create_app
from tests.conftest import KeyPair, World
from tests.e2e.browser_support import (  # noqa: F401 (fixtures)
    app_port,
    engine_name,
    screenshot,
)
from tests.e2e.test_demo import (  # noqa: F401 (a fixture)
    HARBOUR_ADMIN,
    HARBOUR_PATIENT,
    Demo,
    demo,
)
from tests.integration.checkout_support import Shop
from tests.integration.conftest import make_product, offer, shop  # noqa: F401 (fixtures)
from tests.integration.patient_app_support import (
    NOTE,
    PAID_CARD,
    app_settings,
    recommend,
    start_app_access_simulator,
)

PHONE = {"width": 375, "height": 740}


@pytest.fixture
def access_manager(key_pair: KeyPair, world: World, app_port: int) -> Iterator[BackgroundServer]:  # noqa: F811
    server = start_app_access_simulator(key_pair, world, f"http://127.0.0.1:{app_port}")
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, access_manager: BackgroundServer, app_port: int) -> Settings:  # noqa: F811
    return app_settings(settings, access_manager.url).model_copy(
        update={"portal_public_url": f"http://127.0.0.1:{app_port}"}
    )


@pytest.fixture
def patient_app(context: AppContext, app_port: int) -> Iterator[str]:  # noqa: F811
    """The API (and its app preview) on a real port; yields the app's URL."""
    server = serve_in_background(create_app(context=context), app_port)
    yield f"{server.url}/app"
    server.stop()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, locale="en-GB", is_mobile=True, has_touch=True)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    context.close()


def test_a_patient_buys_a_recommended_product_on_the_hosted_page_in_a_phone_window(
    phone: Page,
    patient_app: str,
    client: TestClient,
    world: World,
    shop: Shop,  # noqa: F811
    database: Database,
) -> None:
    recommend(client, world, shop.toothbrush, world.patient_a)

    phone.goto(patient_app)
    expect(phone.get_by_role("heading", name="Sign in to Primoro (demo)")).to_be_visible()
    phone.get_by_label(re.compile("Penny Patient")).check()
    phone.get_by_role("button", name="Sign in").click()
    expect(phone.get_by_role("heading", name="Recommended by your care team")).to_be_visible()
    expect(phone.get_by_text(NOTE)).to_be_visible()
    expect(phone.get_by_text("Recommended by Dr Clare", exact=False)).to_be_visible()
    # The page fits the phone: nothing wider than the window (the stylesheet was applied).
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(phone, "app-recommended")

    phone.get_by_role("link", name="Buy Oral-B Pro 3").click()
    phone.get_by_label("Quantity").fill("2")
    phone.get_by_label("Address line 1").fill("1 Harbour Road")
    phone.get_by_label("Town or city").fill("Bristol")
    phone.get_by_label("Postcode").fill("BS1 4AA")
    screenshot(phone, "app-buy")
    phone.get_by_role("button", name="Continue to payment").click()

    # Integrated Payments' own page, on its own origin: the card number goes there only.
    expect(phone.get_by_text("This payment page is Integrated Payments'")).to_be_visible()
    assert not phone.url.startswith(patient_app.rsplit("/app", 1)[0])
    phone.get_by_label("Card number").fill(PAID_CARD)
    screenshot(phone, "app-hosted-payment-page")
    phone.get_by_role("button", name=re.compile(r"^Pay £119\.98$")).click()

    expect(phone.get_by_text("your order is placed")).to_be_visible()
    expect(phone.get_by_text("Oral-B Pro 3 \u00d7 2")).to_be_visible()
    assert re.search(r"/app/orders/[0-9a-f-]{36}\?saved=order$", phone.url)
    screenshot(phone, "app-order")
    order_id = uuid.UUID(phone.url.rsplit("/", 1)[1].split("?")[0])
    with Session(database.engine) as session:
        order = session.get(Order, order_id)
        assert order is not None
        assert order.patient_id == world.patient_a.actor.patient_id
        assert order.total_minor == 2 * 5999
        checkout = session.scalars(select(Checkout)).one()
        assert checkout.order_id == order_id

    phone.get_by_role("link", name="Your orders", exact=True).click()
    expect(phone.get_by_role("link", name="Oral-B Pro 3 \u00d7 2")).to_be_visible()
    screenshot(phone, "app-orders")


def test_the_demo_serves_the_app_with_its_own_client_offering_only_patients(
    demo: Demo,  # noqa: F811
) -> None:
    """`make demo` opens /app: Access Manager's page for the app's client lists the demo's
    patients and no staff; picking one lands on their recommendations (httpx, as a browser)."""
    with httpx.Client(base_url=demo.base_url, timeout=10) as visitor:
        to_login = visitor.get("/app")
        assert to_login.status_code == 303
        to_idp = visitor.get(to_login.headers["location"])
        assert to_idp.status_code == 303
        assert "client_id=product-shop-app" in to_idp.headers["location"]
        picker = httpx.get(to_idp.headers["location"], timeout=10)
        assert picker.status_code == 200
        assert f'value="{HARBOUR_PATIENT}"' in picker.text
        assert f'value="{HARBOUR_ADMIN}"' not in picker.text
        pending = re.search(r'name="pending" value="([^"]+)"', picker.text)
        assert pending is not None
        action = to_idp.headers["location"].split("/authorize")[0] + "/authorize/login"
        chosen = httpx.post(
            action, data={"pending": pending.group(1), "handle": HARBOUR_PATIENT}, timeout=10
        )
        assert chosen.status_code == 302
        assert chosen.headers["location"].startswith(f"{demo.base_url}/app/callback?")
        landed = visitor.get(chosen.headers["location"].removeprefix(demo.base_url))
        assert landed.status_code == 303
        home = visitor.get(landed.headers["location"])
        assert home.status_code == 200
        assert "Recommended by your care team" in home.text
