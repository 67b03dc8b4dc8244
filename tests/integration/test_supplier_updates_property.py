"""Supplier callbacks arrive twice and out of order (issue 10): whatever the interleaving of
duplicated and reordered updates, a line ends where the clean sequence leaves it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from product_shop.context import AppContext
from product_shop.events.inbox import InboxMessage
from product_shop.fulfilment.shipments import INBOX_SOURCE, parse_update
from product_shop.orders.tables import Order, OrderLine
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import place_order

DISPATCHED_AT = "2026-11-30T09:00:00+00:00"
DELIVERED_AT = "2026-11-30T15:30:00+00:00"
TRACKING = {
    "carrier": "DPD",
    "tracking_number": "DPD0001",
    "tracking_url": "https://track.example-carrier.test/parcel/dpd/DPD0001",
    "dispatched_at": DISPATCHED_AT,
}


def _updates(statuses: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {"shipment_id": "shp_prop", "status": status, "sequence": n, **fields}
        for n, (status, fields) in enumerate(statuses, start=1)
    ]


SCENARIOS = {
    "delivered": _updates(
        [
            ("accepted", {}),
            ("dispatched", TRACKING),
            ("in_transit", TRACKING),
            ("delivered", {**TRACKING, "delivered_at": DELIVERED_AT}),
        ]
    ),
    "lost_then_found": _updates(
        [
            ("accepted", {}),
            ("dispatched", TRACKING),
            ("exception", {**TRACKING, "exception_reason": "lost"}),
            ("delivered", {**TRACKING, "delivered_at": DELIVERED_AT}),
        ]
    ),
    "damaged": _updates(
        [
            ("accepted", {}),
            ("dispatched", TRACKING),
            ("exception", {**TRACKING, "exception_reason": "damaged"}),
        ]
    ),
}


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """A clean sequence (a scenario, possibly cut short) and the same updates delivered in any
    order, some twice (with the same event id, or as a new event)."""
    scenario = SCENARIOS[draw(st.sampled_from(sorted(SCENARIOS)))]
    clean = scenario[: draw(st.integers(min_value=1, max_value=len(scenario)))]
    sent: list[tuple[str, dict[str, Any]]] = []
    for update_ in clean:
        event_id = f"evt_{update_['sequence']}"
        sent.append((event_id, update_))
        for again in range(draw(st.integers(min_value=0, max_value=2))):
            same_id = draw(st.booleans())
            sent.append((event_id if same_id else f"{event_id}_again_{again}", update_))
    return clean, draw(st.permutations(sent))


def _reset(context: AppContext, line_item_id: uuid.UUID) -> None:
    with context.database.unit_of_work() as session:
        line = session.get(OrderLine, line_item_id)
        assert line is not None
        session.execute(
            update(OrderLine)
            .where(OrderLine.line_item_id == line_item_id)
            .values(
                fulfilment_status="pending",
                fulfilment_ref=None,
                carrier=None,
                tracking_number=None,
                tracking_url=None,
                dispatched_at=None,
                delivered_at=None,
                collected_at=None,
                exception_reason=None,
                exception_since=None,
                exception_resolution=None,
                supplier_sequence=0,
                shipment_attempt=1,
            )
        )
        session.execute(
            update(Order)
            .where(Order.order_id == line.order_id)
            .values(status="Created", fulfilment_status="Created")
        )
        session.execute(delete(InboxMessage).where(InboxMessage.source == INBOX_SOURCE))


def _deliver(
    context: AppContext, line_item_id: uuid.UUID, sent: list[tuple[str, dict[str, Any]]]
) -> tuple[Any, ...]:
    _reset(context, line_item_id)
    for event_id, data in sent:
        update_ = parse_update({**data, "reference": f"{line_item_id}:1"})
        context.database.run(
            lambda session, e=event_id, u=update_: context.supplier_updates.apply(session, e, u)
        )
    with context.database.reading() as session:
        row = session.execute(
            select(
                OrderLine.fulfilment_status,
                OrderLine.fulfilment_ref,
                OrderLine.carrier,
                OrderLine.tracking_number,
                OrderLine.tracking_url,
                OrderLine.dispatched_at,
                OrderLine.delivered_at,
                OrderLine.exception_reason,
                OrderLine.supplier_sequence,
                Order.status,
            )
            .join(Order, Order.order_id == OrderLine.order_id)
            .where(OrderLine.line_item_id == line_item_id)
        ).one()
    return tuple(row)


def test_any_interleaving_of_duplicated_and_reordered_updates_ends_as_the_clean_sequence(
    client: TestClient, context: AppContext, world: World, shop: Shop
) -> None:
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])
    line_item_id = uuid.UUID(order["lines"][0]["line_item_id"])

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(deliveries())
    def check(case: tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]) -> None:
        clean, shuffled = case
        expected = _deliver(context, line_item_id, [(f"evt_{u['sequence']}", u) for u in clean])
        assert _deliver(context, line_item_id, shuffled) == expected

    check()

    # And the clean sequence ends where the contract says: delivered, tracked, dated.
    delivered = _deliver(
        context,
        line_item_id,
        [(f"evt_{u['sequence']}", u) for u in SCENARIOS["delivered"]],
    )
    assert delivered[0] == "delivered"
    assert delivered[3] == "DPD0001"
    assert delivered[5] == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert delivered[6] == datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
    assert delivered[-1] == "Completed"
