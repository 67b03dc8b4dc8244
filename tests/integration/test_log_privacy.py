"""No personal data in the logs, whatever fails (issue 8 item 4, issue 16, spec §16 Privacy).

A purchase with a drop-ship address is driven through the API, with control characters refused,
a failure deep in the write path whose error quotes the values (as a database error does), a
successful order and its refund; every log line of the run is captured and searched for each
personal value. Lines carry the request id and, once the caller is known, the actor's id (a
pseudonymous Access Manager subject) and role, never a name or a token.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError

from product_shop.checkout.service import CheckoutService
from product_shop.checkout.tables import Checkout
from product_shop.db.engine import Database
from product_shop.logging import configure_logging
from tests.conftest import Person, TokenFactory, World
from tests.integration.checkout_support import Shop, pay
from tests.integration.conftest import count_rows
from tests.integration.refund_support import refund

ADDRESS = {
    "recipient_name": "Zelda Quixote-Marlowe",
    "line1": "77 Wisteria Crescent",
    "line2": "Flat Nine",
    "city": "Lowerbridge",
    "postcode": "LB9 7QZ",
}


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    configure_logging("INFO")


@pytest.fixture
def zelda(make_token: TokenFactory, world: World) -> Person:
    from product_shop.access.actor import Actor, Role

    subject = str(uuid.uuid4())
    token = make_token(
        role="patient",
        subject=subject,
        practice_id=world.practice_a,
        name=ADDRESS["recipient_name"],
    )
    actor = Actor(subject, ADDRESS["recipient_name"], Role.PATIENT, world.practice_a, False, None)
    return Person(actor=actor, token=token)


def _checkout(client: TestClient, patient: Person, shop: Shop, address: dict[str, Any]) -> Any:
    return client.post(
        "/v1/checkouts",
        headers={**patient.headers, "Idempotency-Key": str(uuid.uuid4())},
        json={
            "lines": [{"product_id": str(shop.toothbrush), "quantity": 1}],
            "delivery_address": address,
        },
    )


def _personal_values(patient: Person) -> list[str]:
    return [*ADDRESS.values(), patient.token]


def test_a_control_character_in_any_address_field_is_a_422_naming_the_field(
    client: TestClient, zelda: Person, shop: Shop, database: Database
) -> None:
    for field in ("recipient_name", "line1", "line2", "city", "postcode"):
        for bad in ("\x00", "\x07", "\n", "\u2028"):
            address = {**ADDRESS, field: ADDRESS[field][:3] + bad + ADDRESS[field][3:]}

            response = _checkout(client, zelda, shop, address)

            assert response.status_code == 422, (field, repr(bad), response.text)
            problem = response.json()
            assert problem["code"] == "validation_failed"
            assert [e["loc"] for e in problem["errors"]] == [["body", "delivery_address", field]]
            assert problem["errors"][0]["type"] == "control_characters"
            assert ADDRESS[field] not in response.text
    assert count_rows(database, Checkout) == 0


def test_no_personal_value_reaches_the_logs_on_refusal_failure_or_success(
    client: TestClient,
    zelda: Person,
    world: World,
    shop: Shop,
    database: Database,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    # 1. Refused input: a NUL in the address line.
    refused = _checkout(client, zelda, shop, {**ADDRESS, "line1": "77 Wisteria\x00 Crescent"})
    assert refused.status_code == 422

    # 2. A failure in the write path whose error quotes the values (as PostgreSQL's does).
    def failing_write(*_: Any, **__: Any) -> None:
        raise DataError(
            "INSERT INTO checkouts (delivery_address) VALUES (%(delivery_address)s)",
            {"delivery_address": json.dumps(ADDRESS)},
            Exception(f"invalid input for {ADDRESS['recipient_name']}, {ADDRESS['line1']}"),
        )

    with monkeypatch.context() as patch:
        patch.setattr(CheckoutService, "record_new", failing_write)
        failed = _checkout(client, zelda, shop, ADDRESS)
    assert failed.status_code == 500
    assert failed.json()["code"] == "internal_error"
    assert count_rows(database, Checkout) == 0

    # 3. The purchase going through, and the order read back.
    created = _checkout(client, zelda, shop, ADDRESS)
    assert created.status_code == 201, created.text
    assert pay(created.json()).status_code == 200
    order = client.post(f"/v1/checkouts/{created.json()['id']}/complete", headers=zelda.headers)
    assert order.status_code == 200, order.text
    assert client.get(f"/v1/orders/{order.json()['order_id']}", headers=zelda.headers).is_success

    # 4. The practice refunds it (named staff, fresh MFA).
    staff = with_mfa(world.finance_a)
    refunded = refund(client, staff, order.json()["order_id"], {"reason_code": "damaged_item"})
    assert refunded.status_code == 201, refunded.text

    output = logs.getvalue()
    for value in _personal_values(zelda):
        assert value not in output, f"{value!r} reached the logs"
    assert "Wisteria" not in output
    assert "Zelda" not in output
    assert staff["Authorization"].removeprefix("Bearer ") not in output
    assert world.finance_a.actor.name not in output
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    (error,) = [line for line in lines if line["event"] == "unhandled_error"]
    assert error["error"].startswith("sqlalchemy.exc.DataError")
    assert error["route"] == "/v1/checkouts"
    assert error["request_id"] == failed.json()["request_id"]
    assert any(line["event"] == "request" and line["status"] == 201 for line in lines)
    # Who acted, by id and role, on the request lines (the patient's and the staff member's).
    requests = [line for line in lines if line["event"] == "request"]
    assert all(line["request_id"] for line in requests)
    assert any(
        line.get("actor_id") == zelda.actor.actor_id and line.get("actor_role") == "patient"
        for line in requests
    )
    assert any(
        line.get("actor_id") == world.finance_a.actor.actor_id and line["status"] == 201
        for line in requests
    )
