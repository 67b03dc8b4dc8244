"""The staff portal over HTTP (spec §10.2, §9): sign-in through Access Manager's simulator with
OpenID Connect, server-side sessions, CSRF, the order pages and refunds with the MFA step-up.
Each test checks what the database holds, not only the page. Browser tests drive the same pages
in Chromium (tests/e2e/test_portal_browser.py)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from product_shop.access.sessions import PortalSession
from product_shop.config import Settings
from product_shop.db.engine import Database
from product_shop.orders.tables import Order
from product_shop.refunds.tables import Refund
from product_shop.simulators.access import demo_totp_secret
from product_shop.simulators.server import BackgroundServer
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import place_order
from tests.integration.portal_support import (
    access_simulator,  # noqa: F401 (a fixture)
    csrf_of,
    follow,
    portal_settings,
    sign_in,
)


@pytest.fixture
def settings(settings: Settings, access_simulator: BackgroundServer) -> Settings:  # noqa: F811
    return portal_settings(settings, access_simulator.url)


def _sessions(database: Database) -> int:
    with Session(database.engine) as session:
        return int(session.scalar(select(func.count()).select_from(PortalSession)) or 0)


def _refunds(database: Database, order_id: str) -> list[Refund]:
    with Session(database.engine) as session:
        return list(session.scalars(select(Refund).where(Refund.order_id == uuid.UUID(order_id))))


# ---- signing in and out ---------------------------------------------------------------------


def test_a_signed_out_browser_signs_in_through_access_manager_and_lands_where_it_was_going(
    client: TestClient, world: World, database: Database
) -> None:
    page = sign_in(client, world.admin_a, "admin_a", start="/portal/orders?status=Created")

    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert '<option value="Created" selected>' in page.text
    assert "Alice Admin" in page.text
    assert _sessions(database) == 1
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy  # docs/portal.md: no script at all (default-src 'none')
    assert "form-action 'self' http://127.0.0.1:" in policy
    assert page.headers["cache-control"] == "no-store"


# Portal routes a browser without a session may reach: signing in and out.
OPEN_PATHS = {"/portal/login", "/portal/callback", "/portal/signed-out"}


def portal_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every portal page and form target of the app (method, path with ids filled in), so a
    page added later is covered too."""
    found = []
    routes = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        included = getattr(route, "original_router", None)  # a router included as a whole
        routes.extend(included.routes if included is not None else [route])
    for route in routes:
        path = getattr(route, "path", "")
        if (
            not path.startswith("/portal")
            or path in OPEN_PATHS
            or path.startswith("/portal/static")
        ):
            continue
        concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        found.extend((method, concrete) for method in sorted(route.methods - {"HEAD"}))
    return found


def test_no_page_is_reachable_without_a_session(client: TestClient, database: Database) -> None:
    routes = portal_routes(client)
    assert len(routes) >= 20  # every section's pages and forms

    for method, path in routes:
        answer = client.request(method, path, data={"x": "1"}, follow_redirects=False)
        assert answer.status_code == 303, (method, path)
        assert answer.headers["location"].startswith("/portal/login?next=")
    assert _sessions(database) == 0


def test_a_signed_out_session_reaches_no_page(
    client: TestClient, world: World, database: Database
) -> None:
    page = sign_in(client, world.admin_a, "admin_a")
    old_cookie = client.cookies["ps_portal"]
    client.post("/portal/logout", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    client.cookies.set("ps_portal", old_cookie)  # the cookie kept, as a thief would

    for method, path in portal_routes(client):
        answer = client.request(method, path, data={"x": "1"}, follow_redirects=False)
        assert answer.status_code == 303, (method, path)
    assert _sessions(database) == 0


def test_a_callback_this_browser_did_not_start_is_refused(
    client: TestClient, database: Database
) -> None:
    answer = client.get("/portal/callback?code=abc&state=forged")

    assert answer.status_code == 400
    assert "sign_in_expired" in answer.text
    assert _sessions(database) == 0


def test_signing_out_ends_the_session_in_the_database(
    client: TestClient, world: World, database: Database
) -> None:
    page = sign_in(client, world.admin_a, "admin_a")
    assert _sessions(database) == 1

    out = client.post("/portal/logout", data={"csrf_token": csrf_of(page)}, follow_redirects=False)

    assert out.status_code == 303
    assert "/logout?" in out.headers["location"]  # Access Manager's sign-out, then back
    assert _sessions(database) == 0
    assert client.get("/portal/orders", follow_redirects=False).status_code == 303


def test_an_idle_session_expires(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    sign_in(client, world.admin_a, "admin_a")
    idle = timedelta(seconds=settings.portal_session_idle_seconds + 1)
    with Session(database.engine) as session, session.begin():
        (row,) = session.scalars(select(PortalSession))
        session.execute(update(PortalSession).values(last_seen_at=row.last_seen_at - idle))

    assert client.get("/portal/orders", follow_redirects=False).status_code == 303
    assert _sessions(database) == 0


def test_a_patient_is_refused_the_portal(client: TestClient, world: World) -> None:
    page = sign_in(client, world.patient_a, "patient_a")

    assert page.status_code == 403
    assert "The staff portal is for practice staff." in page.text


# ---- orders ---------------------------------------------------------------------------------


def test_the_order_list_filters_by_patient_and_exports_csv(
    client: TestClient, world: World, shop: Shop
) -> None:
    mine = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    other = place_order(client, world.patient_a2, [(shop.kit, 1)])
    sign_in(client, world.admin_a, "admin_a")

    listed = client.get(f"/portal/orders?patient_id={world.patient_a.actor.actor_id}")
    exported = client.get(
        "/portal/orders.csv", params={"fulfilment_type": "In-Clinic", "status": ""}
    )

    assert listed.status_code == 200
    assert mine["order_id"] in listed.text
    assert other["order_id"] not in listed.text
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["order_id"] for row in rows] == [other["order_id"]]
    assert rows[0]["total_minor"] == "24900"


def test_a_bad_filter_is_a_page_with_the_problem_not_a_stack_trace(
    client: TestClient, world: World
) -> None:
    sign_in(client, world.admin_a, "admin_a")

    answer = client.get("/portal/orders?date_from=yesterday")

    assert answer.status_code == 400
    assert "invalid_filter" in answer.text
    assert "Traceback" not in answer.text


def test_the_order_page_saves_the_pms_reference_only_with_the_forms_csrf_token(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    sign_in(client, world.admin_a, "admin_a")
    page = client.get(f"/portal/orders/{order['order_id']}")
    assert page.status_code == 200
    assert "Oral-B Pro 3" in page.text

    forged = client.post(
        f"/portal/orders/{order['order_id']}/pms-invoice-ref",
        data={"pms_invoice_ref": "INV-FORGED", "csrf_token": "not-the-token"},
    )
    missing = client.post(
        f"/portal/orders/{order['order_id']}/pms-invoice-ref",
        data={"pms_invoice_ref": "INV-FORGED"},
    )
    assert forged.status_code == missing.status_code == 403
    assert "csrf_failed" in forged.text

    def stored() -> str | None:
        with Session(database.engine) as session:
            return session.scalar(
                select(Order.pms_invoice_ref).where(Order.order_id == uuid.UUID(order["order_id"]))
            )

    assert stored() is None
    saved = client.post(
        f"/portal/orders/{order['order_id']}/pms-invoice-ref",
        data={"pms_invoice_ref": "INV-2041", "csrf_token": csrf_of(page)},
    )
    assert saved.status_code == 200
    assert "Saved." in saved.text
    assert stored() == "INV-2041"


def test_another_practices_order_is_not_found(client: TestClient, world: World, shop: Shop) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    sign_in(client, world.admin_b, "admin_b")

    assert client.get(f"/portal/orders/{order['order_id']}").status_code == 404
    listed = client.get("/portal/orders")
    assert listed.status_code == 200
    assert order["order_id"] not in listed.text


# ---- refunds --------------------------------------------------------------------------------


def test_a_clinician_cannot_reach_the_refund_pages(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    sign_in(client, world.clinician_a, "clinician_a")

    for path in (f"/portal/orders/{order['order_id']}/refund", "/portal/refunds"):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert answer.headers["content-type"].startswith("text/html")


def test_a_refund_passes_the_mfa_step_up_and_comes_back_to_the_filled_form(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 2)])
    sign_in(client, world.admin_a, "admin_a")
    form = client.get(f"/portal/orders/{order['order_id']}/refund")
    assert form.status_code == 200
    fields = {
        "csrf_token": csrf_of(form),
        "mode": "amount",
        "amount": "12.50",
        "reason_code": "customer_request",
        "note": "Changed their mind",
    }
    key = form.text.split('name="idempotency_key" value="')[1].split('"')[0]
    fields["idempotency_key"] = key

    asked = client.post(
        f"/portal/orders/{order['order_id']}/refund", data=fields, follow_redirects=False
    )
    assert asked.status_code == 303
    assert "stepup=1" in asked.headers["location"]
    assert _refunds(database, order["order_id"]) == []  # nothing refunded before the step-up
    back = follow(client, asked, totp=demo_totp_secret(world.admin_a.actor.actor_id))

    assert back.status_code == 200
    assert 'value="12.50"' in back.text
    assert "Changed their mind" in back.text
    assert '<option value="customer_request" selected>' in back.text
    done = client.post(
        f"/portal/orders/{order['order_id']}/refund",
        data={**fields, "csrf_token": csrf_of(back)},
    )
    assert done.status_code == 200
    assert "Saved." in done.text
    (refund,) = _refunds(database, order["order_id"])
    assert refund.amount_minor == 1250
    assert refund.reason_code == "customer_request"
    assert refund.initiated_by == world.admin_a.actor.actor_id
    listed = client.get("/portal/refunds?reason_code=customer_request")
    assert str(refund.refund_id) not in listed.text  # the list links orders, not refund ids
    assert order["order_id"] in listed.text
    assert "£12.50" in listed.text
    # The same form sent again (a double click) refunds once: its key replays.
    again = client.post(
        f"/portal/orders/{order['order_id']}/refund",
        data={**fields, "csrf_token": csrf_of(back)},
    )
    assert again.status_code == 200
    assert len(_refunds(database, order["order_id"])) == 1


class _Controls(HTMLParser):
    """Form controls a person fills in, and the ids their labels name."""

    def __init__(self) -> None:
        super().__init__()
        self.labelled: set[str] = set()
        self.controls: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label" and found.get("for"):
            self.labelled.add(str(found["for"]))
        hidden = found.get("type") in ("hidden", "submit", "button")
        if tag in ("input", "select", "textarea") and not hidden:
            self.controls.append(found)

    def unlabelled(self) -> list[dict[str, str | None]]:
        return [
            c for c in self.controls if not (c.get("id") in self.labelled or c.get("aria-label"))
        ]


def test_every_form_field_on_the_admins_pages_has_a_label(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    sign_in(client, world.admin_a, "admin_a")
    pages = [
        "/portal/orders",
        f"/portal/orders/{order['order_id']}",
        f"/portal/orders/{order['order_id']}/refund",
        "/portal/refunds",
        "/portal/payment-exceptions",
        "/portal/cancellations",
        "/portal/fulfilment",
        "/portal/recommendations",
        "/portal/catalogue",
        f"/portal/catalogue/{shop.toothbrush}",
    ]
    seen = 0
    for path in pages:
        answer = client.get(path)
        assert answer.status_code == 200, path
        parser = _Controls()
        parser.feed(answer.text)
        seen += len(parser.controls)
        assert parser.unlabelled() == [], path
    assert seen >= 20  # the check looked at real forms


def test_a_refund_by_lines_after_the_step_up_refunds_those_units(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 3)])
    line = order["lines"][0]["line_item_id"]
    sign_in(client, world.admin_a, "admin_a")
    form = client.get(f"/portal/orders/{order['order_id']}/refund")
    fields = {
        "csrf_token": csrf_of(form),
        "mode": "lines",
        f"qty_{line}": "2",
        "reason_code": "customer_request",
        "idempotency_key": str(uuid.uuid4()),
    }
    asked = client.post(
        f"/portal/orders/{order['order_id']}/refund", data=fields, follow_redirects=False
    )
    back = follow(client, asked, totp=demo_totp_secret(world.admin_a.actor.actor_id))
    assert f'name="qty_{line}" type="number" min="0" max="3" value="2"' in back.text

    done = client.post(
        f"/portal/orders/{order['order_id']}/refund",
        data={**fields, "csrf_token": csrf_of(back)},
    )

    assert done.status_code == 200
    (refund,) = _refunds(database, order["order_id"])
    assert refund.kind == "lines"
    assert refund.amount_minor == 2 * 5999
