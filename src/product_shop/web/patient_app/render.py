"""Rendering the patient app preview's pages: its own templates and stylesheet, the portal's
filters (money, dates, labels), its own security policy, and problems shown as pages.

The app's forms post to the app itself; the buy form's answer redirects the browser to
Integrated Payments' hosted page, and sign-in to Access Manager, so both origins are form
targets too (browsers apply `form-action` to a form's redirects).
"""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

from product_shop.web.portal.render import Pages

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/app"

APP_PAGES = Pages(
    Jinja2Templates(directory=HERE / "templates"),
    lambda settings: [settings.oidc_discovery_url, settings.payments_base_url],
)
page = APP_PAGES.page
problem_page = APP_PAGES.problem_page
