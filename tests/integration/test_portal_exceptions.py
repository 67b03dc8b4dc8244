"""The portal's payment exceptions and cancellation requests (spec §5.3, §15.4): captures that
made no order, and the patients' requests to cancel, each listed for its own practice's staff
whose role may see them. Each test checks the rows the page lists against the database."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from product_shop.config import Settings
from product_shop.db.engine import Database
from product_shop.refunds.tables import CancellationRequest, PaymentException
from product_shop.simulators.server import BackgroundServer
from product_shop.web.portal import exceptions
from tests.conftest import World
from tests.integration.checkout_support import Shop, key, paid_checkout
from tests.integration.fulfilment_support import place_order
from tests.integration.portal_support import (
    access_simulator,  # noqa: F401 (a fixture)
    portal_settings,
    sign_in,
)


@pytest.fixture
def settings(settings: Settings, access_simulator: BackgroundServer) -> Settings:  # noqa: F811
    return portal_settings(settings, access_simulator.url)


def orphaned_capture(client: TestClient, world: World, shop: Shop, payments_url: str) -> str:
    """A capture of the wrong amount (100 for a 6000 voucher): no order, a payment exception
    (as tests/integration/test_refund_effects.py makes one). Returns the intent id."""
    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent_id: str = checkout["payment"]["intent_id"]
    httpx.patch(
        f"{payments_url}/_simulator/intents/{intent_id}", json={"amount_minor": 100}
    ).raise_for_status()
    completed = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )
    assert completed.status_code == 409, completed.text
    return intent_id


def _exceptions(database: Database) -> list[PaymentException]:
    with Session(database.engine) as session:
        return list(session.scalars(select(PaymentException)))


def _requests(database: Database) -> list[CancellationRequest]:
    with Session(database.engine) as session:
        return list(session.scalars(select(CancellationRequest)))


def ask_to_cancel(client: TestClient, world: World, order_id: str) -> dict[str, Any]:
    answer = client.post(
        f"/v1/orders/{order_id}/cancellation-requests",
        headers={**world.patient_a.headers, **key()},
        json={"reason": "Ordered the wrong one"},
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


# ---- payment exceptions ---------------------------------------------------------------------


@pytest.mark.parametrize("handle", ["admin_a", "finance_a"])
def test_a_payment_exception_is_listed_for_its_practices_admin_and_finance(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    handle: str,
) -> None:
    intent_id = orphaned_capture(client, world, shop, payments_url)
    (row,) = _exceptions(database)
    assert (row.practice_id, row.intent_id, row.amount_minor) == (world.practice_a, intent_id, 100)

    page = sign_in(client, getattr(world, handle), handle, start="/portal/payment-exceptions")

    assert page.status_code == 200, page.text
    assert row.payment_ref in page.text
    assert "£1.00" in page.text
    assert "£60.00" in page.text
    assert "Amount mismatch" in page.text
    assert ">Open<" in page.text
    assert 'href="/portal/payment-exceptions"' in page.text  # in the navigation


def test_a_refunded_payment_exception_shows_only_when_asked_for(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    orphaned_capture(client, world, shop, payments_url)
    with Session(database.engine) as session, session.begin():
        session.execute(update(PaymentException).values(refunded_minor=100))
    (row,) = _exceptions(database)
    sign_in(client, world.finance_a, "finance_a", start="/portal/payment-exceptions")

    default = client.get("/portal/payment-exceptions")
    everything = client.get("/portal/payment-exceptions?include_refunded=1")

    assert row.payment_ref not in default.text
    assert "No payment exceptions to refund" in default.text
    assert row.payment_ref in everything.text
    assert ">Refunded<" in everything.text
    assert 'id="include_refunded" name="include_refunded" value="1" checked' in everything.text


def test_payment_exceptions_page_through_the_list(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(2):
        orphaned_capture(client, world, shop, payments_url)
    refs = {row.payment_ref for row in _exceptions(database)}
    assert len(refs) == 2
    sign_in(client, world.admin_a, "admin_a", start="/portal/payment-exceptions")
    monkeypatch.setattr(exceptions, "PAGE_SIZE", 1)

    first = client.get("/portal/payment-exceptions?include_refunded=1")
    link = first.text.split('<p class="paging"><a href="')[1].split('"')[0].replace("&amp;", "&")
    second = client.get(link)

    on_first = {ref for ref in refs if ref in first.text}
    on_second = {ref for ref in refs if ref in second.text}
    assert len(on_first) == len(on_second) == 1
    assert on_first | on_second == refs
    assert "include_refunded=1" in link  # the filter is kept across pages
    assert 'rel="next"' not in second.text


def test_payment_exceptions_are_not_for_another_practice_or_a_clinician(
    client: TestClient, world: World, shop: Shop, database: Database, payments_url: str
) -> None:
    orphaned_capture(client, world, shop, payments_url)
    (row,) = _exceptions(database)

    other = sign_in(client, world.admin_b, "admin_b", start="/portal/payment-exceptions")
    assert other.status_code == 200
    assert row.payment_ref not in other.text
    assert "No payment exceptions" in other.text
    client.cookies.clear()
    for person, handle in ((world.clinician_a, "clinician_a"), (world.staff_a, "staff_a")):
        refused = sign_in(client, person, handle, start="/portal/payment-exceptions")
        assert refused.status_code == 403, handle
        assert refused.headers["content-type"].startswith("text/html")
        assert row.payment_ref not in refused.text
        client.cookies.clear()
    assert [r.refunded_minor for r in _exceptions(database)] == [0]


# ---- cancellation requests ------------------------------------------------------------------


def test_a_patients_cancellation_request_is_listed_with_its_order(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    made = ask_to_cancel(client, world, order["order_id"])
    (row,) = _requests(database)
    assert (str(row.request_id), row.practice_id, row.status) == (
        made["request_id"],
        world.practice_a,
        "open",
    )

    admin = sign_in(client, world.admin_a, "admin_a", start="/portal/cancellations")

    assert admin.status_code == 200, admin.text
    assert f'<a href="/portal/orders/{row.order_id}">' in admin.text
    assert "Ordered the wrong one" in admin.text
    assert "1 \N{MULTIPLICATION SIGN} Home Whitening Kit" in admin.text
    assert ">Open<" in admin.text
    client.cookies.clear()
    # staff may see the request but not the order: its id, no link
    staff = sign_in(client, world.staff_a, "staff_a", start="/portal/cancellations")
    assert staff.status_code == 200
    assert str(row.order_id) in staff.text
    assert f"/portal/orders/{row.order_id}" not in staff.text


def test_the_status_filter_shows_resolved_requests(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    ask_to_cancel(client, world, order["order_id"])
    with Session(database.engine) as session, session.begin():
        session.execute(update(CancellationRequest).values(status="closed"))
    (row,) = _requests(database)
    sign_in(client, world.finance_a, "finance_a", start="/portal/cancellations")

    open_only = client.get("/portal/cancellations")
    closed = client.get("/portal/cancellations?status=closed")
    any_status = client.get("/portal/cancellations?status=")
    bad = client.get("/portal/cancellations?status=deleted")

    assert str(row.order_id) not in open_only.text
    assert str(row.order_id) in closed.text
    assert ">Closed<" in closed.text
    assert str(row.order_id) in any_status.text
    assert bad.status_code == 400
    assert "invalid_filter" in bad.text


def test_cancellation_requests_are_not_for_another_practice_or_a_clinician(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    ask_to_cancel(client, world, order["order_id"])
    (row,) = _requests(database)

    other = sign_in(client, world.admin_b, "admin_b", start="/portal/cancellations")
    assert other.status_code == 200
    assert str(row.order_id) not in other.text
    assert "Ordered the wrong one" not in other.text
    assert "No cancellation requests" in other.text
    client.cookies.clear()
    refused = sign_in(client, world.clinician_a, "clinician_a", start="/portal/cancellations")
    assert refused.status_code == 403
    assert str(row.order_id) not in refused.text
    assert [(r.request_id, r.status) for r in _requests(database)] == [(row.request_id, "open")]
    assert uuid.UUID(str(row.practice_id)) == world.practice_a


def test_the_cancellation_list_pages_oldest_first(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exceptions, "PAGE_SIZE", 1)
    for _ in range(2):
        order = place_order(client, world.patient_a, [(shop.kit, 1)])
        ask_to_cancel(client, world, order["order_id"])
    first, second = sorted(_requests(database), key=lambda r: (r.requested_at, r.request_id))

    page_one = sign_in(client, world.admin_a, "admin_a", start="/portal/cancellations")
    assert str(first.order_id) in page_one.text
    assert str(second.order_id) not in page_one.text
    found = re.search(r'href="(/portal/cancellations\?[^"]+)" rel="next"', page_one.text)
    assert found is not None, page_one.text
    page_two = client.get(html.unescape(found.group(1)))

    assert page_two.status_code == 200
    assert str(second.order_id) in page_two.text
    assert str(first.order_id) not in page_two.text
    assert 'rel="next"' not in page_two.text
