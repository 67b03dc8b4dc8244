"""Idempotency-Key on creating POSTs (docs/architecture.md, invariant 3): replay, reuse, in flight,
release on failure, per-caller scope and a lifetime of at least 24 hours."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from product_shop.catalogue.tables import Product
from product_shop.checkout.schemas import CheckoutIn
from product_shop.checkout.tables import Checkout
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.idempotency.tables import IdempotencyKey
from tests.conftest import Person, World
from tests.integration.checkout_support import Shop
from tests.integration.conftest import count_rows


def checkout_body(shop: Shop, quantity: int = 1) -> dict[str, Any]:
    return {"lines": [{"product_id": str(shop.voucher), "quantity": quantity}]}


def post_checkout(
    client: TestClient, patient: Person, body: dict[str, Any], key: str | None
) -> Any:
    headers = dict(patient.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/checkouts", headers=headers, json=body)


PRODUCT = {
    "name": "Waterpik Cordless Advanced",
    "description": "Rechargeable water flosser.",
    "category": "Interdental cleaning",
    "fulfilment_type": "Drop-Ship",
    "cost_price_minor": 5499,
}


def post_product(client: TestClient, world: World, body: dict[str, Any], key: str) -> Any:
    return client.post(
        "/v1/products",
        headers={**world.catalogue_admin.headers, "Idempotency-Key": key},
        json=body,
    )


# ---- replay -----------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_checkout(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    body = checkout_body(shop)
    first = post_checkout(client, world.patient_a, body, "k-replay")

    second = post_checkout(client, world.patient_a, body, "k-replay")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["location"] == first.headers["location"]
    assert first.headers["location"] == f"/v1/checkouts/{first.json()['id']}"
    assert count_rows(database, Checkout) == 1


def test_a_replay_answers_the_first_checkout_even_once_its_product_is_unavailable(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    """Pricing runs in the claim's unit of work for a fresh key only: a replay answers what
    was stored, whatever the catalogue says now."""
    body = checkout_body(shop)
    first = post_checkout(client, world.patient_a, body, "k-replay-unavailable")
    _set_availability(client, world, shop.voucher, "unavailable")

    second = post_checkout(client, world.patient_a, body, "k-replay-unavailable")

    assert first.status_code == second.status_code == 201, second.text
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    fresh = post_checkout(client, world.patient_a, body, "k-fresh")
    assert (fresh.status_code, fresh.json()["code"]) == (422, "product_not_purchasable")
    assert count_rows(database, Checkout) == 1


def test_the_same_body_in_another_key_order_and_spacing_is_still_a_replay(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    first = post_checkout(client, world.patient_a, checkout_body(shop), "k-canonical")
    reordered = json.dumps({"lines": [{"quantity": 1, "product_id": str(shop.voucher)}]}, indent=4)

    second = client.post(
        "/v1/checkouts",
        headers={
            **world.patient_a.headers,
            "Idempotency-Key": "k-canonical",
            "Content-Type": "application/json",
        },
        content=reordered,
    )

    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert count_rows(database, Checkout) == 1


def test_the_same_key_and_body_replays_the_first_product(
    client: TestClient, world: World, database: Database
) -> None:
    first = post_product(client, world, PRODUCT, "k-product")

    second = post_product(client, world, PRODUCT, "k-product")

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    assert first.headers["location"] == f"/v1/products/{first.json()['product_id']}"
    assert count_rows(database, Product) == 1


# ---- reuse with another body ------------------------------------------------------------------


def test_the_same_key_with_another_checkout_body_is_refused(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    first = post_checkout(client, world.patient_a, checkout_body(shop), "k-reused")

    other = post_checkout(client, world.patient_a, checkout_body(shop, quantity=2), "k-reused")

    assert first.status_code == 201
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert "idempotent-replayed" not in other.headers
    assert count_rows(database, Checkout) == 1
    assert count_rows(database, Checkout, Checkout.total_minor == 12000) == 0


def test_the_same_key_with_another_product_body_is_refused(
    client: TestClient, world: World, database: Database
) -> None:
    assert post_product(client, world, PRODUCT, "k-product").status_code == 201

    other = post_product(client, world, {**PRODUCT, "name": "Another flosser"}, "k-product")

    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert count_rows(database, Product) == 1
    assert count_rows(database, Product, Product.name == "Another flosser") == 0


# ---- missing and malformed keys ---------------------------------------------------------------


def test_a_checkout_without_a_key_is_refused_and_creates_nothing(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    response = post_checkout(client, world.patient_a, checkout_body(shop), None)

    assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_required")
    assert count_rows(database, Checkout) == 0
    assert count_rows(database, IdempotencyKey) == 0


def test_a_product_without_a_key_is_refused_and_creates_nothing(
    client: TestClient, world: World, database: Database
) -> None:
    response = client.post("/v1/products", headers=world.catalogue_admin.headers, json=PRODUCT)

    assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_required")
    assert count_rows(database, Product) == 0


@pytest.mark.parametrize(
    "bad_key",
    ["k" * 256, "has space", "tab\tkey", "caf\u00e9"],
    ids=["256-chars", "space", "tab", "non-ascii"],
)
def test_a_malformed_key_is_refused_and_creates_nothing(
    client: TestClient, world: World, shop: Shop, database: Database, bad_key: str
) -> None:
    headers = {**world.patient_a.headers, "Idempotency-Key": bad_key}
    encoded = {k.encode(): v.encode() for k, v in headers.items()}  # non-ASCII goes as raw bytes

    response = client.post("/v1/checkouts", headers=encoded, json=checkout_body(shop))

    assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_invalid")
    assert count_rows(database, Checkout) == 0
    assert count_rows(database, IdempotencyKey) == 0


def test_a_key_of_255_characters_is_accepted(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    response = post_checkout(client, world.patient_a, checkout_body(shop), "k" * 255)

    assert response.status_code == 201, response.text
    assert count_rows(database, Checkout) == 1


# ---- scope ------------------------------------------------------------------------------------


def test_the_same_key_from_two_patients_creates_two_checkouts(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    body = checkout_body(shop)

    first = post_checkout(client, world.patient_a, body, "shared-key")
    second = post_checkout(client, world.patient_a2, body, "shared-key")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert "idempotent-replayed" not in second.headers
    assert count_rows(database, Checkout) == 2
    assert (
        count_rows(database, Checkout, Checkout.patient_id == world.patient_a2.actor.patient_id)
        == 1
    )
    assert count_rows(database, IdempotencyKey, IdempotencyKey.key == "shared-key") == 2


# ---- in flight --------------------------------------------------------------------------------


def test_a_key_still_in_flight_answers_409_and_creates_nothing(
    client: TestClient, world: World, shop: Shop, database: Database, context: AppContext
) -> None:
    body = checkout_body(shop)
    body_model = CheckoutIn.model_validate(body)
    with context.database.unit_of_work() as session:
        context.idempotency.claim(
            session,
            world.patient_a.actor.actor_id,
            "k-1",
            "POST /v1/checkouts",
            body_model.model_dump(mode="json"),
        )

    response = post_checkout(client, world.patient_a, body, "k-1")

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_request_in_flight"
    assert count_rows(database, Checkout) == 0
    assert count_rows(database, IdempotencyKey, IdempotencyKey.status == "in_flight") == 1


def test_a_key_in_flight_with_another_body_is_still_reuse(
    client: TestClient, world: World, shop: Shop, database: Database, context: AppContext
) -> None:
    body = checkout_body(shop)
    with context.database.unit_of_work() as session:
        context.idempotency.claim(
            session,
            world.patient_a.actor.actor_id,
            "k-1",
            "POST /v1/checkouts",
            CheckoutIn.model_validate(body).model_dump(mode="json"),
        )

    response = post_checkout(client, world.patient_a, checkout_body(shop, quantity=3), "k-1")

    assert (response.status_code, response.json()["code"]) == (422, "idempotency_key_reused")
    assert count_rows(database, Checkout) == 0


# ---- failure releases the key -----------------------------------------------------------------


def _set_availability(client: TestClient, world: World, product: uuid.UUID, status: str) -> None:
    response = client.patch(
        f"/v1/products/{product}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": status},
    )
    assert response.status_code == 200, response.text


def test_a_failed_request_releases_its_key_for_a_retry(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    body = checkout_body(shop)
    _set_availability(client, world, shop.voucher, "unavailable")

    failed = post_checkout(client, world.patient_a, body, "k-retry")

    assert (failed.status_code, failed.json()["code"]) == (422, "product_not_purchasable")
    assert count_rows(database, Checkout) == 0
    assert count_rows(database, IdempotencyKey) == 0

    _set_availability(client, world, shop.voucher, "available")
    retried = post_checkout(client, world.patient_a, body, "k-retry")

    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert count_rows(database, Checkout) == 1
    replayed = post_checkout(client, world.patient_a, body, "k-retry")
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == retried.json()


# ---- lifetime ---------------------------------------------------------------------------------


def test_a_completed_key_is_kept_for_at_least_24_hours_with_its_response(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    created = post_checkout(client, world.patient_a, checkout_body(shop), "k-ttl")
    assert created.status_code == 201

    with Session(database.engine) as session:
        row = session.get(IdempotencyKey, (world.patient_a.actor.actor_id, "k-ttl"))
        assert row is not None
        lifetime = row.expires_at - row.created_at
        stored = (row.status, row.operation, row.response_status, row.response_location)
        response_body = row.response_body

    assert lifetime >= timedelta(hours=24)
    assert stored == ("completed", "POST /v1/checkouts", 201, created.headers["location"])
    assert response_body == created.json()


def test_a_stale_claim_is_taken_over_once_and_the_old_owner_can_neither_complete_nor_release(
    context: AppContext, world: World, database: Database
) -> None:
    from datetime import timedelta

    from product_shop.core.clock import FrozenClock
    from product_shop.core.errors import Conflict
    from product_shop.idempotency.store import Claim, IdempotencyStore, Replay

    clock = FrozenClock(datetime.now(UTC))
    store = IdempotencyStore(clock)
    scope, payload = world.patient_a.actor.actor_id, {"lines": []}

    def claim() -> Claim | Replay:
        with database.unit_of_work() as session:
            return store.claim(session, scope, "k-stale", "POST /v1/checkouts", payload)

    first = claim()
    assert isinstance(first, Claim)
    clock.advance(timedelta(minutes=3))

    second = claim()
    assert isinstance(second, Claim)
    with pytest.raises(Conflict) as in_flight:
        claim()  # the new owner is fresh
    assert in_flight.value.code == "idempotency_request_in_flight"

    with database.unit_of_work() as session:
        store.release(session, first)  # the old owner's failure must not free the new claim
    with pytest.raises(Conflict):
        claim()
    with pytest.raises(Conflict) as lost, database.unit_of_work() as session:
        IdempotencyStore.complete(session, first, 201, {"id": "late"})
    assert lost.value.code == "idempotency_claim_lost"
    with database.unit_of_work() as session:
        IdempotencyStore.complete(session, second, 201, {"id": "winner"})
    replay = claim()
    assert not isinstance(replay, Claim)
    assert replay.body == {"id": "winner"}
