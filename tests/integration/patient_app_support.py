"""Shared steps for the patient app preview's tests: Access Manager's simulator with the app as
a client, signing in the way a browser does, a clinician's recommendation, and paying on
Integrated Payments' hosted card page as a patient would."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from product_shop.config import Settings
from product_shop.db.engine import Database
from product_shop.simulators.server import BackgroundServer
from tests.conftest import KeyPair, Person, World
from tests.http_support import http_client
from tests.integration.portal_support import (
    TEST_SERVER,
    _path,
    csrf_of,
    staff_of,
    start_access_simulator,
    through_access_manager,
)

APP_CLIENT_ID = "product-shop-app"
APP_CLIENT_SECRET = "app-test-client-secret"
NOTE = "Twice a day, two minutes; gentle on the gum line."
PAID_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"


def start_app_access_simulator(
    key_pair: KeyPair, world: World, redirect_base: str = TEST_SERVER
) -> BackgroundServer:
    """Access Manager with the app as a client; every test user may try to sign in there (the
    app itself must refuse staff)."""
    return start_access_simulator(
        key_pair,
        world,
        redirect_base,
        site="/app",
        client=(APP_CLIENT_ID, APP_CLIENT_SECRET),
        people={**staff_of(world), "patient_a2": world.patient_a2},
    )


def app_settings(settings: Settings, access_url: str) -> Settings:
    return settings.model_copy(
        update={
            "oidc_discovery_url": f"{access_url}/.well-known/openid-configuration",
            "oidc_app_client_secret": SecretStr(APP_CLIENT_SECRET),
            "portal_cookie_secure": False,  # the test client speaks plain HTTP
        }
    )


def sign_in(client: TestClient, handle: str, *, start: str = "/app") -> httpx.Response:
    """Sign in at the app as `handle`, starting from `start`; returns where the app lands."""
    first = client.get(start, follow_redirects=False)
    assert first.status_code == 303, first.text
    assert first.headers["location"].startswith("/app/login?next=")
    login = client.get(first.headers["location"], follow_redirects=False)
    assert login.status_code == 303, login.text
    assert f"client_id={APP_CLIENT_ID}" in login.headers["location"]
    callback = through_access_manager(login.headers["location"], handle)
    landed = client.get(_path(callback), follow_redirects=False)
    assert landed.status_code == 303, landed.text
    return client.get(landed.headers["location"], follow_redirects=False)


def recommend(client: TestClient, world: World, product: uuid.UUID, patient: Person) -> str:
    """Clinician A recommends `product` to `patient` through the API; the recommendation id."""
    response = client.post(
        f"/v1/patients/{patient.actor.actor_id}/recommendations",
        headers={**world.clinician_a.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={"product_ids": [str(product)], "note": NOTE},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["items"][0]["recommendation_id"])


def count(database: Database, model: Any, *where: Any) -> int:
    with Session(database.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def idempotency_key_of(page: httpx.Response) -> str:
    found = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert found, "the form has no idempotency key"
    return found.group(1)


ADDRESS = {
    "recipient_name": "Pat Patient",
    "line1": "1 Harbour Road",
    "city": "Bristol",
    "postcode": "BS1 4AA",
}


def start_buying(client: TestClient, recommendation_id: str, quantity: int = 2) -> httpx.Response:
    form = client.get(f"/app/recommendations/{recommendation_id}/buy")
    assert form.status_code == 200, form.text
    assert '<label for="quantity">' in form.text
    assert '<label for="postcode">' in form.text
    data = {
        "csrf_token": csrf_of(form),
        "idempotency_key": idempotency_key_of(form),
        "quantity": str(quantity),
        **ADDRESS,
    }
    return client.post(
        f"/app/recommendations/{recommendation_id}/buy", data=data, follow_redirects=False
    )


def pay_on_hosted_page(payment_url: str, card: str) -> httpx.Response:
    """What the patient does on Integrated Payments' page: type a card number, press Pay."""
    with http_client() as browser:
        page = browser.get(payment_url)
        assert page.status_code == 200, page.text
        assert '<label for="card_number">Card number</label>' in page.text
        assert "Integrated Payments" in page.text
        assert "DNA Payments" in page.text
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert action
        base = f"{urlsplit(payment_url).scheme}://{urlsplit(payment_url).netloc}"
        return browser.post(
            base + action.group(1), data={"card_number": card}, follow_redirects=False
        )


def buy_and_pay(client: TestClient, recommendation_id: str) -> httpx.Response:
    """Buy, pay with a good card, follow the page back to the app; the app's order page."""
    started = start_buying(client, recommendation_id)
    assert started.status_code == 303, started.text
    paid = pay_on_hosted_page(started.headers["location"], PAID_CARD)
    assert paid.status_code == 303, paid.text
    returned = client.get(_path(paid.headers["location"]), follow_redirects=False)
    assert returned.status_code == 303, returned.text
    return client.get(returned.headers["location"])
