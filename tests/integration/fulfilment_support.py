"""Shared steps for fulfilment tests: the API served over HTTP (so the supplier simulator can call
back), placing a mixed order, driving the supplier simulator, waiting for a line's state."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.events.tables import OutboxEvent
from tests.conftest import Person
from tests.http_support import SIMULATORS
from tests.integration.checkout_support import paid_checkout


def place_order(
    client: TestClient, patient: Person, lines: list[tuple[uuid.UUID, int]]
) -> dict[str, Any]:
    checkout = paid_checkout(client, patient, lines)
    completed = client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=patient.headers)
    assert completed.status_code == 200, completed.text
    order: dict[str, Any] = completed.json()
    return order


def refused_by_the_supplier(
    client: TestClient,
    context: AppContext,
    patient: Person,
    product: uuid.UUID,
    suppliers_url: str,
    n: int = 1,
) -> list[dict[str, Any]]:
    """`n` orders of one drop-ship `product` the supplier network refuses for good (out of
    stock): the relay submits them and each line becomes an exception."""
    orders = [place_order(client, patient, [(product, 1)]) for _ in range(n)]
    SIMULATORS.post(
        f"{suppliers_url}/_simulator/refusals", json={"code": "out_of_stock", "times": n}
    ).raise_for_status()
    context.relay.run_once()
    return orders


def read_order(client: TestClient, person: Person, order_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/orders/{order_id}", headers=person.headers)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def line_named(order: dict[str, Any], name: str) -> dict[str, Any]:
    (line,) = [line for line in order["lines"] if line["name"] == name]
    return line


def wait_for(
    read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], seconds: float = 10
) -> dict[str, Any]:
    """Poll `read` until `done` holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last value: {value}")
        time.sleep(0.05)


def advance(suppliers_url: str, shipment_id: str) -> dict[str, Any]:
    response = SIMULATORS.post(f"{suppliers_url}/_simulator/shipments/{shipment_id}/advance")
    assert response.status_code == 200, response.text
    update: dict[str, Any] = response.json()
    return update


def events_of(database: Database, event_type: str) -> list[OutboxEvent]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.event_type.like(f"%{event_type}%"))
                .order_by(OutboxEvent.position)
            )
        )
