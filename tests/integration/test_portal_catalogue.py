"""The portal's catalogue settings pages (spec §3, §15.3): a practice admin sets the practice's
retail price, note, visibility and in-clinic stock flag per product through the same service as
`PUT /v1/catalogue/{id}/practice-settings`, with its optimistic concurrency; the cost price is
never on a page. Each test checks the `practice_product_settings` rows, not only the page."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.tables import PracticeProductSetting
from product_shop.config import Settings
from product_shop.db.engine import Database
from product_shop.simulators.server import BackgroundServer
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.portal_support import (
    access_simulator,  # noqa: F401 (a fixture)
    csrf_of,
    portal_settings,
    sign_in,
)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def settings(settings: Settings, access_simulator: BackgroundServer) -> Settings:  # noqa: F811
    return portal_settings(settings, access_simulator.url)


def _setting(
    database: Database, practice_id: uuid.UUID, product_id: uuid.UUID
) -> PracticeProductSetting | None:
    with Session(database.engine) as session:
        return session.scalar(
            select(PracticeProductSetting).where(
                PracticeProductSetting.practice_id == practice_id,
                PracticeProductSetting.product_id == product_id,
            )
        )


def _stored(
    database: Database, practice_id: uuid.UUID, product_id: uuid.UUID
) -> tuple[object, ...]:
    row = _setting(database, practice_id, product_id)
    assert row is not None
    return (
        row.retail_price_minor,
        row.practice_note,
        row.visible,
        row.in_clinic_stock_available,
        row.version,
    )


def _without_ids(page: httpx.Response) -> str:
    """The page's HTML without ids and the CSRF token (random text that could hold any digits)."""
    text = _UUID.sub("", page.text)
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    return text.replace(found.group(1), "") if found else text


def _no_cost_price(page: httpx.Response) -> None:
    text = _without_ids(page)
    for cost in ("3999", "39.99", "9500", "95.00"):  # the toothbrush's and the kit's
        assert cost not in text, cost
    assert "cost" not in text.lower()


def test_the_admin_changes_a_products_settings_from_the_page(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    listed = sign_in(client, world.admin_a, "admin_a", start="/portal/catalogue")
    assert listed.status_code == 200, listed.text
    assert "Oral-B Pro 3" in listed.text
    assert "£59.99" in listed.text
    assert f'href="/portal/catalogue/{shop.toothbrush}"' in listed.text
    _no_cost_price(listed)
    form = client.get(f"/portal/catalogue/{shop.toothbrush}")
    assert form.status_code == 200
    assert 'value="59.99"' in form.text
    assert 'name="version" value="1"' in form.text
    _no_cost_price(form)

    saved = client.post(
        f"/portal/catalogue/{shop.toothbrush}",
        data={
            "csrf_token": csrf_of(form),
            "version": "1",
            "retail_price": "64.50",
            "practice_note": "Ask at reception for a demo",
            "in_clinic_stock_available": "1",
            # "visible" left unticked: hidden from patients
        },
        follow_redirects=False,
    )

    assert saved.status_code == 303
    assert saved.headers["location"] == f"/portal/catalogue/{shop.toothbrush}?saved=settings"
    assert _stored(database, world.practice_a, shop.toothbrush) == (
        6450,
        "Ask at reception for a demo",
        False,
        True,
        2,
    )
    with Session(database.engine) as session:
        entry = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "practice_product.settings_changed")
            .order_by(AuditEntry.position.desc())
            .limit(1)
        ).one()
    assert entry.actor_id == world.admin_a.actor.actor_id
    assert entry.after == {
        "product_id": str(shop.toothbrush),
        "settings": {
            "retail_price_minor": 6450,
            "currency": "GBP",
            "practice_note": "Ask at reception for a demo",
            "visible": False,
            "in_clinic_stock_available": True,
        },
    }
    shown = client.get(saved.headers["location"])
    assert "Saved." in shown.text
    assert 'value="64.50"' in shown.text
    assert 'name="version" value="2"' in shown.text
    _no_cost_price(shown)
    relisted = client.get("/portal/catalogue")
    assert "£64.50" in relisted.text
    assert "Ask at reception for a demo" in relisted.text
    _no_cost_price(relisted)


def test_a_product_not_yet_offered_is_offered_from_its_form(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    make_product: Callable[..., uuid.UUID],
) -> None:
    floss = make_product(name="Water flosser", fulfilment_type="Drop-Ship", cost_price_minor=3999)
    sign_in(client, world.admin_a, "admin_a", start="/portal/catalogue")
    form = client.get(f"/portal/catalogue/{floss}")
    assert 'name="version" value="0"' in form.text
    _no_cost_price(form)
    assert _setting(database, world.practice_a, floss) is None

    client.post(
        f"/portal/catalogue/{floss}",
        data={"csrf_token": csrf_of(form), "version": "0", "retail_price": "£45", "visible": "1"},
    )

    assert _stored(database, world.practice_a, floss) == (4500, None, True, False, 1)


def test_a_stale_version_shows_the_conflict_and_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    sign_in(client, world.admin_a, "admin_a", start="/portal/catalogue")
    form = client.get(f"/portal/catalogue/{shop.toothbrush}")
    fields = {"csrf_token": csrf_of(form), "retail_price": "70.00", "visible": "1"}
    first = client.post(f"/portal/catalogue/{shop.toothbrush}", data={**fields, "version": "1"})
    assert first.status_code == 200
    assert "Saved." in first.text
    before = _stored(database, world.practice_a, shop.toothbrush)

    stale = client.post(
        f"/portal/catalogue/{shop.toothbrush}",
        data={**fields, "version": "1", "retail_price": "12.00", "practice_note": "Stale"},
    )

    assert stale.status_code == 412
    assert "version_mismatch" not in stale.text  # the detail, for people
    assert "Precondition failed" in stale.text
    assert "nothing was changed" in stale.text
    assert 'value="12.00"' in stale.text  # what was entered is kept
    assert 'id="saved-now"' in stale.text
    assert "£70.00" in stale.text
    assert 'name="version" value="2"' in stale.text
    assert before == (7000, None, True, False, 2)
    assert _stored(database, world.practice_a, shop.toothbrush) == before
    _no_cost_price(stale)
    malformed = client.post(
        f"/portal/catalogue/{shop.toothbrush}", data={**fields, "version": "2x"}
    )
    assert malformed.status_code == 400
    assert "Reload the page" in malformed.text
    assert _stored(database, world.practice_a, shop.toothbrush) == before


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ("12,50", "pounds and pence"),
        ("12.505", "pounds and pence"),
        ("-3.00", "pounds and pence"),
        ("", "pounds and pence"),
        ("twelve", "pounds and pence"),
        ("0.00", "at least £0.01"),
    ],
)
def test_a_bad_price_shows_a_clear_error_and_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database, price: str, message: str
) -> None:
    sign_in(client, world.admin_a, "admin_a", start="/portal/catalogue")
    form = client.get(f"/portal/catalogue/{shop.toothbrush}")
    before = _stored(database, world.practice_a, shop.toothbrush)

    answer = client.post(
        f"/portal/catalogue/{shop.toothbrush}",
        data={
            "csrf_token": csrf_of(form),
            "version": "1",
            "retail_price": price,
            "practice_note": "Kept",
            "visible": "1",
        },
    )

    assert answer.status_code == 400
    assert message in answer.text
    assert 'role="alert"' in answer.text
    assert "Kept</textarea>" in answer.text
    assert _stored(database, world.practice_a, shop.toothbrush) == before


def test_a_note_too_long_is_refused_with_the_apis_rule(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    sign_in(client, world.admin_a, "admin_a", start="/portal/catalogue")
    form = client.get(f"/portal/catalogue/{shop.toothbrush}")
    before = _stored(database, world.practice_a, shop.toothbrush)

    answer = client.post(
        f"/portal/catalogue/{shop.toothbrush}",
        data={
            "csrf_token": csrf_of(form),
            "version": "1",
            "retail_price": "10.00",
            "practice_note": "x" * 501,
        },
    )

    assert answer.status_code == 400
    assert "at most 500 characters" in answer.text
    assert _stored(database, world.practice_a, shop.toothbrush) == before


def test_a_clinician_gets_403_pages_and_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    page = sign_in(client, world.clinician_a, "clinician_a")
    before = _stored(database, world.practice_a, shop.toothbrush)

    for path in ("/portal/catalogue", f"/portal/catalogue/{shop.toothbrush}"):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert answer.headers["content-type"].startswith("text/html")
    posted = client.post(
        f"/portal/catalogue/{shop.toothbrush}",
        data={"csrf_token": csrf_of(page), "version": "1", "retail_price": "1.00"},
    )

    assert posted.status_code == 403
    assert 'href="/portal/catalogue"' not in page.text  # not in the clinician's navigation
    assert _stored(database, world.practice_a, shop.toothbrush) == before


def test_a_form_without_its_csrf_token_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    sign_in(client, world.admin_a, "admin_a", start="/portal/catalogue")
    before = _stored(database, world.practice_a, shop.toothbrush)
    fields = {"version": "1", "retail_price": "1.00", "visible": "1"}

    missing = client.post(f"/portal/catalogue/{shop.toothbrush}", data=fields)
    forged = client.post(
        f"/portal/catalogue/{shop.toothbrush}", data={**fields, "csrf_token": "forged"}
    )

    assert missing.status_code == forged.status_code == 403
    assert "csrf_failed" in forged.text
    assert _stored(database, world.practice_a, shop.toothbrush) == before


def test_another_practices_admin_never_sees_practice_as_settings(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    offer: Callable[..., None],
) -> None:
    offer(world.admin_a, shop.toothbrush, 4321, note="Practice A only note")
    listed = sign_in(client, world.admin_b, "admin_b", start="/portal/catalogue")
    form = client.get(f"/portal/catalogue/{shop.toothbrush}")

    for page in (listed, form):
        assert page.status_code == 200
        assert "Oral-B Pro 3" in page.text
        assert "Practice A only note" not in page.text
        for price in ("43.21", "60.00", "249.00"):  # practice A's prices
            assert price not in page.text, price
        _no_cost_price(page)
    assert "Not offered" in listed.text
    assert 'name="version" value="0"' in form.text
    # B's own save makes B's row and leaves A's alone
    client.post(
        f"/portal/catalogue/{shop.toothbrush}",
        data={"csrf_token": csrf_of(form), "version": "0", "retail_price": "9.99"},
    )
    assert _stored(database, world.practice_b, shop.toothbrush) == (999, None, False, False, 1)
    assert _stored(database, world.practice_a, shop.toothbrush)[:2] == (
        4321,
        "Practice A only note",
    )
