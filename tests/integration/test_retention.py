"""Retention (spec §16 Privacy, §17): an order placed longer ago than `retention_days` has its
personal data erased everywhere it lives (checkout, capture, lines, vouchers, refunds,
cancellation requests, outbox payloads, stored idempotent answers) while amounts, dates,
statuses and references stay; the erasure is audited once per order; a dry run changes nothing;
an order inside the period is untouched; a second run does nothing."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, and_, or_, select, update

from product_shop.audit.tables import AuditEntry
from product_shop.audit.verify import verify
from product_shop.checkout.tables import Checkout, PaymentCapture
from product_shop.cli import main
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.db.models import metadata
from product_shop.events.tables import OutboxEvent
from product_shop.fulfilment.vouchers import code_hash, normalise
from product_shop.idempotency.tables import IdempotencyKey
from product_shop.jobs.retention import RetentionJob
from product_shop.orders.retention import ERASED_ACTION, OrderRetention
from product_shop.orders.tables import Order, OrderLine, Voucher
from product_shop.refunds.tables import CancellationRequest, Refund
from product_shop.simulators.server import BackgroundServer
from tests.conftest import Person, World
from tests.integration.checkout_support import ADDRESS, Shop, key, pay, start_checkout
from tests.integration.fulfilment_support import (
    advance,
    line_named,
    read_order,
    wait_for,
)
from tests.integration.refund_support import refund

BRUSH = "Oral-B Pro 3"
SEVEN_YEARS = timedelta(days=7 * 365)
# The old order's personal data: none of it may be found anywhere after the run.
OLD_ADDRESS = {
    "recipient_name": "Olive Oldham",
    "line1": "7 Quarry Lane",
    "city": "Frome",
    "postcode": "BA11 2ZZ",
}
REFUND_NOTE = "Olive says the parcel was left with her neighbour at 9 Quarry Lane"
CANCEL_REASON = "I am moving to 3 Mill Road, Frome"
AUDIT_TABLES = {"audit_entries", "audit_checkpoints", "audit_checkpoint_heads"}


def _place(
    client: TestClient, patient: Person, lines: list[tuple[uuid.UUID, int]], **extra: Any
) -> dict[str, Any]:
    created = start_checkout(client, patient, lines, **extra)
    assert created.status_code == 201, created.text
    assert pay(created.json()).status_code == 200
    completed = client.post(
        f"/v1/checkouts/{created.json()['id']}/complete", headers=patient.headers
    )
    assert completed.status_code == 200, completed.text
    order: dict[str, Any] = completed.json()
    return order


def _backdate(database: Database, order_id: str, age: timedelta = SEVEN_YEARS) -> None:
    """As the owner: the order was placed `age` ago."""
    with database.engine.begin() as connection:
        connection.execute(
            update(Order)
            .where(Order.order_id == uuid.UUID(order_id))
            .values(created_at=datetime.now(UTC) - age)
        )


def _dump(database: Database) -> dict[str, list[str]]:
    """Every row of every table, as text: what a dry run must leave as it is."""
    with database.engine.connect() as connection:
        return {
            table.name: sorted(
                json.dumps(dict(row), default=str, sort_keys=True)
                for row in connection.execute(select(table)).mappings()
            )
            for table in metadata.sorted_tables
        }


def _related(connection: Connection, order_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    """Every row about one order, in every table that holds some."""
    order = connection.execute(select(Order).where(Order.order_id == order_id)).mappings().one()
    checkout_id = order["checkout_id"]
    line_ids = list(
        connection.scalars(select(OrderLine.line_item_id).where(OrderLine.order_id == order_id))
    )
    refund_ids = list(
        connection.scalars(select(Refund.refund_id).where(Refund.order_id == order_id))
    )
    request_ids = list(
        connection.scalars(
            select(CancellationRequest.request_id).where(CancellationRequest.order_id == order_id)
        )
    )
    locations = [
        f"/v1/checkouts/{checkout_id}",
        *(f"/v1/refunds/{r}" for r in refund_ids),
        *(f"/v1/cancellation-requests/{r}" for r in request_ids),
    ]
    queries: dict[str, Any] = {
        "orders": select(Order).where(Order.order_id == order_id),
        "checkouts": select(Checkout).where(Checkout.checkout_id == checkout_id),
        "payment_captures": select(PaymentCapture).where(PaymentCapture.checkout_id == checkout_id),
        "order_lines": select(OrderLine).where(OrderLine.order_id == order_id),
        "vouchers": select(Voucher).where(Voucher.order_id == order_id),
        "refunds": select(Refund).where(Refund.order_id == order_id),
        "cancellation_requests": select(CancellationRequest).where(
            CancellationRequest.order_id == order_id
        ),
        "outbox_events": select(OutboxEvent).where(
            or_(
                and_(
                    OutboxEvent.aggregate_type == "order",
                    OutboxEvent.aggregate_id == str(order_id),
                ),
                and_(
                    OutboxEvent.aggregate_type == "checkout",
                    OutboxEvent.aggregate_id == str(checkout_id),
                ),
                and_(
                    OutboxEvent.aggregate_type == "order_line",
                    OutboxEvent.aggregate_id.in_([str(line) for line in line_ids]),
                ),
            )
        ),
        "idempotency_keys": select(IdempotencyKey).where(
            IdempotencyKey.response_location.in_(locations)
        ),
        "audit_entries": select(AuditEntry).where(
            AuditEntry.stream_type == "order", AuditEntry.stream_id == str(order_id)
        ),
    }
    return {
        name: [dict(row) for row in connection.execute(query).mappings()]
        for name, query in queries.items()
    }


def _rows(database: Database, order_id: str) -> dict[str, list[dict[str, Any]]]:
    with database.engine.connect() as connection:
        return _related(connection, uuid.UUID(order_id))


def _without(rows: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in names} for row in rows]


def _texts_holding(database: Database, secrets: list[str]) -> list[str]:
    """Where any of `secrets` is still found, outside the audit log (append-only, not erased)."""
    found = []
    with database.engine.connect() as connection:
        for table in metadata.sorted_tables:
            if table.name in AUDIT_TABLES:
                continue
            for row in connection.execute(select(table)).mappings():
                text = json.dumps(dict(row), default=str, ensure_ascii=False)
                found += [f"{table.name}: {s!r}" for s in secrets if s in text]
    return found


def _audit_intact(context: AppContext) -> bool:
    with context.database.engine.connect() as connection:
        return verify(connection).intact


def _erasure_entries(database: Database) -> list[AuditEntry]:
    with database.reading() as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == ERASED_ACTION)
                .order_by(AuditEntry.position)
            )
        )


def _old_and_young_orders(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    suppliers_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """An order placed seven years ago (a parcel dispatched with tracking, a kit for collection,
    a voucher, a refund with a note, a cancellation request with a reason), and one placed today
    by another patient. Returns both and the old order's personal values."""
    old = _place(
        client,
        world.patient_a2,
        [(shop.toothbrush, 1), (shop.kit, 1), (shop.voucher, 1)],
        delivery_address=OLD_ADDRESS,
    )
    context.relay.run_once()  # the supplier network accepts the parcel
    staff_view = read_order(client, world.admin_a, old["order_id"])
    advance(suppliers_url, line_named(staff_view, BRUSH)["fulfilment_ref"])
    dispatched = wait_for(
        lambda: read_order(client, world.admin_a, old["order_id"]),
        lambda o: line_named(o, BRUSH)["fulfilment_status"] == "dispatched",
    )
    tracking = line_named(dispatched, BRUSH)["tracking"]
    refunded = refund(
        client,
        with_mfa(world.admin_a),
        old["order_id"],
        {"reason_code": "damaged_item", "amount_minor": 999, "note": REFUND_NOTE},
    )
    assert refunded.status_code == 201, refunded.text
    asked = client.post(
        f"/v1/orders/{old['order_id']}/cancellation-requests",
        headers={**world.patient_a2.headers, **key()},
        json={"reason": CANCEL_REASON},
    )
    assert asked.status_code == 201, asked.text
    (voucher,) = [v for line in old["lines"] for v in (line.get("vouchers") or [])]
    code = context.orders.reveal(uuid.UUID(voucher["voucher_id"]))

    young = _place(client, world.patient_a, [(shop.toothbrush, 1), (shop.kit, 1)])
    _backdate(context.database, old["order_id"])
    secrets = [
        *OLD_ADDRESS.values(),
        REFUND_NOTE,
        CANCEL_REASON,
        tracking["tracking_number"],
        tracking["tracking_url"],
        code,
        normalise(code),
        code_hash(code),
    ]
    assert _texts_holding(context.database, secrets), "the old order holds its personal data"
    return old, young, secrets


def test_retention_erases_an_old_orders_personal_data_everywhere_and_keeps_what_finance_needs(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    database: Database,
    suppliers_url: str,
    live_api: BackgroundServer,
    with_mfa: Callable[..., dict[str, str]],
) -> None:
    old, young, secrets = _old_and_young_orders(
        client, context, world, shop, suppliers_url, with_mfa
    )
    old_id, young_id = old["order_id"], young["order_id"]
    context.audit_checkpoint.run_once()
    before = _rows(database, old_id)
    young_before = _rows(database, young_id)
    assert before["payment_captures"][0]["card_last4"] is not None
    assert before["checkouts"][0]["patient_first_name"] == "Paul"

    # A dry run: the old order and what would change, and nothing changed.
    everything = _dump(database)
    dry = context.retention.run_once(dry_run=True)
    assert _dump(database) == everything
    assert dry.dry_run
    assert [str(e.order_id) for e in dry.orders] == [old_id]
    planned = dry.orders[0].fields
    for name in (
        "checkouts.delivery_address",
        "checkouts.patient_first_name",
        "payment_captures.card_last4",
        "order_lines.tracking_number",
        "order_lines.tracking_url",
        "vouchers.code_hash",
        "vouchers.last_four",
        "refunds.note",
        "cancellation_requests.reason",
        "outbox_events.data.delivery_address",  # the shipment request
        "outbox_events.data.patient_first_name",  # the staff task
        "outbox_events.data.tracking_number",  # the stage change
        "outbox_events.data.card_last4",  # the payment receipt
        "idempotency_keys.response_body.delivery_address",  # the checkout POST's answer
        "idempotency_keys.response_body.note",  # the refund POST's answer
        "idempotency_keys.response_body.reason",  # the cancellation request's answer
    ):
        assert planned.get(name, 0) >= 1, name

    # The run: the same changes, made.
    run = context.retention.run_once()
    assert not run.dry_run
    assert [(str(e.order_id), e.fields) for e in run.orders] == [(old_id, planned)]

    # No personal value of the old order is left outside the (append-only) audit log.
    assert _texts_holding(database, secrets) == []
    after = _rows(database, old_id)
    (checkout,) = after["checkouts"]
    assert (checkout["delivery_address"], checkout["patient_first_name"]) == (None, None)
    assert after["payment_captures"][0]["card_last4"] is None
    assert all(v["last_four"] == "" for v in after["vouchers"])
    assert [r["note"] for r in after["refunds"]] == [None]
    assert [r["reason"] for r in after["cancellation_requests"]] == [None]
    for event in after["outbox_events"]:
        data = event["data"]
        assert data.get("patient_first_name") is None
        assert data.get("tracking_number") is None
        assert data.get("card_last4") is None
        if "delivery_address" in data:  # still the schema's shape, only the country kept
            assert data["delivery_address"] == {
                "recipient_name": "",
                "line1": "",
                "line2": None,
                "city": "",
                "postcode": "",
                "country": "GB",
            }

    # Amounts, currency, dates, statuses and references stay.
    (order_before,), (order_after,) = before["orders"], after["orders"]
    assert order_before["personal_data_erased_at"] is None
    assert order_after["personal_data_erased_at"] is not None
    assert _without(after["orders"], "personal_data_erased_at") == _without(
        before["orders"], "personal_data_erased_at"
    )
    assert order_after["payment_ref"]
    assert order_after["total_minor"] > 0
    assert _without(after["payment_captures"], "card_last4") == _without(
        before["payment_captures"], "card_last4"
    )
    assert _without(after["order_lines"], "tracking_number", "tracking_url") == _without(
        before["order_lines"], "tracking_number", "tracking_url"
    )
    assert _without(after["refunds"], "note") == _without(before["refunds"], "note")
    assert _without(after["cancellation_requests"], "reason") == _without(
        before["cancellation_requests"], "reason"
    )
    assert _without(after["vouchers"], "code_hash", "last_four") == _without(
        before["vouchers"], "code_hash", "last_four"
    )
    assert _without(after["checkouts"], "delivery_address", "patient_first_name") == _without(
        before["checkouts"], "delivery_address", "patient_first_name"
    )
    assert len(after["outbox_events"]) == len(before["outbox_events"])

    # Exactly one audit entry, on the order's stream, by the system, naming fields only; the
    # chains and checkpoints still verify.
    (entry,) = _erasure_entries(database)
    assert (entry.stream_type, entry.stream_id) == ("order", old_id)
    assert (entry.actor_id, entry.actor_role) == ("product-shop", "service")
    assert entry.after is not None
    assert entry.after["erased"] == planned
    assert entry.after["retention_days"] == 2192
    assert not [s for s in secrets if s in json.dumps(entry.after)]
    assert after["audit_entries"] == [*before["audit_entries"], *after["audit_entries"][-1:]]
    assert after["audit_entries"][-1]["action"] == ERASED_ACTION
    context.audit_checkpoint.run_once()
    assert _audit_intact(context)

    # The order inside the retention period is untouched.
    assert _rows(database, young_id) == young_before

    # The order still reads, for staff and for its patient (the voucher code no longer shown).
    staff_read = read_order(client, world.admin_a, old_id)
    assert staff_read["total_minor"] == old["total_minor"]
    assert staff_read["payment"]["payment_ref"] == old["payment"]["payment_ref"]
    assert staff_read["payment"]["card_last4"] is None
    patient_read = read_order(client, world.patient_a2, old_id)
    shown = json.dumps(patient_read)
    assert not [s for s in secrets if s in shown]

    # A second run changes nothing.
    everything = _dump(database)
    again = context.retention.run_once()
    assert again.orders == []
    assert _dump(database) == everything
    assert len(_erasure_entries(database)) == 1


def test_retention_walks_due_orders_in_batches_and_carries_on_in_the_next_run(
    client: TestClient, context: AppContext, world: World, shop: Shop, database: Database
) -> None:
    orders = [_place(client, world.patient_a, [(shop.toothbrush, 1)]) for _ in range(3)]
    for age, order in zip((3000, 2500, 2200), orders, strict=True):
        _backdate(database, order["order_id"], timedelta(days=age))
    inside = _place(client, world.patient_a, [(shop.toothbrush, 1)])
    _backdate(database, inside["order_id"], timedelta(days=2190))  # just inside 6 years
    job = RetentionJob(
        database=database,
        retention=OrderRetention(
            audit=context.audit, clock=context.clock, period=timedelta(days=2192)
        ),
        clock=context.clock,
        batch_size=2,
        max_batches=1,
    )
    oldest_first = [o["order_id"] for o in orders]

    dry = job.run_once(dry_run=True)
    assert [str(e.order_id) for e in dry.orders] == oldest_first[:2]
    assert dry.more_due

    first = job.run_once()
    assert [str(e.order_id) for e in first.orders] == oldest_first[:2]
    assert first.more_due
    second = job.run_once()
    assert [str(e.order_id) for e in second.orders] == oldest_first[2:]
    assert not second.more_due
    assert job.run_once().orders == []

    assert sorted(e.stream_id for e in _erasure_entries(database)) == sorted(oldest_first)
    with database.reading() as session:
        kept = session.get(Order, uuid.UUID(inside["order_id"]))
        assert kept is not None
        assert kept.personal_data_erased_at is None
        held = session.get(Checkout, kept.checkout_id)
        assert held is not None
        assert held.delivery_address is not None
        assert held.delivery_address["recipient_name"] == ADDRESS["recipient_name"]
    assert _audit_intact(context)


@pytest.fixture
def configured(database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """The test's database as the configured one, and no other PRODUCT_SHOP_* variable."""
    for name in list(os.environ):
        if name.startswith("PRODUCT_SHOP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", database.url)
    return database


def test_the_retention_command_lists_then_erases_by_id_and_field_never_a_value(
    client: TestClient,
    context: AppContext,
    world: World,
    shop: Shop,
    configured: Database,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = _place(client, world.patient_a2, [(shop.toothbrush, 1)], delivery_address=OLD_ADDRESS)
    young = _place(client, world.patient_a, [(shop.toothbrush, 1)])
    _backdate(configured, old["order_id"])
    everything = _dump(configured)

    assert main(["retention", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out
    assert old["order_id"] in out
    assert "checkouts.delivery_address" in out
    assert young["order_id"] not in out
    assert not [value for value in OLD_ADDRESS.values() if value in out]
    assert main(["retention", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True
    assert [o["order_id"] for o in report["orders"]] == [old["order_id"]]
    assert _dump(configured) == everything

    assert main(["retention", "--json"]) == 0
    erased = json.loads(capsys.readouterr().out)
    assert [o["order_id"] for o in erased["orders"]] == [old["order_id"]]
    assert not [value for value in OLD_ADDRESS.values() if value in json.dumps(erased)]
    assert main(["retention"]) == 0
    assert "of 0 order(s)" in capsys.readouterr().out
    assert [e.stream_id for e in _erasure_entries(configured)] == [old["order_id"]]
