"""Clinician recommendations through the HTTP API (spec §4.1): a named clinician recommends the
practice's catalogue products to a patient; the patient sees their own, framed as their care
team's, with each product's price and availability read from the catalogue when shown; the care
team lists and withdraws them; no retail discovery anywhere."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.db.engine import Database
from product_shop.recommendations.tables import Recommendation
from tests.conftest import Person, World
from tests.integration.checkout_support import Shop
from tests.integration.conftest import count_rows

MakeProduct = Callable[..., uuid.UUID]
Offer = Callable[..., None]

FRAMING = "Recommended by your care team"
NOTE = "Use it twice a day, gently along the gum line."
APPOINTMENT = "appt-2024-0117-1430"


# ---- steps ------------------------------------------------------------------------------------


def _url(patient: Person) -> str:
    return f"/v1/patients/{patient.actor.actor_id}/recommendations"


def _post(
    client: TestClient,
    who: Person,
    patient: Person,
    body: dict[str, Any],
    idempotency_key: str | None = None,
) -> Any:
    headers = {**who.headers, "Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    return client.post(_url(patient), headers=headers, json=body)


def _recommend(
    client: TestClient,
    clinician: Person,
    patient: Person,
    *products: uuid.UUID,
    **extra: Any,
) -> list[dict[str, Any]]:
    body = {"product_ids": [str(p) for p in products], **extra}
    response = _post(client, clinician, patient, body)
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _mine(client: TestClient, patient: Person) -> list[dict[str, Any]]:
    response = client.get("/v1/me/recommendations", headers=patient.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _mine_by_product(client: TestClient, patient: Person) -> dict[str, dict[str, Any]]:
    return {item["product"]["product_id"]: item for item in _mine(client, patient)}


def _care_team_list(
    client: TestClient, who: Person, url: str, **params: Any
) -> list[dict[str, Any]]:
    response = client.get(url, headers=who.headers, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _withdraw(client: TestClient, who: Person, recommendation_id: str, **body: Any) -> Any:
    return client.post(
        f"/v1/recommendations/{recommendation_id}/withdraw", headers=who.headers, json=body
    )


def _audit(database: Database, action: str) -> list[AuditEntry]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.stream_type == "recommendation", AuditEntry.action == action)
                .order_by(AuditEntry.position)
            )
        )


def _written(database: Database) -> tuple[int, int]:
    """Recommendation rows and recommendation audit entries."""
    return (
        count_rows(database, Recommendation),
        count_rows(database, AuditEntry, AuditEntry.stream_type == "recommendation"),
    )


def _set_price(client: TestClient, admin: Person, product: uuid.UUID, **settings: Any) -> None:
    response = client.put(
        f"/v1/catalogue/{product}/practice-settings", headers=admin.headers, json=settings
    )
    assert response.status_code == 200, response.text


def _set_availability(client: TestClient, world: World, product: uuid.UUID, status: str) -> None:
    response = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": status},
    )
    assert response.status_code == 200, response.text


@pytest.fixture
def clinician_b(person: Callable[..., Person], world: World) -> Person:
    return person("clinician", world.practice_b, "Dr Bryn")


# ---- recommending -----------------------------------------------------------------------------


def test_a_clinician_recommends_two_products_attributed_to_them_and_audited(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    response = _post(
        client,
        world.clinician_a,
        world.patient_a,
        {
            "product_ids": [str(shop.toothbrush), str(shop.voucher)],
            "note": NOTE,
            "appointment_id": APPOINTMENT,
        },
    )

    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [item["product_id"] for item in items] == [str(shop.toothbrush), str(shop.voucher)]
    assert [item["product_name"] for item in items] == ["Oral-B Pro 3", "Hygienist voucher"]
    assert len({item["recommendation_id"] for item in items}) == 2
    for item in items:
        assert item["recommended_by"] == world.clinician_a.actor.actor_id
        assert item["recommended_by_name"] == "Dr Clare"
        assert item["recommended_by_role"] == "clinician"
        assert item["practice_id"] == str(world.practice_a)
        assert item["patient_id"] == world.patient_a.actor.actor_id
        assert (item["note"], item["appointment_id"]) == (NOTE, APPOINTMENT)
        assert (item["status"], item["withdrawn_at"], item["withdrawn_by"]) == (
            "active",
            None,
            None,
        )
    assert _written(database) == (2, 2)

    created = _audit(database, "recommendation.created")
    assert {entry.stream_id for entry in created} == {item["recommendation_id"] for item in items}
    for entry in created:
        assert entry.actor_id == world.clinician_a.actor.actor_id
        assert (entry.actor_role, entry.actor_name) == ("clinician", "Dr Clare")
        assert entry.practice_id == world.practice_a
        assert entry.after is not None
        assert entry.after["patient_id"] == world.patient_a.actor.actor_id
        assert entry.after["appointment_id"] == APPOINTMENT

    # The care team sees them, for the patient and across the practice.
    for who in (world.admin_a, world.clinician_a, world.staff_a):
        listed = _care_team_list(client, who, _url(world.patient_a))
        assert {r["recommendation_id"] for r in listed} == {r["recommendation_id"] for r in items}
        practice = _care_team_list(client, who, "/v1/recommendations")
        assert {r["recommendation_id"] for r in practice} == {r["recommendation_id"] for r in items}


def test_the_patient_sees_them_framed_as_their_care_teams_with_the_current_price(
    client: TestClient, world: World, shop: Shop
) -> None:
    made = _recommend(
        client,
        world.clinician_a,
        world.patient_a,
        shop.toothbrush,
        shop.voucher,
        note=NOTE,
        appointment_id=APPOINTMENT,
    )

    mine = _mine_by_product(client, world.patient_a)
    assert set(mine) == {str(shop.toothbrush), str(shop.voucher)}
    assert {item["recommendation_id"] for item in mine.values()} == {
        item["recommendation_id"] for item in made
    }
    for item in mine.values():
        assert item["framing"] == FRAMING
        assert item["recommended_by_name"] == "Dr Clare"
        assert item["note"] == NOTE
        assert item["recommended_at"]
        assert "cost_price_minor" not in item["product"]
    brush = mine[str(shop.toothbrush)]["product"]
    assert (brush["name"], brush["retail_price_minor"], brush["currency"]) == (
        "Oral-B Pro 3",
        5999,
        "GBP",
    )
    assert brush["purchasable"] is True
    assert mine[str(shop.voucher)]["product"]["retail_price_minor"] == 6000

    # The practice reprices: the patient sees the new price, not a copy made when recommended.
    _set_price(client, world.admin_a, shop.toothbrush, retail_price_minor=4999, visible=True)
    brush = _mine_by_product(client, world.patient_a)[str(shop.toothbrush)]["product"]
    assert (brush["retail_price_minor"], brush["purchasable"]) == (4999, True)

    # The practice hides it: still the care team's recommendation, but no price and not buyable.
    _set_price(client, world.admin_a, shop.toothbrush, retail_price_minor=4999, visible=False)
    brush = _mine_by_product(client, world.patient_a)[str(shop.toothbrush)]["product"]
    assert (brush["name"], brush["retail_price_minor"], brush["purchasable"]) == (
        "Oral-B Pro 3",
        None,
        False,
    )

    # The catalogue makes the other unavailable: shown at its price, not buyable.
    _set_availability(client, world, shop.voucher, "unavailable")
    voucher = _mine_by_product(client, world.patient_a)[str(shop.voucher)]["product"]
    assert (voucher["retail_price_minor"], voucher["purchasable"]) == (6000, False)

    # Both come back: the patient sees that on the next read.
    _set_price(client, world.admin_a, shop.toothbrush, retail_price_minor=5499, visible=True)
    _set_availability(client, world, shop.voucher, "available")
    mine = _mine_by_product(client, world.patient_a)
    assert mine[str(shop.toothbrush)]["product"]["retail_price_minor"] == 5499
    assert mine[str(shop.toothbrush)]["product"]["purchasable"] is True
    assert mine[str(shop.voucher)]["product"]["purchasable"] is True


def test_a_product_deprecated_after_it_was_recommended_shows_without_price_and_not_buyable(
    client: TestClient, world: World, shop: Shop
) -> None:
    _recommend(client, world.clinician_a, world.patient_a, shop.toothbrush)
    _set_availability(client, world, shop.toothbrush, "deprecated")

    (item,) = _mine(client, world.patient_a)
    assert item["product"]["product_id"] == str(shop.toothbrush)
    assert (item["product"]["retail_price_minor"], item["product"]["purchasable"]) == (None, False)


# ---- isolation and roles ----------------------------------------------------------------------


def test_only_the_patient_sees_their_recommendations_and_only_their_practice_lists_them(
    client: TestClient,
    world: World,
    shop: Shop,
    offer: Offer,
    clinician_b: Person,
    database: Database,
) -> None:
    (recommendation,) = _recommend(client, world.clinician_a, world.patient_a, shop.toothbrush)
    offer(world.admin_b, shop.toothbrush, 5499)
    (theirs,) = _recommend(client, clinician_b, world.patient_b, shop.toothbrush)
    rid = recommendation["recommendation_id"]

    # Patients: each sees their own only.
    assert [item["recommendation_id"] for item in _mine(client, world.patient_a)] == [rid]
    assert _mine(client, world.patient_a2) == []
    assert [item["recommendation_id"] for item in _mine(client, world.patient_b)] == [
        theirs["recommendation_id"]
    ]
    assert _mine(client, world.patient_b)[0]["product"]["retail_price_minor"] == 5499

    # Another practice's care team: nothing of practice A's, and cannot withdraw it.
    assert _care_team_list(client, world.admin_b, _url(world.patient_a)) == []
    assert [
        r["recommendation_id"]
        for r in _care_team_list(client, world.admin_b, "/v1/recommendations")
    ] == [theirs["recommendation_id"]]
    assert [
        r["recommendation_id"]
        for r in _care_team_list(client, world.admin_a, "/v1/recommendations")
    ] == [rid]
    assert _care_team_list(client, world.admin_a, _url(world.patient_b)) == []
    other_practice = _withdraw(client, clinician_b, rid)
    assert other_practice.status_code == 404, other_practice.text
    unknown = _withdraw(client, clinician_b, str(uuid.uuid4()))
    assert unknown.status_code == 404
    assert other_practice.json()["detail"] == unknown.json()["detail"]  # existence not revealed
    assert _withdraw(client, world.admin_b, rid).status_code == 403  # not a clinician at all

    # Roles: a patient may neither recommend nor read the practice's lists; staff and admins
    # may not recommend or withdraw (clinicians only); finance may not list.
    body = {"product_ids": [str(shop.voucher)]}
    for who in (world.patient_a, world.staff_a, world.admin_a, world.finance_a):
        refused = _post(client, who, world.patient_a, body)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), who
    for who in (world.patient_a, world.staff_a, world.admin_a, world.finance_a):
        assert _withdraw(client, who, rid).status_code == 403, who
    for who in (world.patient_a, world.finance_a):
        for url in (_url(world.patient_a), "/v1/recommendations"):
            refused = client.get(url, headers=who.headers)
            assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), who
    for who in (world.clinician_a, world.admin_a, world.staff_a, world.finance_a):
        assert client.get("/v1/me/recommendations", headers=who.headers).status_code == 403

    # Nothing changed: still active, no more rows than the two made.
    assert _written(database) == (2, 2)
    assert [item["recommendation_id"] for item in _mine(client, world.patient_a)] == [rid]


# ---- withdrawal -------------------------------------------------------------------------------


def test_a_withdrawn_recommendation_leaves_the_patients_view_and_lists_as_withdrawn(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    brush, voucher = _recommend(
        client, world.clinician_a, world.patient_a, shop.toothbrush, shop.voucher
    )

    response = _withdraw(
        client, world.clinician_a, brush["recommendation_id"], reason="Patient has one already"
    )

    assert response.status_code == 200, response.text
    withdrawn = response.json()
    assert withdrawn["recommendation_id"] == brush["recommendation_id"]
    assert withdrawn["status"] == "withdrawn"
    assert withdrawn["withdrawn_by"] == world.clinician_a.actor.actor_id
    assert withdrawn["withdrawn_at"] is not None
    assert [item["recommendation_id"] for item in _mine(client, world.patient_a)] == [
        voucher["recommendation_id"]
    ]
    for url in (_url(world.patient_a), "/v1/recommendations"):
        only_withdrawn = _care_team_list(client, world.staff_a, url, status="withdrawn")
        assert [(r["recommendation_id"], r["status"]) for r in only_withdrawn] == [
            (brush["recommendation_id"], "withdrawn")
        ]
        only_active = _care_team_list(client, world.staff_a, url, status="active")
        assert [r["recommendation_id"] for r in only_active] == [voucher["recommendation_id"]]
        assert len(_care_team_list(client, world.staff_a, url)) == 2

    entries = _audit(database, "recommendation.withdrawn")
    assert [entry.stream_id for entry in entries] == [brush["recommendation_id"]]
    assert entries[0].actor_id == world.clinician_a.actor.actor_id
    assert (entries[0].before, entries[0].after) == (
        {"status": "active"},
        {"status": "withdrawn", "has_reason": True},
    )

    again = _withdraw(client, world.clinician_a, brush["recommendation_id"])
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["code"] == "already_withdrawn"
    assert len(_audit(database, "recommendation.withdrawn")) == 1

    # Without a body at all, too.
    plain = client.post(
        f"/v1/recommendations/{voucher['recommendation_id']}/withdraw",
        headers=world.clinician_a.headers,
    )
    assert plain.status_code == 200, plain.text
    assert _mine(client, world.patient_a) == []


def test_an_unknown_status_filter_is_refused(client: TestClient, world: World) -> None:
    response = client.get(
        "/v1/recommendations", headers=world.staff_a.headers, params={"status": "converted"}
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")


# ---- validation -------------------------------------------------------------------------------


def test_invalid_recommendations_are_refused_with_stable_codes_and_nothing_written(
    client: TestClient,
    world: World,
    shop: Shop,
    make_product: MakeProduct,
    offer: Offer,
    database: Database,
) -> None:
    never_offered = make_product(name="Curaprox CS 5460")
    only_b = make_product(name="Waterpik Cordless")
    offer(world.admin_b, only_b, 7999)
    deprecated = make_product(name="Old floss")
    offer(world.admin_a, deprecated, 299)
    _set_availability(client, world, deprecated, "deprecated")
    extra_products = [make_product(name=f"Brush {n}") for n in range(11)]
    for product in extra_products:
        offer(world.admin_a, product, 999)

    def ids(*products: uuid.UUID) -> list[str]:
        return [str(p) for p in products]

    cases: list[tuple[dict[str, Any], str]] = [
        ({"product_ids": ids(never_offered)}, "product_not_offered"),
        ({"product_ids": ids(only_b)}, "product_not_offered"),
        ({"product_ids": ids(uuid.uuid4())}, "product_not_offered"),
        # A good product first: the request is refused as a whole.
        ({"product_ids": ids(shop.toothbrush, never_offered)}, "product_not_offered"),
        # The code docs/problems.md documents for a deprecated product.
        ({"product_ids": ids(shop.toothbrush, deprecated)}, "product_not_recommendable"),
        ({"product_ids": ids(shop.toothbrush, shop.voucher, shop.toothbrush)}, "duplicate_product"),
        ({"product_ids": []}, "validation_failed"),
        ({"product_ids": ids(*extra_products)}, "validation_failed"),
        ({}, "validation_failed"),
        ({"product_ids": ["not-a-uuid"]}, "validation_failed"),
        ({"product_ids": ids(shop.toothbrush), "price_override": 100}, "validation_failed"),
        ({"product_ids": ids(shop.toothbrush), "note": ""}, "validation_failed"),
        ({"product_ids": ids(shop.toothbrush), "appointment_id": "x" * 65}, "validation_failed"),
    ]
    for body, code in cases:
        response = _post(client, world.clinician_a, world.patient_a, body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code, (body, response.text)
        assert _written(database) == (0, 0), body

    # Ten is the most, and allowed.
    assert len(_recommend(client, world.clinician_a, world.patient_a, *extra_products[:10])) == 10
    assert _written(database) == (10, 10)


# ---- idempotency ------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_replays_the_first_response_and_writes_once(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    body = {"product_ids": [str(shop.toothbrush), str(shop.kit)], "note": NOTE}

    first = _post(client, world.clinician_a, world.patient_a, body, "k-recommend")
    second = _post(client, world.clinician_a, world.patient_a, body, "k-recommend")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["location"] == first.headers["location"] == _url(world.patient_a)
    assert _written(database) == (2, 2)
    assert len(_mine(client, world.patient_a)) == 2

    reused = _post(
        client, world.clinician_a, world.patient_a, {**body, "note": "Another"}, "k-recommend"
    )
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
    assert _written(database) == (2, 2)

    missing = client.post(_url(world.patient_a), headers=world.clinician_a.headers, json=body)
    assert (missing.status_code, missing.json()["code"]) == (400, "idempotency_key_required")
    assert _written(database) == (2, 2)


def test_a_refused_request_frees_its_key_for_a_corrected_retry(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    bad = _post(
        client,
        world.clinician_a,
        world.patient_a,
        {"product_ids": [str(shop.toothbrush), str(shop.toothbrush)]},
        "k-retry",
    )
    assert bad.json()["code"] == "duplicate_product"
    bad_again = _post(
        client,
        world.clinician_a,
        world.patient_a,
        {"product_ids": [str(shop.toothbrush), str(shop.toothbrush)]},
        "k-retry",
    )
    assert bad_again.json()["code"] == "duplicate_product"  # not a replay of a stored answer
    assert "idempotent-replayed" not in bad_again.headers
    assert _written(database) == (0, 0)

    corrected = _post(
        client,
        world.clinician_a,
        world.patient_a,
        {"product_ids": [str(shop.toothbrush)]},
        "k-retry",
    )
    assert corrected.status_code == 201, corrected.text
    assert _written(database) == (1, 1)


# ---- paging -----------------------------------------------------------------------------------


def _all_pages(
    client: TestClient, who: Person, url: str, limit: int
) -> Iterator[list[dict[str, Any]]]:
    cursor: str | None = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get(url, headers=who.headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        yield page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return
    raise AssertionError("the pages never ended")


def test_pages_follow_the_cursor_newest_first_each_once(
    client: TestClient, world: World, shop: Shop
) -> None:
    made = [
        _recommend(client, world.clinician_a, world.patient_a, product)[0]["recommendation_id"]
        for product in (shop.toothbrush, shop.voucher, shop.kit)
    ]
    newest_first = list(reversed(made))

    for url in (_url(world.patient_a), "/v1/recommendations"):
        pages = list(_all_pages(client, world.admin_a, url, limit=2))
        assert [len(page) for page in pages] == [2, 1]
        assert [item["recommendation_id"] for page in pages for item in page] == newest_first
    assert [item["recommendation_id"] for item in _mine(client, world.patient_a)] == newest_first


def test_pages_through_recommendations_made_at_the_same_moment(
    client: TestClient, world: World, shop: Shop
) -> None:
    made = _recommend(
        client, world.clinician_a, world.patient_a, shop.toothbrush, shop.voucher, shop.kit
    )
    assert len({item["created_at"] for item in made}) == 1

    pages = list(_all_pages(client, world.staff_a, _url(world.patient_a), limit=1))
    seen = [item["recommendation_id"] for page in pages for item in page]
    assert sorted(seen) == sorted(item["recommendation_id"] for item in made)
    assert len(seen) == 3


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        base64.urlsafe_b64encode(b"not a date|not an id").decode(),
        base64.urlsafe_b64encode(f"2024-01-01T00:00:00+00:00|{'x' * 5}".encode()).decode(),
        # Well formed but without a time zone: still not one this list gave.
        base64.urlsafe_b64encode(f"2024-01-01T00:00:00|{uuid.uuid4()}".encode()).decode(),
    ],
    ids=["not-base64", "symbols", "no-date", "no-id", "naive-time"],
)
def test_a_cursor_the_list_did_not_give_is_400_invalid_cursor(
    client: TestClient, world: World, shop: Shop, cursor: str
) -> None:
    _recommend(client, world.clinician_a, world.patient_a, shop.toothbrush)
    for url in (_url(world.patient_a), "/v1/recommendations"):
        response = client.get(url, headers=world.admin_a.headers, params={"cursor": cursor})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_cursor"


# ---- no retail discovery (spec §4.1) ----------------------------------------------------------

RETAIL_DISCOVERY = re.compile(
    r"also[\s_-]*bought|bought[\s_-]*together|frequently[\s_-]*bought|trending|popular"
    r"|best[\s_-]*sell(?:er|ing)|top[\s_-]*sell|customers[\s_-]*who|people[\s_-]*also"
    r"|may[\s_-]*also[\s_-]*like|others[\s_-]*(?:bought|viewed)",
    re.IGNORECASE,
)


def _texts(document: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Every key and string value of a JSON document, with where it is."""
    if isinstance(document, dict):
        for name, value in document.items():
            yield where, str(name)
            yield from _texts(value, f"{where}.{name}")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _texts(value, f"{where}[{index}]")
    elif isinstance(document, str):
        yield where, document


def _discovery_in(document: Any) -> list[tuple[str, str]]:
    return [(where, text) for where, text in _texts(document) if RETAIL_DISCOVERY.search(text)]


def test_the_pattern_recognises_retail_discovery_wording() -> None:
    for text in (
        "Customers also bought",
        "also_bought",
        "alsoBought",
        "Trending products",
        "Most popular",
        "Best seller",
        "bestseller",
        "best_seller",
        "Top selling",
        "Customers who bought this",
        "People also viewed",
    ):
        assert RETAIL_DISCOVERY.search(text), text
    for text in (FRAMING, "Recommended by your care team", "purchasable", "best practice"):
        assert not RETAIL_DISCOVERY.search(text), text


def test_no_retail_discovery_in_the_api_document_or_what_the_patient_sees(
    client: TestClient, world: World, shop: Shop
) -> None:
    openapi = client.get("/openapi.json")
    assert openapi.status_code == 200
    document = openapi.json()
    # What the brief names explicitly is among what is walked: paths, operations, parameters
    # and schema property names.
    operations = [
        operation
        for path_item in document["paths"].values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    assert "/v1/me/recommendations" in document["paths"]
    assert {"recommendProducts", "listMyRecommendations"} <= {o["operationId"] for o in operations}
    assert "framing" in document["components"]["schemas"]["PatientRecommendationOut"]["properties"]
    assert _discovery_in(document) == []

    _recommend(client, world.clinician_a, world.patient_a, shop.toothbrush, note=NOTE)
    for url in ("/v1/me/recommendations", "/v1/catalogue", f"/v1/catalogue/{shop.toothbrush}"):
        response = client.get(url, headers=world.patient_a.headers)
        assert response.status_code == 200, response.text
        assert response.json()  # something to look at
        assert _discovery_in(response.json()) == [], url
    assert _mine(client, world.patient_a)[0]["framing"] == FRAMING


def test_one_recommendation_is_the_patients_own_or_404_and_the_practices_or_404(
    client: TestClient, world: World, shop: Shop, clinician_b: Person
) -> None:
    """A notification's link opens one recommendation: its patient sees it framed as the care
    team's; another patient of the practice, a patient of another practice, a withdrawn one
    and an unknown id are the same 404. Staff read one of their practice's; another practice's
    staff get 404."""
    (recommendation,) = _recommend(
        client, world.clinician_a, world.patient_a, shop.toothbrush, note=NOTE
    )
    rid = recommendation["recommendation_id"]

    own = client.get(f"/v1/me/recommendations/{rid}", headers=world.patient_a.headers)
    assert own.status_code == 200, own.text
    assert own.json()["framing"] == FRAMING
    assert own.json()["recommended_by_name"] == "Dr Clare"
    assert own.json()["note"] == NOTE

    unknown = client.get(f"/v1/me/recommendations/{uuid.uuid4()}", headers=world.patient_a.headers)
    assert unknown.status_code == 404
    for other in (world.patient_a2, world.patient_b):
        refused = client.get(f"/v1/me/recommendations/{rid}", headers=other.headers)
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == unknown.json()["detail"]  # existence not revealed

    staff = client.get(f"/v1/recommendations/{rid}", headers=world.staff_a.headers)
    assert staff.status_code == 200, staff.text
    assert staff.json()["patient_id"] == world.patient_a.actor.actor_id
    assert client.get(f"/v1/recommendations/{rid}", headers=world.admin_b.headers).status_code == (
        404
    )
    assert client.get(
        f"/v1/recommendations/{rid}", headers=world.patient_a.headers
    ).status_code == (403)

    assert _withdraw(client, world.clinician_a, rid).status_code == 200
    gone = client.get(f"/v1/me/recommendations/{rid}", headers=world.patient_a.headers)
    assert gone.status_code == 404
