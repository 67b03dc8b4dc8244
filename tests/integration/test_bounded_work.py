"""Bounded work at a size that would hurt (issue 8, item 10): the catalogue list is paged, a
deprecation names its active orders in batches, and parked events are re-queued in batches.
Rows are written with Core bulk inserts; everything else goes through the API or the service."""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import jsonschema
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Table, event, insert, select, update
from sqlalchemy.orm import Session

from product_shop.audit.log import verify_stream
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.service import DEPRECATION_BATCH
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.checkout.tables import Checkout, PaymentCapture
from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock
from product_shop.db.base import Base
from product_shop.db.encrypted import EncryptedJSON, EncryptedText
from product_shop.db.engine import Database
from product_shop.events.relay import REDELIVER_BATCH, OutboxRelay
from product_shop.events.tables import EventDelivery, OutboxEvent
from product_shop.events.types import PRODUCT_DEPRECATED
from product_shop.orders.queries import ActiveOrderReferences
from product_shop.orders.tables import Order, OrderLine
from tests.conftest import World, as_owner

ROWS = 20_000
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CATEGORIES = ("Electric toothbrushes", "Interdental", "Vouchers", "Whitening", "Floss | tape")


def _bulk(database: Database, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert many rows fast: COPY on PostgreSQL (then ANALYZE, as a table that grew this big
    would have been by now), an executemany INSERT on SQLite."""
    if not rows:
        return
    table = cast(Table, model.__table__)
    # As the owner: COPY is refused under row-level security, and ANALYZE is the owner's.
    with as_owner(database) as connection:
        if database.dialect != "postgresql":
            connection.execute(insert(table), rows)
            return
        columns = list(rows[0])
        json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
        # COPY bypasses the column types: encrypt what the app would (db/encrypted.py).
        encrypted = {
            c.name: c.type
            for c in table.columns
            if isinstance(c.type, (EncryptedJSON, EncryptedText))
        }
        dialect = connection.dialect
        if encrypted:
            rows = [
                {
                    k: encrypted[k].process_bind_param(v, dialect) if k in encrypted else v
                    for k, v in row.items()
                }
                for row in rows
            ]
        raw = connection.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            names = ", ".join(f'"{name}"' for name in columns)
            with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(
                        [
                            Jsonb(row[name])
                            if name in json_columns and row[name] is not None
                            else row[name]
                            for name in columns
                        ]
                    )
            cursor.execute(f'ANALYZE "{table.name}"')


def _product_row(product_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "product_id": product_id,
        "name": "Product",
        "description": "",
        "imagery_ref": None,
        "category": CATEGORIES[0],
        "fulfilment_type": "Drop-Ship",
        "cost_price_minor": 100,
        "currency": "GBP",
        "availability_status": "available",
        "version": 1,
        "created_at": NOW,
        "created_by": "bulk",
        "updated_at": NOW,
        "updated_by": "bulk",
    }
    row.update(fields)
    return row


@pytest.fixture
def timed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print each 20,000-row test's wall time (pytest -s, or --durations)."""
    started = time.perf_counter()
    yield
    print(f"\n{request.node.nodeid}: {time.perf_counter() - started:.2f} s")


# ---- 10(a): the catalogue list is keyset-paged ------------------------------------------------


@pytest.fixture
def big_catalogue(database: Database, world: World) -> dict[str, Any]:
    """20,000 products in five categories; names repeat (ties are broken by product_id) and some
    carry a '|' or non-ASCII letters. Practice A offers 3 in 4 of them; of those it hides every
    7th, and every 11th product is deprecated: what a patient must not see is spread through the
    display order, so a page filtered after the query would come back short."""
    products, settings = [], []
    for n in range(ROWS):
        product_id = uuid.uuid4()
        name = f"Brush {n % 6000:05d}" + (" | soft" if n % 13 == 0 else "") + ("é" * (n % 3 == 0))
        products.append(
            _product_row(
                product_id,
                name=name,
                category=CATEGORIES[n % len(CATEGORIES)],
                availability_status="deprecated" if n % 11 == 0 else "available",
            )
        )
        if n % 4 != 3:
            settings.append(
                {
                    "practice_id": world.practice_a,
                    "product_id": product_id,
                    "retail_price_minor": 500 + n,
                    "practice_note": None,
                    "visible": n % 7 != 0,
                    "in_clinic_stock_available": False,
                    "version": 1,
                    "updated_at": NOW,
                    "updated_by": "bulk",
                }
            )
    _bulk(database, Product, products)
    _bulk(database, PracticeProductSetting, settings)
    patient_view = {
        str(p["product_id"])
        for n, p in enumerate(products)
        if n % 4 != 3 and n % 7 != 0 and n % 11 != 0
    }
    return {"all": {str(p["product_id"]) for p in products}, "patient": patient_view}


def _display_order(database: Database, ids: set[str]) -> list[str]:
    """The database's own display order (its collation) of the given products."""
    with database.engine.connect() as connection:
        rows = connection.execute(
            select(Product.product_id).order_by(Product.category, Product.name, Product.product_id)
        )
        return [str(product_id) for (product_id,) in rows if str(product_id) in ids]


def _walk(
    client: TestClient, headers: dict[str, str], limit: int, **params: Any
) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/catalogue", headers=headers, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= ROWS // limit + 1, "the cursor does not advance"


def test_a_patient_pages_through_20000_products_in_full_pages_each_seen_once_in_order(
    client: TestClient,
    world: World,
    database: Database,
    big_catalogue: dict[str, Any],
    timed: None,
) -> None:
    pages = _walk(client, world.patient_a.headers, 200)

    seen = [item["product_id"] for page in pages for item in page]
    assert seen == _display_order(database, big_catalogue["patient"])  # each once, in order
    assert len(pages) == math.ceil(len(big_catalogue["patient"]) / 200)
    assert all(len(page) == 200 for page in pages[:-1])  # never short while more follow
    assert all("cost_price_minor" not in item for page in pages for item in page)


def test_staff_get_50_by_default_and_a_category_filter_pages_in_sql_before_the_limit(
    client: TestClient,
    world: World,
    database: Database,
    big_catalogue: dict[str, Any],
    timed: None,
) -> None:
    first = client.get("/v1/catalogue", headers=world.admin_a.headers).json()
    assert len(first["items"]) == 50
    assert first["next_cursor"] is not None
    assert [i["product_id"] for i in first["items"]] == _display_order(
        database, big_catalogue["all"]
    )[:50]

    pages = _walk(client, world.admin_a.headers, 200, category="Floss | tape")

    seen = [item["product_id"] for page in pages for item in page]
    assert len(seen) == ROWS // len(CATEGORIES)
    assert all(item["category"] == "Floss | tape" for page in pages for item in page)
    assert all(len(page) == 200 for page in pages[:-1])
    assert seen == _display_order(database, set(seen))


def test_a_small_catalogue_is_one_page_with_no_next_cursor(
    client: TestClient, world: World, shop: Any
) -> None:
    body = client.get("/v1/catalogue", headers=world.patient_a.headers).json()

    assert len(body["items"]) == 3
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(json.dumps(["c", "n", "not-a-uuid"]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["c", "n"]).encode()).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_an_invalid_catalogue_cursor_is_a_400_problem(
    client: TestClient, world: World, cursor: str
) -> None:
    response = client.get(
        "/v1/catalogue", headers=world.patient_a.headers, params={"cursor": cursor}
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize("limit", [0, 201])
def test_a_catalogue_page_size_outside_1_to_200_is_refused(
    client: TestClient, world: World, limit: int
) -> None:
    response = client.get("/v1/catalogue", headers=world.patient_a.headers, params={"limit": limit})

    assert response.status_code == 422


# ---- 10(b): a deprecation names its active orders in batches ---------------------------------


def _orders_containing(
    database: Database, product_id: uuid.UUID, other_id: uuid.UUID, count: int, world: World
) -> list[uuid.UUID]:
    """`count` active orders containing the product (every 10th with it on two lines), plus
    completed orders with it and active orders without it, which a deprecation must not name."""
    checkouts, captures, orders, lines = [], [], [], []
    active: list[uuid.UUID] = []
    for n in range(count + 600):
        checkout_id, order_id, patient_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        completed, without = count <= n < count + 300, n >= count + 300
        ref = f"DNA-BULK-{n}"
        checkouts.append(
            {
                "checkout_id": checkout_id,
                "patient_id": patient_id,
                "practice_id": world.practice_a,
                "status": "completed",
                "currency": "GBP",
                "total_minor": 1000,
                "amount_due_minor": 1000,
                "delivery_address": None,
                "payment_intent_id": f"pi_bulk_{n}",
                "payment_url": None,
                "payment_attempts": 1,
                "failure_code": None,
                "failure_reason": None,
                "redemption_ref": None,
                "redemption_points": None,
                "redemption_amount_minor": 0,
                "order_id": order_id,
                "created_at": NOW,
                "updated_at": NOW,
                "expires_at": NOW + timedelta(days=1),
                "version": 1,
            }
        )
        captures.append(
            {
                "transaction_ref": ref,
                "intent_id": f"pi_bulk_{n}",
                "checkout_id": checkout_id,
                "amount_minor": 1000,
                "currency": "GBP",
                "method": "card",
                "card_scheme": "visa",
                "card_last4": "4242",
                "confirmed_at": NOW,
            }
        )
        status = "Completed" if completed else "Fulfilment-In-Progress"
        orders.append(
            {
                "order_id": order_id,
                "checkout_id": checkout_id,
                "patient_id": patient_id,
                "practice_id": world.practice_a,
                "status": status,
                "fulfilment_status": status,
                "refund_status": "none",
                "currency": "GBP",
                "total_minor": 1000,
                "captured_minor": 1000,
                "refunded_minor": 0,
                "payment_ref": ref,
                "payment_method": "card",
                "redemption_ref": None,
                "pms_invoice_ref": None,
                "created_by": "bulk",
                "created_at": NOW,
                "updated_at": NOW,
                "version": 1,
            }
        )
        line_products = [other_id] if without else [product_id]
        if n % 10 == 0:
            line_products.append(other_id if without else product_id)
        for line_no, line_product in enumerate(line_products, start=1):
            lines.append(
                {
                    "line_item_id": uuid.uuid4(),
                    "order_id": order_id,
                    "line_no": line_no,
                    "product_id": line_product,
                    "product_name": "Bulk",
                    "quantity": 1,
                    "unit_price_minor": 1000,
                    "fulfilment_type": "Drop-Ship",
                    "fulfilment_status": "delivered" if completed else "sent_to_supplier",
                    "fulfilment_ref": None,
                    "carrier": None,
                    "tracking_number": None,
                    "tracking_url": None,
                    "updated_at": NOW,
                }
            )
        if not (completed or without):
            active.append(order_id)
    for table, rows in (
        (Checkout, checkouts),
        (PaymentCapture, captures),
        (Order, orders),
        (OrderLine, lines),
    ):
        _bulk(database, table, rows)
    return active


def test_deprecating_a_product_in_20000_active_orders_names_each_once_in_batches_of_500(
    client: TestClient,
    world: World,
    database: Database,
    timed: None,
) -> None:
    product_id, other_id = uuid.uuid4(), uuid.uuid4()
    _bulk(
        database,
        Product,
        [_product_row(product_id, name="Retiring"), _product_row(other_id, name="Staying")],
    )
    active = _orders_containing(database, product_id, other_id, ROWS, world)

    response = client.patch(
        f"/v1/products/{product_id}",
        headers=world.catalogue_admin.headers,
        json={"availability_status": "deprecated"},
    )
    assert response.status_code == 200, response.text

    batches = math.ceil(ROWS / DEPRECATION_BATCH)
    with Session(database.engine) as session:
        events = list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.event_type == PRODUCT_DEPRECATED.name)
                .order_by(OutboxEvent.position)
            )
        )
        entries = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == "product.deprecated")
                .order_by(AuditEntry.stream_seq)
            )
        )
        stream = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.stream_type == "product", AuditEntry.stream_id == str(product_id))
                .order_by(AuditEntry.stream_seq)
            )
        )
        assert verify_stream(stream)
    assert (len(events), len(entries)) == (batches, batches)
    schema = PRODUCT_DEPRECATED.schema()
    for number, (event_row, entry) in enumerate(zip(events, entries, strict=True), start=1):
        data = event_row.data
        jsonschema.validate(data, schema, format_checker=jsonschema.FormatChecker())
        assert event_row.aggregate_id == str(product_id)
        assert (data["batch"], data["last_batch"]) == (number, number == batches)
        assert len(data["affected"]["active_order_ids"]) <= DEPRECATION_BATCH
        assert entry.after is not None
        assert entry.after["affected"] == data["affected"]
        assert entry.after["batch"] == number
    assert (events[-1].data["batch_count"], events[-1].data["active_order_count"]) == (
        batches,
        ROWS,
    )
    named = [order_id for e in events for order_id in e.data["affected"]["active_order_ids"]]
    assert Counter(named) == Counter(str(order_id) for order_id in active)  # each exactly once
    audited = [
        order_id for e in entries if e.after for order_id in e.after["affected"]["active_order_ids"]
    ]
    assert Counter(audited) == Counter(named)


def test_a_batch_of_active_orders_is_read_a_batch_at_a_time(
    context: AppContext, database: Database, world: World
) -> None:
    """The reference reader's batches are bounded, ascending, and read one at a time."""
    product_id, other_id = uuid.uuid4(), uuid.uuid4()
    _bulk(database, Product, [_product_row(product_id), _product_row(other_id)])
    active = _orders_containing(database, product_id, other_id, 1201, world)

    with database.unit_of_work() as session:
        batches = ActiveOrderReferences().active_order_batches(session, product_id, batch_size=500)
        first = next(batches)
        rest = list(batches)

    assert [len(b) for b in [first, *rest]] == [500, 500, 201]
    flat = [order_id for b in [first, *rest] for order_id in b]
    assert flat == sorted(active)


# ---- 10(c): parked events are re-queued in bounded batches ------------------------------------


def _event_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "position": n + 1,
            "event_id": uuid.uuid4(),
            "event_type": "com.primoro.productshop.test.v1",
            "source": "/primoro/product-shop",
            "subject": f"agg-{n % 97}",
            "aggregate_type": "test",
            "aggregate_id": f"agg-{n % 97}",
            "occurred_at": NOW,
            "data": {"n": n},
            "status": "routed",
            "attempts": 0,
            "next_attempt_at": NOW,
            "delivered_at": NOW,
            "last_error": None,
        }
        for n in range(count)
    ]


def _delivery_rows(statuses: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "event_position": n + 1,
            "destination": "finance",
            "event_type": "com.primoro.productshop.test.v1",
            "aggregate_type": "test",
            "aggregate_id": f"agg-{n % 97}",
            "aggregate_key": f"finance|test|agg-{n % 97}",
            "status": status,
            "attempts": 20 if status == "parked" else 1,
            "claims": 1,
            "queued_at": NOW,
            "next_attempt_at": NOW,
            "delivered_at": NOW if status == "delivered" else None,
            "parked_at": NOW if status == "parked" else None,
            "last_error": "gone" if status == "parked" else None,
        }
        for n, status in enumerate(statuses)
    ]


def test_20000_parked_deliveries_are_requeued_in_bounded_batches(
    database: Database, timed: None
) -> None:
    # Parked deliveries, with a delivered and a pending one every 20 positions.
    statuses: list[str] = []
    for n in range(ROWS):
        statuses.append("parked")
        if n % 20 == 19:
            statuses.extend(["delivered", "pending"])
    _bulk(database, OutboxEvent, _event_rows(len(statuses)))
    _bulk(database, EventDelivery, _delivery_rows(statuses))
    updates: list[int] = []

    def count_update(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE EVENT_DELIVERIES"):
            updates.append(cursor.rowcount)

    clock = FrozenClock(NOW + timedelta(days=1))
    relay = OutboxRelay(database, {}, clock)
    event.listen(database.engine, "after_cursor_execute", count_update)
    try:
        queued = relay.redeliver()
    finally:
        event.remove(database.engine, "after_cursor_execute", count_update)

    assert queued == ROWS
    assert updates == [REDELIVER_BATCH] * (ROWS // REDELIVER_BATCH)  # one bounded UPDATE a batch
    with database.engine.connect() as connection:
        by_status = Counter(connection.execute(select(EventDelivery.status)).scalars())
        requeued_at = set(
            connection.execute(
                select(EventDelivery.next_attempt_at).where(EventDelivery.attempts == 20)
            ).scalars()
        )
    assert by_status == Counter({"pending": ROWS + 1000, "delivered": 1000})
    assert requeued_at == {clock.now()}
    assert relay.redeliver() == 0


def test_redelivering_parked_deliveries_counts_a_short_last_batch(database: Database) -> None:
    _bulk(database, OutboxEvent, _event_rows(10))
    _bulk(database, EventDelivery, _delivery_rows(["parked"] * 7 + ["pending"] * 3))
    relay = OutboxRelay(database, {}, FrozenClock(NOW))

    assert relay.redeliver(batch=3) == 7
    with database.engine.connect() as connection:
        connection.execute(update(EventDelivery).values(status="parked", parked_at=NOW))
        connection.commit()
    assert relay.redeliver(batch=5) == 10


# ---- issue 13: a claim reads what is due, not the backlog waiting to retry -------------------


@pytest.mark.postgres_only
def test_a_claim_reads_the_due_deliveries_not_a_20000_row_backlog_waiting_to_retry(
    database: Database, timed: None
) -> None:
    """A receiver down for a while leaves each order's first event waiting to retry and its
    later ones behind it; new orders' events are due at once. The claim reads those through
    `ix_event_deliveries_next` and stops: what it reads does not grow with the backlog."""
    from product_shop.events.statements import due_deliveries

    later = NOW + timedelta(hours=1)
    statuses = ["pending"] * (ROWS + 50)
    _bulk(database, OutboxEvent, _event_rows(len(statuses)))
    rows = _delivery_rows(statuses)
    for n, row in enumerate(rows):
        row["aggregate_id"] = f"agg-{n // 2}"  # each order: a first event and one behind it
        row["aggregate_key"] = f"finance|test|agg-{n // 2}"
        row["next_attempt_at"] = later if n < ROWS else NOW
        row["attempts"] = 3 if n < ROWS else 0
    _bulk(database, EventDelivery, rows)

    claim = due_deliveries(50)
    compiled = claim.compile(database.engine, compile_kwargs={"literal_binds": False})
    params = {"destination": "finance", "now": NOW}
    with database.engine.begin() as connection:
        plan = "\n".join(
            line
            for (line,) in connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, TIMING OFF) {compiled}",
                compiled.construct_params(params),
            )
        )
        due = connection.execute(claim, params).scalars().all()

    assert len(due) == 25  # the 50 new deliveries: 25 orders' first events
    scanned = [
        int(line.split("rows=")[-1].split()[0])
        for line in plan.splitlines()
        if "ix_event_deliveries_next" in line
    ]
    assert scanned, plan
    assert max(scanned) <= 50, plan  # the due rows only, not the 20,000 waiting


@pytest.mark.postgres_only
def test_a_claim_walks_a_20000_row_due_backlog_in_order_and_stops_after_one_batch(
    database: Database, timed: None
) -> None:
    """After an outage, or with the relay behind the order rate, every queue's head is due at
    once: here 5,000 of Finance's, beside 15,000 of another destination's. The claim, planned
    as the relay plans it (`CLAIM_PLANNING`), reads the first batch in
    `ix_event_deliveries_next`'s order and stops; it neither reads nor sorts the whole backlog
    (it did: guessing that 0.5% of the due pass the per-queue check, fewer than a batch, the
    planner read them all and sorted them, 14 ms a claim at 3,600 due, growing with it)."""
    from product_shop.events.statements import CLAIM_PLANNING, due_deliveries

    _bulk(database, OutboxEvent, _event_rows(ROWS))
    rows = _delivery_rows(["pending"] * ROWS)
    for n, row in enumerate(rows):  # every delivery the head of its own queue, all due
        destination = "finance" if n % 4 == 0 else "communication_hub"
        row["destination"] = destination
        row["aggregate_id"] = f"agg-{n}"
        row["aggregate_key"] = f"{destination}|test|agg-{n}"
        row["next_attempt_at"] = NOW - timedelta(seconds=n % 7)
    _bulk(database, EventDelivery, rows)

    claim = due_deliveries(50)
    compiled = claim.compile(database.engine, compile_kwargs={"literal_binds": False})
    params = {"destination": "finance", "now": NOW}
    with database.engine.begin() as connection:
        connection.execute(CLAIM_PLANNING)
        plan = "\n".join(
            line
            for (line,) in connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, TIMING OFF) {compiled}",
                compiled.construct_params(params),
            )
        )
        due = connection.execute(claim, params).scalars().all()

    assert len(due) == 50
    with database.engine.connect() as connection:
        expected = (
            connection.execute(
                select(EventDelivery.delivery_id)
                .where(EventDelivery.destination == "finance")
                .order_by(EventDelivery.next_attempt_at, EventDelivery.event_position)
                .limit(50)
            )
            .scalars()
            .all()
        )
    assert list(due) == list(expected)  # longest due first, then outbox order
    scanned = [
        int(line.split("rows=")[-1].split()[0])
        for line in plan.splitlines()
        if "ix_event_deliveries_next" in line
    ]
    assert scanned, plan
    assert max(scanned) <= 50, plan  # one batch read, not the 5,000 due
    assert "Sort" not in plan, plan
