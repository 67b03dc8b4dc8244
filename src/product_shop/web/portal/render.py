"""Rendering the staff portal's pages: Jinja2 templates (autoescaped), the page's security
policy, and problems shown as pages.

Every page loads only what the app serves (`/portal/static`), so the policy allows nothing else;
forms post to the portal itself, or redirect to Access Manager for sign-in (its origin is a
form target too: browsers apply `form-action` to a form's redirects).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from product_shop.access.actor import Actor, Role
from product_shop.access.policy import Action, allowed
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.core.money import CURRENCY_SYMBOLS

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/portal"

ROLE_NAMES = {
    Role.CLINICIAN: "Clinician",
    Role.PRACTICE_ADMIN: "Practice admin",
    Role.FINANCE: "Finance",
    Role.STAFF: "Practice staff",
    Role.CATALOGUE_ADMIN: "Catalogue admin",
}

templates = Jinja2Templates(directory=HERE / "templates")


def money(minor: int | None, currency: str = "GBP") -> str:
    """12345, "GBP" -> "£123.45" (integer minor units, never floats)."""
    if minor is None:
        return ""
    sign = "-" if minor < 0 else ""
    whole, pence = divmod(abs(minor), 100)
    symbol = CURRENCY_SYMBOLS.get(currency)
    amount = f"{whole:,}.{pence:02d}"
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def when(value: datetime | None) -> str:
    """A timestamp as staff read it: UTC, to the minute."""
    return "" if value is None else value.strftime("%d %b %Y %H:%M UTC")


def label(value: Any) -> str:
    """An enum value or snake_case code as words: `sent_to_supplier` -> "Sent to supplier"."""
    text = str(getattr(value, "value", value) or "")
    return text.replace("_", " ").capitalize()


# The portal's sections, each shown to the roles whose permission it needs (access/policy.py).
NAV: tuple[tuple[str, str, Action], ...] = (
    (f"{PREFIX}/orders", "Orders", Action.VIEW_PRACTICE_ORDERS),
    (f"{PREFIX}/fulfilment", "Fulfilment", Action.MANAGE_FULFILMENT),
    (f"{PREFIX}/refunds", "Refunds", Action.VIEW_REFUNDS),
    (f"{PREFIX}/payment-exceptions", "Payment exceptions", Action.VIEW_REFUNDS),
    (f"{PREFIX}/cancellations", "Cancellations", Action.VIEW_CANCELLATION_REQUESTS),
    (f"{PREFIX}/recommendations", "Recommendations", Action.VIEW_AI_SUGGESTIONS),
    (f"{PREFIX}/catalogue", "Catalogue", Action.CONFIGURE_PRACTICE_CATALOGUE),
    (f"{PREFIX}/dashboard", "Dashboard", Action.VIEW_DASHBOARDS),
)


def nav_items(actor: Actor) -> list[tuple[str, str, Action]]:
    return [item for item in NAV if allowed(actor, item[2])]


def home_path(actor: Actor | None) -> str:
    """Where a signed-in user starts: the first section their role may use."""
    items = nav_items(actor) if actor is not None else []
    return items[0][0] if items else f"{PREFIX}/orders"


templates.env.globals["nav_items"] = nav_items


def short_id(value: object) -> str:
    """The last group of a UUID: ids are UUIDv7, whose first groups are the time and alike for
    orders placed close together; the last group is random."""
    return str(value).rsplit("-", 1)[-1]


FILTERS: dict[str, Callable[..., str]] = {
    "short_id": short_id,
    "money": money,
    "when": when,
    "label": label,
}
templates.env.globals["ROLE_NAMES"] = ROLE_NAMES


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


class Pages:
    """A site's pages (the staff portal, the patient app): its templates, rendered with the
    filters above, a security policy that lets its forms lead only to the site itself and to
    `form_targets` (Access Manager's sign-in; for the app, the hosted payment page), never
    cached; and problems shown as pages of the site."""

    def __init__(
        self, templates: Jinja2Templates, form_targets: Callable[[Settings], list[str | None]]
    ) -> None:
        for name, function in FILTERS.items():
            templates.env.filters[name] = function
        self.templates = templates
        self._form_targets = form_targets

    def content_security_policy(self, settings: Settings) -> str:
        targets = ["'self'"]
        for origin in map(_origin, self._form_targets(settings)):
            if origin and origin not in targets:
                targets.append(origin)
        return (
            "default-src 'none'; style-src 'self'; img-src 'self' data:; "
            f"form-action {' '.join(targets)}; frame-ancestors 'none'; base-uri 'none'"
        )

    def page(
        self,
        request: Request,
        template: str,
        values: dict[str, Any] | None = None,
        *,
        status: int = 200,
        actor: Actor | None = None,
        csrf_token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        context: AppContext = request.app.state.context
        body = {
            "actor": actor,
            "csrf_token": csrf_token,
            "demo": context.settings.demo_mode,
            "path": request.url.path,
            **(values or {}),
        }
        response = self.templates.TemplateResponse(request, template, body, status_code=status)
        response.headers["Content-Security-Policy"] = self.content_security_policy(context.settings)
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    def problem_page(
        self,
        request: Request,
        *,
        status: int,
        code: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """A problem (web/problems.py) on the site's path, as a page: its title and detail,
        the code and the request id to quote; never internals."""
        values = {
            "status": status,
            "code": code,
            "title": title,
            "detail": detail,
            "request_id": getattr(request.state, "request_id", None),
        }
        actor = getattr(request.state, "portal_actor", None)
        return self.page(request, "error.html", values, status=status, actor=actor, headers=headers)


PORTAL_PAGES = Pages(templates, lambda settings: [settings.oidc_discovery_url])
page = PORTAL_PAGES.page
problem_page = PORTAL_PAGES.problem_page
