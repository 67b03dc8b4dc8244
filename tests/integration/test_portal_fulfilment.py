"""The portal's fulfilment pages (spec §6, §10.2): staff work the exception queue and in-clinic
collections and redeem vouchers from the page, through the same service calls as the API. Each
test checks what the database holds, not only the page."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.catalogue.tables import PracticeProductSetting
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.orders.tables import OrderLine, Voucher
from product_shop.simulators.server import BackgroundServer
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import events_of, place_order, refused_by_the_supplier
from tests.integration.portal_support import (
    access_simulator,  # noqa: F401 (a fixture)
    csrf_of,
    portal_settings,
    sign_in,
)

PAGE = "/portal/fulfilment"


@pytest.fixture
def settings(settings: Settings, access_simulator: BackgroundServer) -> Settings:  # noqa: F811
    return portal_settings(settings, access_simulator.url)


def _line(database: Database, line_item_id: str) -> OrderLine:
    with Session(database.engine) as session:
        line = session.get(OrderLine, uuid.UUID(line_item_id))
        assert line is not None
        session.expunge(line)
        return line


def _move(
    client: TestClient, order: dict[str, Any], csrf: str | None, **fields: str
) -> httpx.Response:
    line_item_id = order["lines"][0]["line_item_id"]
    data = {**fields, **({"csrf_token": csrf} if csrf is not None else {})}
    return client.post(
        f"{PAGE}/orders/{order['order_id']}/lines/{line_item_id}",
        data=data,
        follow_redirects=False,
    )


# ---- in-clinic collections -------------------------------------------------------------------


def test_staff_mark_an_in_clinic_line_ready_then_collected_and_the_page_shows_the_stock_flag(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    line_item_id = order["lines"][0]["line_item_id"]
    page = sign_in(client, world.staff_a, "staff_a", start=PAGE)
    assert page.status_code == 200, page.text
    row = page.text.split(f'id="line-{line_item_id}"')[1].split("</tr>")[0]
    assert "Home Whitening Kit" in row
    assert "In stock" in row
    assert "Preparing" in row
    # Practice staff may not open the order pages: no link to them.
    assert f'href="/portal/orders/{order["order_id"]}"' not in page.text
    assert _line(database, line_item_id).fulfilment_status == "preparing"

    ready = _move(client, order, csrf_of(page), status="ready_for_collection")
    assert ready.status_code == 303
    assert ready.headers["location"] == f"{PAGE}?saved=ready_for_collection"
    assert _line(database, line_item_id).fulfilment_status == "ready_for_collection"
    shown = client.get(ready.headers["location"])
    assert "Marked ready for collection" in shown.text
    assert "Ready for collection" in shown.text.split(f'id="line-{line_item_id}"')[1]

    collected = _move(client, order, csrf_of(shown), status="collected")
    assert collected.headers["location"] == f"{PAGE}?saved=collected"
    line = _line(database, line_item_id)
    assert (line.fulfilment_status, line.collected_at is not None) == ("collected", True)
    assert f'id="line-{line_item_id}"' not in client.get(PAGE).text  # left the queue

    # A stale form (ready again, after collection) is refused on the page; nothing changes.
    stale = _move(client, order, csrf_of(shown), status="ready_for_collection")
    assert stale.status_code == 409
    assert 'role="alert"' in stale.text
    assert "invalid_fulfilment_transition" in stale.text
    assert _line(database, line_item_id).fulfilment_status == "collected"


def test_the_stock_flag_says_when_the_practice_has_none_and_a_clinician_sees_order_links(
    client: TestClient, world: World, shop: Shop, offer: Any, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 2)])
    offer(world.admin_a, shop.kit, 24900, stock=False)  # the last ones went to this order
    page = sign_in(client, world.clinician_a, "clinician_a", start=PAGE)

    row = page.text.split(f'id="line-{order["lines"][0]["line_item_id"]}"')[1].split("</tr>")[0]
    assert "Not in stock" in row
    assert "In stock<" not in row
    assert f'href="/portal/orders/{order["order_id"]}"' in row
    with Session(database.engine) as session:
        flag = session.scalar(
            select(PracticeProductSetting.in_clinic_stock_available).where(
                PracticeProductSetting.practice_id == world.practice_a,
                PracticeProductSetting.product_id == shop.kit,
            )
        )
        line = session.scalar(select(OrderLine))
    assert flag is False
    assert line is not None
    assert (line.quantity, line.fulfilment_status) == (2, "preparing")


def test_the_collection_queue_pages_with_its_own_cursor(
    client: TestClient, world: World, shop: Shop, database: Database, monkeypatch: Any
) -> None:
    from product_shop.web.portal import fulfilment

    monkeypatch.setattr(fulfilment, "PAGE_SIZE", 1)
    first = place_order(client, world.patient_a, [(shop.kit, 1)])
    second = place_order(client, world.patient_a2, [(shop.kit, 1)])
    page = sign_in(client, world.staff_a, "staff_a", start=PAGE)

    assert f'id="line-{first["lines"][0]["line_item_id"]}"' in page.text
    assert f'id="line-{second["lines"][0]["line_item_id"]}"' not in page.text
    more = re.search(r'href="(/portal/fulfilment\?collections_cursor=[^"]+)" rel="next"', page.text)
    assert more, page.text
    rest = client.get(more.group(1).replace("&amp;", "&"))
    assert f'id="line-{second["lines"][0]["line_item_id"]}"' in rest.text
    assert f'id="line-{first["lines"][0]["line_item_id"]}"' not in rest.text
    with Session(database.engine) as session:
        states = set(session.scalars(select(OrderLine.fulfilment_status)))
    assert states == {"preparing"}  # paging moved nothing


# ---- exceptions ------------------------------------------------------------------------------


def test_drop_ship_exceptions_are_resolved_from_the_page(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
) -> None:
    delivered, refund, resend = refused_by_the_supplier(
        client, context, world.patient_a, shop.toothbrush, suppliers_url, 3
    )
    ids = [o["lines"][0]["line_item_id"] for o in (delivered, refund, resend)]
    assert {_line(database, i).fulfilment_status for i in ids} == {"exception"}
    page = sign_in(client, world.admin_a, "admin_a", start=PAGE)
    for line_item_id in ids:
        row = page.text.split(f'id="line-{line_item_id}"')[1].split("</tr>")[0]
        assert "Out of stock" in row
        assert "Resend to supplier" in row
        assert "Leave for refund" in row
    csrf = csrf_of(page)

    assert _move(client, delivered, csrf, status="delivered").status_code == 303
    left = _move(client, refund, csrf, status="exception", resolution="refund")
    assert left.headers["location"] == f"{PAGE}?saved=exception"
    assert _move(client, resend, csrf, status="sent_to_supplier").status_code == 303

    done = _line(database, ids[0])
    assert (done.fulfilment_status, done.delivered_at is not None) == ("delivered", True)
    assert done.exception_reason is None
    kept = _line(database, ids[1])
    assert (kept.fulfilment_status, kept.exception_resolution) == ("exception", "refund")
    again = _line(database, ids[2])
    assert (again.exception_resolution, again.shipment_attempt) == ("resent", 2)
    requested = [e.data["line_item_id"] for e in events_of(database, "shipment_requested")]
    assert requested.count(ids[2]) == 2
    assert requested.count(ids[1]) == 1
    queue = client.get(f"{PAGE}?saved=exception")
    assert "Left for a refund" in queue.text
    assert not any(f'id="line-{i}"' in queue.text for i in ids)


def test_a_post_without_its_csrf_token_changes_nothing(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
) -> None:
    (order,) = refused_by_the_supplier(
        client, context, world.patient_a, shop.toothbrush, suppliers_url
    )
    kit = place_order(client, world.patient_a, [(shop.kit, 1)])
    sign_in(client, world.staff_a, "staff_a", start=PAGE)

    missing = _move(client, order, None, status="delivered")
    forged = _move(client, kit, "not-the-token", status="ready_for_collection")

    assert missing.status_code == forged.status_code == 403
    assert "csrf_failed" in missing.text
    line = _line(database, order["lines"][0]["line_item_id"])
    assert (line.fulfilment_status, line.exception_resolution) == ("exception", None)
    assert _line(database, kit["lines"][0]["line_item_id"]).fulfilment_status == "preparing"


# ---- who may ---------------------------------------------------------------------------------


def test_finance_may_not_use_the_fulfilment_pages(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.kit, 1)])
    page = sign_in(client, world.finance_a, "finance_a", start="/portal/refunds")
    assert 'href="/portal/fulfilment"' not in page.text  # not in finance's navigation

    listed = client.get(PAGE)
    moved = _move(client, order, csrf_of(page), status="ready_for_collection")

    assert listed.status_code == moved.status_code == 403
    assert listed.headers["content-type"].startswith("text/html")
    assert "Home Whitening Kit" not in listed.text
    assert _line(database, order["lines"][0]["line_item_id"]).fulfilment_status == "preparing"


def test_another_practice_neither_sees_nor_moves_practice_as_lines(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
) -> None:
    (dropped,) = refused_by_the_supplier(
        client, context, world.patient_a, shop.toothbrush, suppliers_url
    )
    kit = place_order(client, world.patient_a, [(shop.kit, 1)])
    page = sign_in(client, world.admin_b, "admin_b", start=PAGE)

    assert page.status_code == 200
    for order in (dropped, kit):
        assert order["order_id"] not in page.text
        assert order["lines"][0]["line_item_id"] not in page.text
    assert "No open exceptions." in page.text
    assert "Nothing to prepare or collect." in page.text
    moved = _move(client, kit, csrf_of(page), status="ready_for_collection")
    assert moved.status_code == 404
    assert _line(database, kit["lines"][0]["line_item_id"]).fulfilment_status == "preparing"
    line = _line(database, dropped["lines"][0]["line_item_id"])
    assert (line.fulfilment_status, line.exception_resolution) == ("exception", None)


# ---- vouchers --------------------------------------------------------------------------------


def _voucher(database: Database, order: dict[str, Any]) -> Voucher:
    with Session(database.engine) as session:
        found = session.scalar(
            select(Voucher).where(Voucher.order_id == uuid.UUID(order["order_id"]))
        )
        assert found is not None
        session.expunge(found)
        return found


def test_a_voucher_is_redeemed_from_the_page_once(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    (voucher,) = order["lines"][0]["vouchers"]  # what the patient's order shows them
    page = sign_in(client, world.staff_a, "staff_a", start=PAGE)
    assert _voucher(database, order).redeemed_at is None

    redeemed = client.post(
        f"{PAGE}/vouchers",
        data={"csrf_token": csrf_of(page), "code": voucher["code"].lower()},
        follow_redirects=False,
    )

    assert redeemed.status_code == 303
    stored = _voucher(database, order)
    assert stored.redeemed_at is not None
    assert redeemed.headers["location"] == f"{PAGE}?saved=voucher&voucher={stored.voucher_id}"
    shown = client.get(redeemed.headers["location"])
    assert "Voucher redeemed." in shown.text
    assert "Hygienist voucher" in shown.text
    assert f"<code>{stored.last_four}</code>" in shown.text
    assert voucher["code"] not in shown.text
    again = client.post(
        f"{PAGE}/vouchers", data={"csrf_token": csrf_of(page), "code": voucher["code"]}
    )
    assert again.status_code == 409
    assert "voucher_used" in again.text
    assert _voucher(database, order).redeemed_at == stored.redeemed_at


def test_a_voucher_is_not_redeemed_without_the_token_or_at_another_practice(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    code = order["lines"][0]["vouchers"][0]["code"]
    page = sign_in(client, world.admin_b, "admin_b", start=PAGE)

    forged = client.post(f"{PAGE}/vouchers", data={"code": code})
    elsewhere = client.post(f"{PAGE}/vouchers", data={"csrf_token": csrf_of(page), "code": code})
    short = client.post(f"{PAGE}/vouchers", data={"csrf_token": csrf_of(page), "code": "PRIM"})

    assert forged.status_code == 403
    assert "csrf_failed" in forged.text
    assert elsewhere.status_code == 404
    assert "voucher_not_found" in elsewhere.text
    assert 'id="voucher_code"' in elsewhere.text  # the form again, to correct the code
    assert short.status_code == 400
    assert "validation_failed" in short.text
    assert _voucher(database, order).redeemed_at is None


def test_the_redemption_notice_names_only_the_practices_own_vouchers(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    taken = client.post(
        "/v1/vouchers/redemptions",
        headers=world.staff_a.headers,
        json={"code": order["lines"][0]["vouchers"][0]["code"]},
    )
    assert taken.status_code == 200, taken.text
    stored = _voucher(database, order)
    assert stored.redeemed_at is not None
    sign_in(client, world.admin_b, "admin_b", start=PAGE)

    shown = client.get(f"{PAGE}?saved=voucher&voucher={stored.voucher_id}")

    assert shown.status_code == 200
    assert "Voucher redeemed." in shown.text
    assert "Hygienist voucher" not in shown.text
    assert f"<code>{stored.last_four}</code>" not in shown.text
