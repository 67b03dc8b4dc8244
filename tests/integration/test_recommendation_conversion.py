"""Recommendation-to-purchase conversion (spec §10.4, §15.4): a checkout line names the
patient's recommendation it came from; a recommendation converted when that checkout became a
paid order. Only the patient's own active recommendation of that very product may be named."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from product_shop.checkout.tables import Checkout
from product_shop.context import AppContext
from tests.conftest import Person, World
from tests.integration.checkout_support import ADDRESS, Shop, key, pay


def _recommend(
    client: TestClient, world: World, patient: Person, *products: uuid.UUID
) -> list[str]:
    response = client.post(
        f"/v1/patients/{patient.actor.actor_id}/recommendations",
        headers={**world.clinician_a.headers, **key()},
        json={"product_ids": [str(p) for p in products], "note": "Twice a day."},
    )
    assert response.status_code == 201, response.text
    return [item["recommendation_id"] for item in response.json()["items"]]


def _checkout(
    client: TestClient, patient: Person, product: uuid.UUID, recommendation_id: str | None
) -> Any:
    line: dict[str, Any] = {"product_id": str(product), "quantity": 1}
    if recommendation_id is not None:
        line["recommendation_id"] = recommendation_id
    return client.post(
        "/v1/checkouts",
        headers={**patient.headers, **key()},
        json={"lines": [line], "delivery_address": ADDRESS},
    )


def _conversion(client: TestClient, context: AppContext, who: Person) -> Any:
    now = context.clock.now()
    return client.get(
        "/v1/recommendations/conversion",
        params={
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        },
        headers=who.headers,
    )


def test_two_recommendations_one_bought_is_a_50_percent_conversion(
    client: TestClient, world: World, shop: Shop, context: AppContext
) -> None:
    brush, voucher = _recommend(client, world, world.patient_a, shop.toothbrush, shop.voucher)
    # The voucher's checkout is started from its recommendation but never paid: not converted.
    unpaid = _checkout(client, world.patient_a, shop.voucher, voucher)
    assert unpaid.status_code == 201, unpaid.text
    created = _checkout(client, world.patient_a, shop.toothbrush, brush)
    assert created.status_code == 201, created.text
    assert pay(created.json()).status_code == 200
    completed = client.post(
        f"/v1/checkouts/{created.json()['id']}/complete", headers=world.patient_a.headers
    )
    assert completed.status_code in (200, 201), completed.text

    response = _conversion(client, context, world.admin_a)
    assert response.status_code == 200, response.text
    figures = response.json()
    assert (figures["recommendations"], figures["converted"], figures["rate"]) == (2, 1, 0.5)
    assert figures["practice_id"] == str(world.practice_a)

    # Another practice's figures do not include them; patients may not read them.
    other = _conversion(client, context, world.admin_b).json()
    assert (other["recommendations"], other["converted"], other["rate"]) == (0, 0, None)
    assert _conversion(client, context, world.patient_a).status_code == 403


def test_a_line_may_name_only_the_patients_own_active_recommendation_of_that_product(
    client: TestClient, world: World, shop: Shop, context: AppContext
) -> None:
    (mine,) = _recommend(client, world, world.patient_a, shop.toothbrush)
    (theirs,) = _recommend(client, world, world.patient_a2, shop.toothbrush)
    with context.database.reading() as session:
        before = session.scalar(select(func.count()).select_from(Checkout))

    for product, recommendation in (
        (shop.toothbrush, theirs),  # another patient's
        (shop.voucher, mine),  # mine, but of another product
        (shop.toothbrush, str(uuid.uuid4())),  # no such recommendation
    ):
        refused = _checkout(client, world.patient_a, product, recommendation)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "recommendation_not_found"
    withdrawn = client.post(
        f"/v1/recommendations/{mine}/withdraw", headers=world.clinician_a.headers, json={}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    refused = _checkout(client, world.patient_a, shop.toothbrush, mine)
    assert refused.json()["code"] == "recommendation_not_found"
    with context.database.reading() as session:
        assert session.scalar(select(func.count()).select_from(Checkout)) == before

    assert _checkout(client, world.patient_a, shop.toothbrush, None).status_code == 201


def test_a_period_that_ends_before_it_starts_is_refused(
    client: TestClient, world: World, context: AppContext
) -> None:
    now = context.clock.now().isoformat()
    response = client.get(
        "/v1/recommendations/conversion",
        params={"from": now, "to": now},
        headers=world.admin_a.headers,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_date_range"
