"""Unpaid checkouts expire (spec §5.2): the payment page is closed first, and a page paid
meanwhile is completed, never expired."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from product_shop.checkout.tables import Checkout
from product_shop.context import AppContext
from product_shop.db.engine import Database
from tests.conftest import World
from tests.integration.checkout_support import Shop, pay, start_checkout


def _past_its_time(database: Database, checkout_id: str) -> None:
    with Session(database.engine) as session, session.begin():
        session.execute(
            update(Checkout)
            .where(Checkout.checkout_id == uuid.UUID(checkout_id))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_an_unpaid_checkout_past_its_time_expires_with_its_payment_page_closed(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    fresh = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    _past_its_time(database, checkout["id"])

    assert context.checkout_expiry.run_once() == 1

    read = client.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers).json()
    assert read["status"] == "expired"
    intent = httpx.get(f"{payments_url}/_simulator/intents/{checkout['payment']['intent_id']}")
    assert intent.json()["status"] == "cancelled"
    # the page can no longer take money, and a checkout still in time is untouched
    assert pay(checkout).status_code == 409
    again = client.get(f"/v1/checkouts/{fresh['id']}", headers=world.patient_a.headers).json()
    assert again["status"] == "awaiting_payment"


def test_a_checkout_paid_just_before_its_time_is_completed_not_expired(
    client: TestClient, context: AppContext, world: World, shop: Shop, database: Database
) -> None:
    checkout = start_checkout(client, world.patient_a, [(shop.toothbrush, 1)]).json()
    assert pay(checkout).status_code == 200
    _past_its_time(database, checkout["id"])

    assert context.checkout_expiry.run_once() == 0

    completed = client.post(
        f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers
    )
    assert completed.status_code == 200, completed.text
