"""The relay's follow-up to an accepted shipment submission (`ShipmentFollowUp.delivered`) as
rows (`fulfilment/acceptance.py`) against the ORM version it replaced (`delivered_through_orm`):
two identical orders, one through each, must end the same — the line, the order (status,
`updated_at`, `version`), the audit entries (every field, the chain intact) and the outbox
events — and a repeated or stale delivery must change nothing, on SQLite and on PostgreSQL
(as the service role, under row-level security)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog, verify_stream
from product_shop.audit.tables import AuditEntry
from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock
from product_shop.db.engine import Database
from product_shop.events.delivery import PendingEvent
from product_shop.events.outbox import Outbox
from product_shop.events.tables import OutboxEvent
from product_shop.fulfilment.lines import LineFulfilment
from product_shop.fulfilment.shipments import ShipmentFollowUp
from product_shop.integrations.suppliers import Shipment, ShipmentStatus
from product_shop.orders.tables import Order, OrderLine
from tests.conftest import World
from tests.integration.checkout_support import Shop
from tests.integration.fulfilment_support import place_order

NOW = datetime(2031, 5, 4, 12, 30, tzinfo=UTC)
SHIPMENT = "shp_same"
_ORDER_KEYS = ("order_id", "checkout_id", "payment_ref", "created_at")
_LINE_KEYS = ("line_item_id", "order_id", "product_id")
_AUDIT_KEYS = ("position", "entry_id", "prev_hash", "entry_hash")
_EVENT_KEYS = ("position", "event_id")

Deliver = Callable[[Session, PendingEvent, int], None]


def _follow_up() -> ShipmentFollowUp:
    clock = FrozenClock(NOW)
    return ShipmentFollowUp(
        LineFulfilment(audit=AuditLog(clock), outbox=Outbox(clock), clock=clock)
    )


def _through_rows(session: Session, event: PendingEvent, attempt: int) -> None:
    assert len(session.identity_map) == 0  # what the relay's session is: the rows path
    _follow_up().delivered(session, event, _shipment(event, attempt))


def _through_orm(session: Session, event: PendingEvent, attempt: int) -> None:
    _follow_up().delivered_through_orm(
        session, uuid.UUID(event.data["line_item_id"]), attempt, _shipment(event, attempt)
    )


def _shipment(event: PendingEvent, attempt: int) -> Shipment:
    return Shipment(SHIPMENT, f"{event.data['line_item_id']}:{attempt}", ShipmentStatus.ACCEPTED, 1)


def _request(database: Database, line_item_id: str, attempt: int) -> PendingEvent:
    """The line's `fulfilment.shipment_requested.v1` for `attempt`, as the relay claims it."""
    with Session(database.engine) as session:
        rows = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.event_type.like("%shipment_requested%"))
            .where(OutboxEvent.aggregate_id == line_item_id)
            .order_by(OutboxEvent.position)
        ).all()
    (row,) = [r for r in rows if r.data["attempt"] == attempt]
    return PendingEvent(
        0,
        "supplier_network",
        row.position,
        row.event_id,
        row.event_type,
        row.source,
        row.subject,
        row.aggregate_type,
        row.aggregate_id,
        row.occurred_at,
        row.data,
        0,
    )


def _state(database: Database, order_id: str) -> dict[str, Any]:
    """Everything the follow-up may write about the order, ids replaced by their place."""
    with Session(database.engine) as session:
        order = session.get(Order, uuid.UUID(order_id))
        assert order is not None
        lines = session.scalars(
            select(OrderLine)
            .where(OrderLine.order_id == order.order_id)
            .order_by(OrderLine.line_no)
        ).all()
        trail = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.stream_type == "order", AuditEntry.stream_id == order_id)
            .order_by(AuditEntry.stream_seq)
        ).all()
        line_ids = [str(line.line_item_id) for line in lines]
        events = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.aggregate_id.in_([order_id, *line_ids]))
            .order_by(OutboxEvent.position)
        ).all()
        names = {order_id: "<order>", **{i: f"<line{n}>" for n, i in enumerate(line_ids, 1)}}
        assert verify_stream(list(trail))  # the audit chain is whole
        return {
            "order": _plain(order, _ORDER_KEYS, names),
            "lines": [_plain(line, _LINE_KEYS, names) for line in lines],
            "audit": [_plain(e, _AUDIT_KEYS, names) for e in trail],
            "events": [_plain(e, _EVENT_KEYS, names) for e in events],
        }


def _plain(row: Any, skip: tuple[str, ...], names: dict[str, str]) -> dict[str, Any]:
    columns = row.__table__.columns.keys()
    return {key: _named(getattr(row, key), names) for key in columns if key not in skip}


def _named(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _named(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v, names) for v in value]
    if isinstance(value, uuid.UUID | str):
        return names.get(str(value), value)
    return value


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed: new values of the order's and lines' columns, entries and events added."""
    return {
        "order": {k: v for k, v in after["order"].items() if before["order"][k] != v},
        "lines": [
            {k: v for k, v in new.items() if old[k] != v}
            for old, new in zip(before["lines"], after["lines"], strict=True)
        ],
        "audit": after["audit"][len(before["audit"]) :],
        "events": after["events"][len(before["events"]) :],
    }


def _deliver(database: Database, deliver: Deliver, event: PendingEvent, attempt: int) -> None:
    with database.unit_of_work() as session:
        deliver(session, event, attempt)


def _both(
    database: Database, orders: list[dict[str, Any]], line_no: int, attempt: int
) -> list[dict[str, Any]]:
    """The submission `attempt` of line `line_no` accepted: through the ORM for the first order,
    as rows for the second; what each changed."""
    changes = []
    for order, deliver in zip(orders, (_through_orm, _through_rows), strict=True):
        line_item_id = order["lines"][line_no - 1]["line_item_id"]
        event = _request(database, line_item_id, attempt)
        before = _state(database, order["order_id"])
        _deliver(database, deliver, event, attempt)
        changes.append(_changes(before, _state(database, order["order_id"])))
    return changes


def _unchanged_by_repeats(
    database: Database, orders: list[dict[str, Any]], line_no: int, attempts: list[int]
) -> None:
    for order in orders:
        line_item_id = order["lines"][line_no - 1]["line_item_id"]
        before = _state(database, order["order_id"])
        for deliver in (_through_rows, _through_orm):
            for attempt in attempts:
                event = _request(database, line_item_id, attempt)
                _deliver(database, deliver, event, attempt)
        assert _state(database, order["order_id"]) == before


@pytest.mark.parametrize(
    ("products", "status_changes"),
    [
        (("toothbrush",), True),  # Created -> Fulfilment-In-Progress
        (("toothbrush", "kit"), True),  # the kit is being prepared: the same change
        (("voucher", "toothbrush"), True),  # the voucher is delivered: the same change
        (("toothbrush", "floss"), False),  # the floss still waits for the supplier: no change
    ],
)
def test_an_accepted_submission_writes_as_rows_what_the_orm_wrote_and_a_repeat_changes_nothing(
    client: TestClient,
    world: World,
    shop: Shop,
    database: Database,
    make_product: Callable[..., uuid.UUID],
    offer: Callable[..., None],
    products: tuple[str, ...],
    status_changes: bool,
) -> None:
    floss = make_product(name="Floss picks", fulfilment_type="Drop-Ship", cost_price_minor=199)
    offer(world.admin_a, floss, 499)
    catalogue = {"floss": floss, "toothbrush": shop.toothbrush, "kit": shop.kit}
    catalogue["voucher"] = shop.voucher
    basket = [(catalogue[p], 1) for p in products]
    orders = [place_order(client, world.patient_a, basket) for _ in range(2)]
    line_no = products.index("toothbrush") + 1

    through_orm, as_rows = _both(database, orders, line_no, attempt=1)

    assert as_rows == through_orm
    assert as_rows["lines"][line_no - 1] == {
        "fulfilment_status": "sent_to_supplier",
        "fulfilment_ref": SHIPMENT,
        "updated_at": NOW,
    }
    assert sum(1 for changed in as_rows["lines"] if changed) == 1
    assert (as_rows["order"]["updated_at"], as_rows["order"]["version"]) == (NOW, 2)
    actions = [(e["action"], e["actor_id"]) for e in as_rows["audit"]]
    assert actions == [("fulfilment.sent_to_supplier", "supplier-network")] + (
        [("order.status_changed", "supplier-network")] if status_changes else []
    )
    (event,) = as_rows["events"]
    assert event["event_type"].endswith("fulfilment.stage_changed.v1")
    assert (event["data"]["notification"], event["data"]["status"]) == (
        "sent_to_supplier",
        "sent_to_supplier",
    )
    # the same submission again, by either path: nothing changes
    _unchanged_by_repeats(database, orders, line_no, attempts=[1])


def test_a_resend_accepted_after_an_exception_closes_it_the_same_way(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
) -> None:
    orders = [place_order(client, world.patient_a, [(shop.toothbrush, 1)]) for _ in range(2)]
    httpx.post(
        f"{suppliers_url}/_simulator/refusals", json={"code": "out_of_stock", "times": 2}
    ).raise_for_status()
    context.relay.run_once()  # both refused: exceptions
    for order in orders:
        line_item_id = order["lines"][0]["line_item_id"]
        resent = client.post(
            f"/v1/orders/{order['order_id']}/lines/{line_item_id}/fulfilment",
            headers=world.admin_a.headers,
            json={"status": "sent_to_supplier"},
        )
        assert resent.status_code == 200, resent.text

    through_orm, as_rows = _both(database, orders, 1, attempt=2)

    assert as_rows == through_orm
    assert as_rows["lines"][0] == {
        "fulfilment_status": "sent_to_supplier",
        "fulfilment_ref": SHIPMENT,
        "exception_reason": None,
        "exception_since": None,
        "exception_resolution": None,
        "updated_at": NOW,
    }
    assert [e["action"] for e in as_rows["audit"]] == ["fulfilment.sent_to_supplier"]
    # the resend's acceptance again, and the first (refused) submission's: nothing changes
    _unchanged_by_repeats(database, orders, 1, attempts=[2, 1])


def test_a_line_the_callbacks_moved_first_only_gets_the_shipment_id(
    client: TestClient, world: World, shop: Shop, database: Database
) -> None:
    orders = [place_order(client, world.patient_a, [(shop.toothbrush, 1)]) for _ in range(2)]
    with database.engine.begin() as connection:  # an open exception, no shipment id yet
        for order in orders:
            connection.execute(
                update(OrderLine)
                .where(OrderLine.line_item_id == uuid.UUID(order["lines"][0]["line_item_id"]))
                .values(fulfilment_status="exception", exception_reason="lost", exception_since=NOW)
            )

    through_orm, as_rows = _both(database, orders, 1, attempt=1)

    assert as_rows == through_orm
    assert as_rows == {
        "order": {},
        "lines": [{"fulfilment_ref": SHIPMENT}],
        "audit": [],
        "events": [],
    }


def test_the_relay_records_an_acceptance_as_rows(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_orm(*_args: Any) -> None:
        raise AssertionError("the relay's follow-up went through the ORM")

    monkeypatch.setattr(ShipmentFollowUp, "delivered_through_orm", no_orm)
    order = place_order(client, world.patient_a, [(shop.toothbrush, 1)])

    context.relay.run_once()

    state = _state(database, order["order_id"])
    assert state["lines"][0]["fulfilment_status"] == "sent_to_supplier"
    assert state["lines"][0]["fulfilment_ref"].startswith("shp_")
    assert (state["order"]["status"], state["order"]["version"]) == ("Fulfilment-In-Progress", 2)
    assert [e["action"] for e in state["audit"]][-2:] == [
        "fulfilment.sent_to_supplier",
        "order.status_changed",
    ]
