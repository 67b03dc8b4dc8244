"""Browser tests' set-up: Debian's Chromium driven by Playwright (never a downloaded browser),
the API served on a real port with Access Manager's simulator registered for it, and the
screenshots folder.

Chromium comes from `make browser` (apt). Without it the browser tests skip outside CI and
fail in CI, where `make test` has installed it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background
from product_shop.web.app import create_app
from tests.conftest import KeyPair, World
from tests.integration.portal_support import portal_settings, start_access_simulator

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# Phone, tablet and laptop windows the pages must read well in.
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A browser per test (about half a second to start): Playwright's sync API runs an event
    loop in this thread while it is open, and a later test of the same worker that calls
    `asyncio.run` (the NATS sink, the transport tests) would find it running."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is not installed: `make browser` installs it")
        pytest.skip("Debian's chromium is not installed here (`make browser`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def engine_name() -> str:
    """Browser tests run on SQLite only: the pages' database behaviour is the integration
    tests' (both engines); these drive the same pages through a real browser."""
    return "sqlite"


@pytest.fixture
def app_port() -> int:
    return free_port()


@pytest.fixture
def access_manager(key_pair: KeyPair, world: World, app_port: int) -> Iterator[BackgroundServer]:
    server = start_access_simulator(key_pair, world, redirect_base=f"http://127.0.0.1:{app_port}")
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, access_manager: BackgroundServer, app_port: int) -> Settings:
    return portal_settings(settings, access_manager.url).model_copy(
        update={"portal_public_url": f"http://127.0.0.1:{app_port}"}
    )


@pytest.fixture
def portal(context: AppContext, app_port: int) -> Iterator[str]:
    """The API (and its portal) on a real port; yields the portal's URL."""
    server = serve_in_background(create_app(context=context), app_port)
    yield f"{server.url}/portal"
    server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=LAPTOP, locale="en-GB")
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in_as(page: Page, portal: str, name: str, start: str = "/orders") -> None:
    """Open a portal page signed out, and sign in at Access Manager's page as `name`."""
    page.goto(f"{portal}{start}")
    expect(page.get_by_role("heading", name="Sign in to Primoro (demo)")).to_be_visible()
    page.get_by_label(re.compile(re.escape(name))).check()
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def pass_mfa(page: Page, totp_secret: str) -> None:
    code = page.get_by_label("Authentication code")
    expect(code).to_be_visible()
    code.fill(pyotp.TOTP(totp_secret).now())
    page.get_by_role("button", name="Continue").click()
