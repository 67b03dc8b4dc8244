"""Catalogue behaviour through the HTTP API (spec §3.1, §4.2, §9, §15.3)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from httpx import Response

from product_shop.catalogue.tables import Product
from product_shop.db.engine import Database
from tests.conftest import World
from tests.integration.conftest import count_rows

MakeProduct = Callable[..., uuid.UUID]
Offer = Callable[..., None]

PATIENT_FIELDS = {
    "product_id",
    "name",
    "description",
    "imagery_ref",
    "category",
    "fulfilment_type",
    "availability_status",
    "retail_price_minor",
    "currency",
    "practice_note",
    "purchasable",
}


def _items(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, object]]:
    response = client.get("/v1/catalogue", headers=headers)
    assert response.status_code == 200, response.text
    return {item["product_id"]: item for item in response.json()["items"]}


def test_a_patient_sees_only_their_practices_visible_products_without_cost_price(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    shown = make_product(name="TePe Interdental Brushes")
    hidden = make_product(name="Sonicare heads")
    other_practice_only = make_product(name="Waterpik")
    not_offered = make_product(name="Curaprox")
    offer(world.admin_a, shown, 599, note="Use the sizes we marked.")
    offer(world.admin_a, hidden, 3299, visible=False)
    offer(world.admin_b, other_practice_only, 8499)

    items = _items(client, world.patient_a.headers)

    assert set(items) == {str(shown)}
    item = items[str(shown)]
    assert set(item) == PATIENT_FIELDS
    assert item["retail_price_minor"] == 599
    assert item["practice_note"] == "Use the sizes we marked."
    assert item["purchasable"] is True
    assert (
        "cost_price_minor" not in client.get("/v1/catalogue", headers=world.patient_a.headers).text
    )
    assert str(not_offered) not in items


def test_practice_staff_see_every_product_with_cost_price_and_settings(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    offered = make_product(cost_price_minor=350)
    not_offered = make_product(name="Waterpik", cost_price_minor=5499)
    offer(world.admin_a, offered, 599, visible=False)

    for person in (world.admin_a, world.clinician_a, world.finance_a, world.staff_a):
        items = _items(client, person.headers)
        assert items[str(offered)]["cost_price_minor"] == 350
        assert items[str(offered)]["visible"] is False
        assert items[str(offered)]["retail_price_minor"] == 599
        assert items[str(not_offered)]["retail_price_minor"] is None
        assert items[str(not_offered)]["purchasable"] is False


def test_a_price_change_shows_to_that_practices_patients_on_the_next_read_and_to_no_other(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_a, product, 5999)
    offer(world.admin_b, product, 5499)

    response = client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 4999, "visible": True, "practice_note": "Offer this month"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["retail_price_minor"] == 4999
    assert _items(client, world.patient_a.headers)[str(product)]["retail_price_minor"] == 4999
    assert _items(client, world.patient_a2.headers)[str(product)]["retail_price_minor"] == 4999
    assert _items(client, world.patient_b.headers)[str(product)]["retail_price_minor"] == 5499


def test_an_availability_change_shows_on_the_next_read_and_the_product_is_not_purchasable(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_a, product)
    assert _items(client, world.patient_a.headers)[str(product)]["purchasable"] is True

    response = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "unavailable"},
    )

    assert response.status_code == 200, response.text
    item = _items(client, world.patient_a.headers)[str(product)]
    assert item["availability_status"] == "unavailable"
    assert item["purchasable"] is False
    single = client.get(f"/v1/catalogue/{product}", headers=world.patient_a.headers).json()
    assert single["purchasable"] is False


def test_in_clinic_products_are_purchasable_only_with_in_clinic_stock(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    kit = make_product(name="Home Whitening Kit", fulfilment_type="In-Clinic")
    offer(world.admin_a, kit, 24900, stock=False)
    assert _items(client, world.patient_a.headers)[str(kit)]["purchasable"] is False
    offer(world.admin_a, kit, 24900, stock=True)
    assert _items(client, world.patient_a.headers)[str(kit)]["purchasable"] is True


def test_hygiene_subscriptions_reads_the_same_price_and_availability_live(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_a, product, 5999)
    url = f"/v1/catalogue?practice_id={world.practice_a}"

    before = {
        i["product_id"]: i for i in client.get(url, headers=world.service.headers).json()["items"]
    }
    client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 6499, "visible": True},
    )
    after = {
        i["product_id"]: i for i in client.get(url, headers=world.service.headers).json()["items"]
    }

    assert before[str(product)]["retail_price_minor"] == 5999
    assert after[str(product)]["retail_price_minor"] == 6499
    assert (
        after[str(product)]["retail_price_minor"]
        == _items(client, world.patient_a.headers)[str(product)]["retail_price_minor"]
    )
    assert "cost_price_minor" not in after[str(product)]


def test_a_service_caller_must_name_the_practice(client: TestClient, world: World) -> None:
    response = client.get("/v1/catalogue", headers=world.service.headers)
    assert response.status_code == 400
    assert response.json()["code"] == "practice_id_required"


def test_a_patient_cannot_look_into_another_practices_catalogue(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_b, product)
    listing = client.get(
        f"/v1/catalogue?practice_id={world.practice_b}", headers=world.patient_a.headers
    )
    single = client.get(f"/v1/catalogue/{product}", headers=world.patient_a.headers)
    unknown = client.get(f"/v1/catalogue/{uuid.uuid4()}", headers=world.patient_a.headers)
    assert listing.status_code == 404
    assert single.status_code == 404
    assert unknown.status_code == 404
    assert single.json()["detail"] == unknown.json()["detail"]  # existence is not revealed


def test_a_patient_cannot_see_a_product_their_practice_hides(
    client: TestClient, world: World, make_product: MakeProduct, offer: Offer
) -> None:
    product = make_product()
    offer(world.admin_a, product, visible=False)
    assert (
        client.get(f"/v1/catalogue/{product}", headers=world.patient_a.headers).status_code == 404
    )


def test_roles_outside_the_table_are_forbidden(
    client: TestClient, world: World, make_product: MakeProduct
) -> None:
    product = make_product()
    settings = {"retail_price_minor": 999, "visible": True}
    new = {"name": "X", "category": "Y", "fulfilment_type": "Digital", "cost_price_minor": 0}
    attempts = [
        client.put(
            f"/v1/catalogue/{product}/practice-settings",
            headers=world.clinician_a.headers,
            json=settings,
        ),
        client.put(
            f"/v1/catalogue/{product}/practice-settings",
            headers=world.patient_a.headers,
            json=settings,
        ),
        client.put(
            f"/v1/catalogue/{product}/practice-settings",
            headers=world.catalogue_admin.headers,
            json=settings,
        ),
        client.post("/v1/products", headers=world.admin_a.headers, json=new),
        client.post("/v1/products", headers=world.patient_a.headers, json=new),
        client.patch(f"/v1/products/{product}", headers=world.admin_a.headers, json={"name": "Z"}),
    ]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "forbidden"


def test_the_catalogue_team_creates_and_edits_products(client: TestClient, world: World) -> None:
    created = client.post(
        "/v1/products",
        headers={**world.catalogue_admin.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={
            "name": "Waterpik Cordless Advanced",
            "description": "Rechargeable water flosser.",
            "imagery_ref": "catalogue-images/waterpik.jpg",
            "category": "Interdental cleaning",
            "fulfilment_type": "Drop-Ship",
            "cost_price_minor": 5499,
        },
    )
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["availability_status"] == "available"
    assert product["currency"] == "GBP"
    assert created.headers["location"] == f"/v1/products/{product['product_id']}"

    patched = client.patch(
        f"/v1/products/{product['product_id']}",
        headers={**world.catalogue_admin.headers, "If-Match": '"1"'},
        json={"cost_price_minor": 5299, "imagery_ref": None},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["cost_price_minor"] == 5299
    assert patched.json()["imagery_ref"] is None
    assert patched.json()["version"] == 2
    assert patched.headers["etag"] == '"2"'


def test_products_are_priced_only_in_the_currencies_the_shop_shows(
    client: TestClient, world: World, database: Database
) -> None:
    """ISO 4217 codes of two-decimal currencies the portal, the patient app and the payment page
    format (`core/money.py`): a made-up code or a currency without hundredths is refused."""

    def create(currency: str) -> Response:
        return client.post(
            "/v1/products",
            headers={**world.catalogue_admin.headers, "Idempotency-Key": str(uuid.uuid4())},
            json={
                "name": f"Floss picks ({currency})",
                "description": "Fifty picks.",
                "category": "Interdental cleaning",
                "fulfilment_type": "Drop-Ship",
                "cost_price_minor": 199,
                "currency": currency,
            },
        )

    before = count_rows(database, Product)
    for currency in ("ZZZ", "XXX", "JPY", "gbp"):
        refused = create(currency)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "validation_failed"
        assert refused.json()["errors"][0]["loc"] == ["body", "currency"]
    assert count_rows(database, Product) == before
    accepted = create("EUR")
    assert (accepted.status_code, accepted.json()["currency"]) == (201, "EUR")
