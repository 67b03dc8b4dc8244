"""The portal's forms against what people may type and who may use them (spec §9, §10.2;
docs/portal.md): Finance refunds an order it reaches by its id (it does not browse orders), a
number typed in other digits is a form problem rather than a 500, the PMS reference form checks
its version and is shown again filled in when it fails, and shows only to those who may save it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access import sessions
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

SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() says yes, int() says no


@pytest.fixture
def settings(settings: Settings, access_simulator: BackgroundServer) -> Settings:  # noqa: F811
    return portal_settings(settings, access_simulator.url)


def _order(database: Database, order_id: str) -> Order:
    with Session(database.engine) as session:
        found = session.get(Order, uuid.UUID(order_id))
        assert found is not None
        session.expunge(found)
        return found


def _refunds(database: Database, order_id: str) -> list[Refund]:
    with Session(database.engine) as session:
        return list(session.scalars(select(Refund).where(Refund.order_id == uuid.UUID(order_id))))


def test_finance_refunds_an_order_it_reaches_by_its_id_without_browsing_orders(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    listed = sign_in(client, world.finance_a, "finance_a", start="/portal/refunds")
    assert listed.status_code == 200, listed.text
    assert 'action="/portal/refunds/start"' in listed.text
    assert client.get(f"/portal/orders/{order['order_id']}").status_code == 403  # spec §9

    opened = client.get(
        "/portal/refunds/start", params={"order_id": order["order_id"]}, follow_redirects=False
    )
    assert opened.status_code == 303
    form = client.get(opened.headers["location"])
    assert form.status_code == 200, form.text
    assert "Oral-B Pro 3" in form.text
    key = form.text.split('name="idempotency_key" value="')[1].split('"')[0]
    fields = {
        "csrf_token": csrf_of(form),
        "idempotency_key": key,
        "mode": "amount",
        "amount": "2.50",
        "reason_code": "damaged_item",
    }
    asked = client.post(
        f"/portal/orders/{order['order_id']}/refund", data=fields, follow_redirects=False
    )
    back = follow(client, asked, totp=demo_totp_secret(world.finance_a.actor.actor_id))
    assert back.status_code == 200, back.text
    assert 'value="2.50"' in back.text
    done = client.post(
        f"/portal/orders/{order['order_id']}/refund",
        data={**fields, "csrf_token": csrf_of(back)},
        follow_redirects=False,
    )

    assert done.status_code == 303
    assert done.headers["location"] == "/portal/refunds?saved=refund"
    (refund,) = _refunds(database, order["order_id"])
    assert (refund.amount_minor, refund.initiated_by) == (250, world.finance_a.actor.actor_id)
    page = client.get(done.headers["location"])
    assert "Refund recorded." in page.text
    assert f'href="/portal/orders/{order["order_id"]}/refund"' in page.text
    assert f'href="/portal/orders/{order["order_id"]}"' not in page.text
    bad = client.get("/portal/refunds/start", params={"order_id": "not-an-id"})
    assert bad.status_code == 400
    assert "invalid_input" in bad.text


def test_a_number_typed_in_other_digits_is_a_form_problem_not_a_500(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    page = sign_in(client, world.admin_a, "admin_a", start=f"/portal/orders/{order['order_id']}")
    token = csrf_of(page)
    line = order["lines"][0]["line_item_id"]

    answers = {
        "catalogue version": client.post(
            f"/portal/catalogue/{shop.toothbrush}",
            data={"csrf_token": token, "retail_price": "35.00", "version": SUPERSCRIPT_TWO},
        ),
        "pms version": client.post(
            f"/portal/orders/{order['order_id']}/pms-invoice-ref",
            data={"csrf_token": token, "pms_invoice_ref": "R1", "version": SUPERSCRIPT_TWO},
        ),
        "refund quantity": client.post(
            f"/portal/orders/{order['order_id']}/refund",
            data={
                "csrf_token": token,
                "mode": "lines",
                f"qty_{line}": SUPERSCRIPT_TWO,
                "reason_code": "order_error",
                "idempotency_key": str(uuid.uuid4()),
            },
        ),
    }

    for what, answer in answers.items():
        assert answer.status_code == 400, (what, answer.text)
        assert answer.headers["content-type"].startswith("text/html"), what
    assert _order(database, order["order_id"]).pms_invoice_ref is None
    assert _refunds(database, order["order_id"]) == []


def test_the_pms_form_checks_its_version_and_comes_back_filled_in_when_it_fails(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    path = f"/portal/orders/{order['order_id']}/pms-invoice-ref"
    page = sign_in(client, world.admin_a, "admin_a", start=f"/portal/orders/{order['order_id']}")
    version = _order(database, order["order_id"]).version
    assert f'name="version" value="{version}"' in page.text
    token = csrf_of(page)

    malformed = client.post(
        path, data={"csrf_token": token, "pms_invoice_ref": "R3", "version": "abc"}
    )
    assert malformed.status_code == 400
    assert "The form&#39;s version is not valid" in malformed.text
    too_long = client.post(
        path, data={"csrf_token": token, "pms_invoice_ref": "X" * 121, "version": str(version)}
    )
    assert too_long.status_code == 400
    assert "must be 1 to 120 characters" in too_long.text
    assert f'value="{"X" * 121}"' in too_long.text  # shown again as typed
    assert f'name="version" value="{version}"' in too_long.text
    assert _order(database, order["order_id"]).pms_invoice_ref is None

    saved = client.post(
        path,
        data={"csrf_token": token, "pms_invoice_ref": "INV-1", "version": str(version)},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    stale = client.post(
        path, data={"csrf_token": token, "pms_invoice_ref": "INV-2", "version": str(version)}
    )

    assert stale.status_code == 412
    assert "Someone changed this order after you opened it" in stale.text
    assert "The reference saved now is: INV-1" in stale.text
    assert 'value="INV-2"' in stale.text
    current = _order(database, order["order_id"])
    assert current.pms_invoice_ref == "INV-1"
    assert f'name="version" value="{current.version}"' in stale.text  # saving again is deliberate


def test_a_clinician_sees_the_pms_reference_but_not_a_form_to_change_it(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    page = sign_in(
        client, world.clinician_a, "clinician_a", start=f"/portal/orders/{order['order_id']}"
    )

    assert page.status_code == 200, page.text
    assert "PMS invoice reference" in page.text
    assert "/pms-invoice-ref" not in page.text
    assert "None recorded." in page.text


def test_one_sites_session_is_no_session_at_the_other(world: World, database: Database) -> None:
    """docs/patient-app.md: a session cookie of one site is never taken for the other's."""
    limits = sessions.SessionLimits(lifetime=timedelta(hours=8), idle=timedelta(minutes=30))
    now = datetime.now(UTC)
    claims = {"sub": world.patient_a.actor.actor_id, "role": "patient"}
    with database.unit_of_work() as session:
        token, _ = sessions.open_session(session, claims, now=now, limits=limits, site="app")
    with database.unit_of_work() as session:
        assert sessions.find_session(session, token, now=now, limits=limits, site="portal") is None
        found = sessions.find_session(session, token, now=now, limits=limits, site="app")
        assert found is not None
        assert found.subject == world.patient_a.actor.actor_id
