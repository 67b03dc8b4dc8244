"""The patient app preview at /app (spec §10.1, §4.1, §5.1, §9): a patient signs in through
Access Manager (the app's own client), sees what their care team recommended, buys it on
Integrated Payments' hosted card page (driven here as a browser would, with httpx), comes back
to the order, and asks to cancel; staff cannot use the app, another patient's order is not
found, and a form without its CSRF token changes nothing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.sessions import PortalSession
from product_shop.checkout.tables import Checkout
from product_shop.config import DEFAULT_AUDIENCE, DEFAULT_ISSUER, Settings
from product_shop.db.engine import Database
from product_shop.orders.tables import Order
from product_shop.refunds.tables import CancellationRequest
from product_shop.simulators.access import (
    AccessClient,
    AccessSimulatorConfig,
    create_access_simulator,
    users_from_demo,
)
from product_shop.simulators.server import BackgroundServer
from tests.conftest import KeyPair, World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import place_order
from tests.integration.patient_app_support import (
    ADDRESS,
    APP_CLIENT_ID,
    DECLINED_CARD,
    NOTE,
    PAID_CARD,
    app_settings,
    buy_and_pay,
    count,
    idempotency_key_of,
    pay_on_hosted_page,
    recommend,
    sign_in,
    start_app_access_simulator,
    start_buying,
)
from tests.integration.portal_support import TEST_SERVER, _path, csrf_of


@pytest.fixture(scope="module")
def app_access_simulator(key_pair: KeyPair, world: World) -> Iterator[BackgroundServer]:
    server = start_app_access_simulator(key_pair, world)
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, app_access_simulator: BackgroundServer) -> Settings:
    return app_settings(settings, app_access_simulator.url)


# ---- signing in -----------------------------------------------------------------------------


def test_a_patient_signs_in_with_the_apps_own_client_and_sees_their_care_teams_recommendation(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommend(client, world, shop.toothbrush, world.patient_a)

    home = sign_in(client, "patient_a")

    assert home.status_code == 200, home.text
    assert "Recommended by your care team" in home.text
    assert "Oral-B Pro 3" in home.text
    assert "Dr Clare" in home.text
    assert NOTE in home.text
    assert "£59.99" in home.text
    assert ">Buy<" in home.text
    # Only what was recommended: the practice's other products are no shop front (spec §4.1).
    assert "Hygienist voucher" not in home.text
    assert "Home Whitening Kit" not in home.text
    assert "ps_app" in client.cookies
    assert "ps_portal" not in client.cookies
    assert count(database, PortalSession) == 1
    policy = home.headers["content-security-policy"]
    assert policy.count("default-src") == 1
    assert "style-src 'self'" in policy
    assert home.headers["cache-control"] == "no-store"


def test_without_a_session_every_app_page_asks_to_sign_in(client: TestClient) -> None:
    for path in ("/app", "/app/orders", f"/app/orders/{uuid.uuid4()}"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/app/login?next=")


def test_staff_cannot_use_the_app(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    page = sign_in(client, "clinician_a")

    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "patient_app_forbidden" in page.text
    assert "staff portal" in page.text
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    assert client.get(f"/app/recommendations/{recommendation}/buy").status_code == 403
    assert client.get("/app/orders").status_code == 403
    assert count(database, Checkout) == 0


# ---- buying -----------------------------------------------------------------------------------


def test_a_patient_buys_a_recommendation_on_the_hosted_page_and_sees_the_order(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")

    started = start_buying(client, recommendation, quantity=2)
    assert started.status_code == 303, started.text
    payment_url = started.headers["location"]
    assert not payment_url.startswith(TEST_SERVER)  # Integrated Payments' page, not ours
    with Session(database.engine) as session:
        (checkout,) = session.scalars(select(Checkout)).all()
        assert checkout.status == "awaiting_payment"
        assert checkout.total_minor == 2 * 5999
        assert checkout.patient_id == world.patient_a.actor.patient_id

    paid = pay_on_hosted_page(payment_url, PAID_CARD)
    assert paid.status_code == 303, paid.text
    back = urlsplit(paid.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == f"{TEST_SERVER}/app/checkouts/return"
    assert parse_qs(back.query)["merchant_reference"] == [str(checkout.checkout_id)]
    returned = client.get(_path(paid.headers["location"]), follow_redirects=False)
    assert returned.status_code == 303, returned.text
    page = client.get(returned.headers["location"])

    with Session(database.engine) as session:
        (order,) = session.scalars(select(Order)).all()
        assert order.patient_id == world.patient_a.actor.patient_id
        assert order.total_minor == 2 * 5999
        assert session.get(Checkout, checkout.checkout_id).order_id == order.order_id  # type: ignore[union-attr]
    assert page.status_code == 200, page.text
    assert "your order is placed" in page.text
    assert "Oral-B Pro 3 \u00d7 2" in page.text
    assert "£119.98" in page.text
    assert "card ending 4242" in page.text
    listed = client.get("/app/orders")
    assert f"/app/orders/{order.order_id}" in listed.text
    # One purchase, one checkout.
    assert count(database, Checkout) == 1


def test_sending_the_buy_form_twice_starts_one_checkout(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")
    form = client.get(f"/app/recommendations/{recommendation}/buy")
    data = {"csrf_token": csrf_of(form), "idempotency_key": idempotency_key_of(form), **ADDRESS}

    path = f"/app/recommendations/{recommendation}/buy"
    first = client.post(path, data=data, follow_redirects=False)
    again = client.post(path, data=data, follow_redirects=False)

    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    assert count(database, Checkout) == 1


def test_changing_the_details_after_starting_to_pay_asks_again_with_a_fresh_key(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")
    form = client.get(f"/app/recommendations/{recommendation}/buy")
    key = idempotency_key_of(form)
    data = {"csrf_token": csrf_of(form), "idempotency_key": key, "quantity": "2", **ADDRESS}
    path = f"/app/recommendations/{recommendation}/buy"
    assert client.post(path, data=data, follow_redirects=False).status_code == 303

    changed = client.post(path, data={**data, "quantity": "1"}, follow_redirects=False)

    assert changed.status_code == 422
    assert "You changed the details after starting to pay" in changed.text
    assert idempotency_key_of(changed) != key
    resent = client.post(
        path,
        data={**data, "quantity": "1", "idempotency_key": idempotency_key_of(changed)},
        follow_redirects=False,
    )
    assert resent.status_code == 303
    with Session(database.engine) as session:
        totals = sorted(row.total_minor for row in session.scalars(select(Checkout)))
    assert totals == [5999, 2 * 5999]


def test_a_drop_ship_purchase_without_an_address_is_refused_on_the_form(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")
    form = client.get(f"/app/recommendations/{recommendation}/buy")
    data = {"csrf_token": csrf_of(form), "idempotency_key": idempotency_key_of(form)}

    answer = client.post(f"/app/recommendations/{recommendation}/buy", data=data)

    assert answer.status_code == 422
    assert "Enter the delivery address" in answer.text
    assert 'class="error"' in answer.text
    assert count(database, Checkout) == 0


def test_a_declined_card_stays_on_the_hosted_page_and_makes_no_order(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")
    started = start_buying(client, recommendation)

    declined = pay_on_hosted_page(started.headers["location"], DECLINED_CARD)

    assert declined.status_code == 402
    assert "The card was declined." in declined.text
    assert 'name="card_number"' in declined.text
    assert count(database, Order) == 0


def test_after_a_failed_payment_the_app_offers_a_new_payment_page_and_the_order_follows(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    """Spec §5.2, §15.2: a failed payment makes no order and the patient is prompted to retry
    through Integrated Payments' page."""
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")
    started = start_buying(client, recommendation)
    first_page = started.headers["location"]
    assert pay_on_hosted_page(first_page, DECLINED_CARD).status_code == 402
    with Session(database.engine) as session:
        (checkout_id,) = session.scalars(select(Checkout.checkout_id)).all()

    failed = client.get("/app/checkouts/return", params={"merchant_reference": str(checkout_id)})

    assert failed.status_code == 402, failed.text
    assert "Your payment did not go through" in failed.text
    assert f'action="/app/checkouts/{checkout_id}/retry"' in failed.text
    assert "retry_url" not in failed.text
    assert count(database, Order) == 0
    forged = client.post(f"/app/checkouts/{checkout_id}/retry", data={}, follow_redirects=False)
    assert forged.status_code == 403
    retried = client.post(
        f"/app/checkouts/{checkout_id}/retry",
        data={"csrf_token": csrf_of(failed)},
        follow_redirects=False,
    )
    assert retried.status_code == 303, retried.text
    assert retried.headers["location"] != first_page
    paid = pay_on_hosted_page(retried.headers["location"], PAID_CARD)
    assert paid.status_code == 303, paid.text
    returned = client.get(_path(paid.headers["location"]), follow_redirects=False)
    assert returned.status_code == 303, returned.text
    assert "your order is placed" in client.get(returned.headers["location"]).text
    assert count(database, Order) == 1


def test_a_quantity_in_other_digits_is_a_form_problem_not_a_500(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")
    form = client.get(f"/app/recommendations/{recommendation}/buy")
    data = {
        "csrf_token": csrf_of(form),
        "idempotency_key": idempotency_key_of(form),
        "quantity": "\u00b2",
        **ADDRESS,
    }

    answer = client.post(f"/app/recommendations/{recommendation}/buy", data=data)

    assert answer.status_code == 422, answer.text
    assert "Enter how many you want, as a number." in answer.text
    assert count(database, Checkout) == 0


def test_a_product_not_recommended_to_the_patient_cannot_be_bought_here(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    others = recommend(client, world, shop.toothbrush, world.patient_a2)
    sign_in(client, "patient_a")

    for path in (f"/app/recommendations/{others}/buy", f"/app/recommendations/{uuid.uuid4()}/buy"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("text/html")
    assert count(database, Checkout) == 0


def test_a_buy_form_without_its_csrf_token_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")

    for token in (None, "forged"):
        data = {"quantity": "1", **ADDRESS, **({"csrf_token": token} if token else {})}
        answer = client.post(f"/app/recommendations/{recommendation}/buy", data=data)
        assert answer.status_code == 403
        assert "csrf_failed" in answer.text
    assert count(database, Checkout) == 0


# ---- orders and cancelling ---------------------------------------------------------------------


def test_a_patient_asks_to_cancel_their_order_with_a_reason(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    recommendation = recommend(client, world, shop.toothbrush, world.patient_a)
    sign_in(client, "patient_a")
    page = buy_and_pay(client, recommendation)
    order_id = re.search(r"/app/orders/([0-9a-f-]{36})/cancellation", page.text)
    assert order_id, page.text
    data = {
        "csrf_token": csrf_of(page),
        "idempotency_key": idempotency_key_of(page),
        "reason": "Ordered the wrong one",
    }

    asked = client.post(
        f"/app/orders/{order_id.group(1)}/cancellation", data=data, follow_redirects=False
    )

    assert asked.status_code == 303, asked.text
    shown = client.get(asked.headers["location"])
    with Session(database.engine) as session:
        (request,) = session.scalars(select(CancellationRequest)).all()
        assert str(request.order_id) == order_id.group(1)
        assert request.patient_id == world.patient_a.actor.patient_id
        assert request.status == "open"
    assert "Your request to cancel" in shown.text
    assert "Ordered the wrong one" in shown.text
    again = client.post(f"/app/orders/{order_id.group(1)}/cancellation", data=data)
    assert again.status_code == 200  # the same key: the same request, shown again
    assert count(database, CancellationRequest) == 1


def test_a_cancellation_form_without_its_csrf_token_changes_nothing(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    sign_in(client, "patient_a")

    answer = client.post(f"/app/orders/{order['order_id']}/cancellation", data={"reason": "x"})

    assert answer.status_code == 403
    assert "csrf_failed" in answer.text
    assert count(database, CancellationRequest) == 0


def test_another_patients_order_is_not_found(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    page = sign_in(client, "patient_a2")
    csrf = csrf_of(page)

    shown = client.get(f"/app/orders/{order['order_id']}")
    asked = client.post(
        f"/app/orders/{order['order_id']}/cancellation", data={"csrf_token": csrf, "reason": "x"}
    )
    listed = client.get("/app/orders")

    assert shown.status_code == 404
    assert shown.headers["content-type"].startswith("text/html")
    assert asked.status_code == 404
    assert order["order_id"] not in listed.text
    assert count(database, CancellationRequest) == 0


def test_the_order_page_shows_a_digital_lines_full_voucher_code(
    client: TestClient, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.voucher, 1)])
    (voucher,) = order["lines"][0]["vouchers"]
    sign_in(client, "patient_a")

    page = client.get(f"/app/orders/{order['order_id']}")

    assert page.status_code == 200
    assert f"<code>{voucher['code']}</code>" in page.text


# ---- the demo's Access Manager: each client lists its own people --------------------------------


def test_access_manager_offers_the_app_client_only_patients_and_refuses_a_staff_handle(
    key_pair: KeyPair,
) -> None:
    users = users_from_demo(include_patients=True)
    patients = [user for user in users if user.role == "patient"]
    staff = [user for user in users if user.role != "patient"]
    assert patients
    assert staff
    assert all(user.role != "patient" for user in users_from_demo())  # the portal's list
    callback = f"{TEST_SERVER}/app/callback"
    config = AccessSimulatorConfig(
        private_pem=key_pair.private_pem,
        issuer=DEFAULT_ISSUER,
        audience=DEFAULT_AUDIENCE,
        public_url=TEST_SERVER,
        clients={
            APP_CLIENT_ID: AccessClient(
                APP_CLIENT_ID, None, (callback,), roles=frozenset({"patient"})
            )
        },
        users=users,
    )
    with TestClient(create_access_simulator(config)) as idp:
        params = {
            "response_type": "code",
            "client_id": APP_CLIENT_ID,
            "redirect_uri": callback,
            "scope": "openid",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
        picker = idp.get("/authorize", params=params)
        assert picker.status_code == 200
        assert all(user.name in picker.text for user in patients)
        assert not any(f'value="{user.handle}"' in picker.text for user in staff)
        pending = re.search(r'name="pending" value="([^"]+)"', picker.text)
        assert pending
        refused = idp.post(
            "/authorize/login",
            data={"pending": pending.group(1), "handle": staff[0].handle},
            follow_redirects=False,
        )
        assert refused.status_code == 400  # not offered here: the picker again, no code
        chosen = idp.post(
            "/authorize/login",
            data={"pending": pending.group(1), "handle": patients[0].handle},
            follow_redirects=False,
        )
        assert chosen.status_code == 302
        assert chosen.headers["location"].startswith(callback)
