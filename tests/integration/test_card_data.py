"""No card data, ever (issue 17, spec §16 Security: card data only at DNA Payments): a body with
a payment card number anywhere (any JSON string or number at any depth, escaped, a form field)
is refused with 422 `card_data_refused` before any route runs, on every route, webhooks too;
afterwards no table holds the digits and no log line does (`src/product_shop/web/abuse.py`)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from product_shop.db.engine import Database
from product_shop.db.models import metadata
from product_shop.logging import configure_logging
from tests.conftest import World
from tests.integration.checkout_support import Shop, key, paid_checkout

CARD = "5555555555554444"  # a Mastercard test number (Luhn-valid)
AMEX = "378282246310005"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    configure_logging("INFO")


def _every_value_in_the_database(database: Database) -> str:
    """Every row of every table, every column, as text."""
    texts: list[str] = []
    with database.unit_of_work() as session:
        for table in metadata.sorted_tables:
            for row in session.execute(select(table)):
                texts.extend(str(value) for value in row)
    return "\n".join(texts)


def _digits_only(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def test_card_numbers_anywhere_are_refused_and_never_stored_or_logged(
    client: TestClient, world: World, shop: Shop, database: Database, logs: io.StringIO
) -> None:
    patient = world.patient_a
    checkout = paid_checkout(client, patient, [(shop.toothbrush, 1)])
    order = client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=patient.headers)
    assert order.status_code == 200, order.text
    order_id = order.json()["order_id"]
    address = {"recipient_name": "Penny Patient", "line1": "1 Harbour Road", "city": "Bristol"}
    spaced = " ".join(CARD[i : i + 4] for i in range(0, 16, 4))
    dashed = "-".join(CARD[i : i + 4] for i in range(0, 16, 4))
    lines = [{"product_id": str(shop.voucher), "quantity": 1}]
    attempts: list[tuple[str, dict[str, str], Any]] = [
        # checkout creation, the number in a nested field, spaced
        (
            "/v1/checkouts",
            {**patient.headers, **key()},
            {"lines": lines, "delivery_address": {**address, "line2": spaced, "postcode": "BS1"}},
        ),
        # checkout creation, the number as a JSON number deep in a list
        (
            "/v1/checkouts",
            {**patient.headers, **key()},
            {"lines": [{"product_id": str(shop.voucher), "quantity": int(CARD)}]},
        ),
        # a refund's note, with dashes
        (
            f"/v1/orders/{order_id}/refunds",
            {**world.finance_a.headers, **key()},
            {"amount_minor": 100, "reason_code": "other", "note": f"card was {dashed}"},
        ),
        # a clinician's recommendation note (an Amex number, JSON-escaped digits)
        (
            f"/v1/patients/{patient.actor.actor_id}/recommendations",
            {**world.clinician_a.headers, **key()},
            {"product_ids": [str(shop.toothbrush)], "note": f"pay with {AMEX}"},
        ),
        # the payments webhook, unsigned: refused for the card before the signature is looked at
        (
            "/v1/webhooks/payments",
            {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,x"},
            {"type": "payment.captured", "data": {"card": {"pan": CARD}}},
        ),
        ("/v1/webhooks/suppliers", {}, {"events": [{"note": spaced}]}),
    ]
    for path, headers, body in attempts:
        response = client.post(path, headers=headers, json=body)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "card_data_refused", path
        assert CARD not in _digits_only(response.text)
        assert AMEX not in _digits_only(response.text)
    escaped = json.dumps({"note": CARD}).replace("5", "\\u0035").encode()
    response = client.post(
        f"/v1/patients/{patient.actor.actor_id}/recommendations",
        headers={**world.clinician_a.headers, **key(), "content-type": "application/json"},
        content=escaped,
    )
    assert response.json()["code"] == "card_data_refused"
    response = client.post(
        "/v1/webhooks/rewards", data={"card": spaced, "name": "x"}, headers=key()
    )
    assert (response.status_code, response.json()["code"]) == (422, "card_data_refused")

    stored = _digits_only(_every_value_in_the_database(database))
    assert stored  # the tables were read (an order, its lines, its audit trail)
    assert CARD not in stored
    assert AMEX not in stored
    logged = _digits_only(logs.getvalue())
    assert logs.getvalue().count('"status": 422') + logs.getvalue().count("status=422") >= 8
    assert CARD not in logged
    assert AMEX not in logged


def test_ordinary_bodies_with_long_numbers_and_ids_pass(
    client: TestClient, world: World, shop: Shop
) -> None:
    """UUIDs, timestamps, amounts, a phone number and a postcode are not card numbers."""
    address = {
        "recipient_name": "Penny Patient",
        "line1": "1 Harbour Road",
        "line2": "Tel +44 7911 123456, order 2026-12-01T04:10:27Z",
        "city": "Bristol",
        "postcode": "BS1 4DJ",
    }
    response = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={
            "lines": [{"product_id": str(shop.toothbrush), "quantity": 1}],
            "delivery_address": address,
        },
    )
    assert response.status_code == 201, response.text


# A version-4 UUID whose first three groups are 16 digits passing the Luhn check (about one
# random UUID in 70,000 is like this): an id, never a card number.
LUHN_SHAPED_ID = "41111111-1111-4115-a123-0123456789ab"


def test_an_id_whose_digits_pass_the_luhn_check_reaches_the_route(
    client: TestClient, world: World, shop: Shop
) -> None:
    assert uuid.UUID(LUHN_SHAPED_ID).version == 4
    response = client.post(
        "/v1/checkouts",
        headers={**world.patient_a.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={
            "lines": [
                {
                    "product_id": str(shop.toothbrush),
                    "quantity": 1,
                    "recommendation_id": LUHN_SHAPED_ID,
                }
            ],
        },
    )
    # The route ran and read the id as an id: no such recommendation of this patient's.
    assert (response.status_code, response.json()["code"]) == (422, "recommendation_not_found")
    assert response.json()["recommendation_ids"] == [LUHN_SHAPED_ID]
