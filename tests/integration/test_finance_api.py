"""Finance's read API (spec §11.2, issue 19): every practice's orders and refunds in a date range
for the Finance module's service identity only, with the amounts and payment references
reconciliation needs, keyset pages and an NDJSON stream of the same rows, and no personal data."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.db.engine import Database
from product_shop.orders.tables import Order
from product_shop.refunds.tables import Refund
from tests.conftest import TokenFactory, World
from tests.integration.checkout_support import ADDRESS, Shop, key, paid_checkout
from tests.integration.fulfilment_support import place_order
from tests.integration.refund_support import refund

ORDERS, REFUNDS = "/v1/finance/orders", "/v1/finance/refunds"
NDJSON = {"Accept": "application/x-ndjson"}
NOTE = "Refund note: patient rang about the Harbour Road parcel"
DAY = date(2030, 3, 14)  # the day the tests move their rows to (far from today)


@dataclass
class Seeded:
    orders: list[dict[str, Any]]  # a1 (practice A), a2 (practice A), b (practice B)
    exception_ref: str  # the DNA transaction of a capture that made no order (practice A)


@pytest.fixture
def finance(make_token: TokenFactory) -> dict[str, str]:
    token = make_token(role="service", subject="finance", practice_id=None, name="Finance")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def seeded(
    client: TestClient,
    world: World,
    shop: Shop,
    offer: Callable[..., None],
    payments_url: str,
    with_mfa: Callable[..., dict[str, str]],
) -> Seeded:
    """Three orders in two practices, a refund with a note in each practice, and a refunded
    payment exception (a capture of the wrong amount, which made no order)."""
    offer(world.admin_b, shop.toothbrush, 7000)
    a1 = place_order(client, world.patient_a, [(shop.toothbrush, 1), (shop.kit, 1)])  # 30899
    a2 = place_order(client, world.patient_a2, [(shop.voucher, 1)])  # 6000
    b = place_order(client, world.patient_b, [(shop.toothbrush, 2)])  # 14000
    body = {"reason_code": "damaged_item", "amount_minor": 1000, "note": NOTE}
    assert refund(client, with_mfa(world.finance_a), a1["order_id"], body).status_code == 201
    whole = {"reason_code": "customer_request", "note": NOTE}
    assert refund(client, with_mfa(world.admin_b), b["order_id"], whole).status_code == 201

    checkout = paid_checkout(client, world.patient_a, [(shop.voucher, 1)])
    intent_id = checkout["payment"]["intent_id"]
    httpx.patch(
        f"{payments_url}/_simulator/intents/{intent_id}", json={"amount_minor": 100}
    ).raise_for_status()
    client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    (exception,) = client.get("/v1/payment-exceptions", headers=world.finance_a.headers).json()[
        "items"
    ]
    refunded = client.post(
        f"/v1/payment-exceptions/{exception['exception_id']}/refund",
        headers={**with_mfa(world.finance_a), **key()},
        json={"reason_code": "customer_request"},
    )
    assert refunded.status_code == 201, refunded.text
    return Seeded([a1, a2, b], exception["payment_ref"])


def _range(start: date, end: date | None = None, **params: Any) -> dict[str, Any]:
    return {"from": start.isoformat(), "to": (end or start).isoformat(), **params}


def _today() -> dict[str, Any]:
    return _range(datetime.now(UTC).date())


def _get(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def _walk(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> list[Any]:
    """Every page; a cursor that never ends (a row repeated forever) fails, not hangs."""
    items: list[Any] = []
    cursor = None
    for _ in range(50):
        page = _get(client, path, headers, **params, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        if (cursor := page["next_cursor"]) is None:
            return items
    raise AssertionError(f"still paging after 50 pages: {items}")


def _lines(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> list[Any]:
    response = client.get(path, headers={**headers, **NDJSON}, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def _move(database: Database, table: Any, ids: list[Any], at: datetime) -> None:
    """Set when rows happened (created_at / initiated_at), to test ranges and ties."""
    column, key_column = (
        (Order.created_at, Order.order_id)
        if table is Order
        else (Refund.initiated_at, Refund.refund_id)
    )
    with Session(database.engine) as session, session.begin():
        session.execute(update(table).where(key_column.in_(ids)).values({column.key: at}))


def _order_ids(seeded: Seeded) -> list[uuid.UUID]:
    return [uuid.UUID(o["order_id"]) for o in seeded.orders]


def _refund_ids(database: Database) -> list[uuid.UUID]:
    with Session(database.engine) as session:
        return list(session.scalars(select(Refund.refund_id)))


# ---- what Finance reads ----------------------------------------------------------------------


def test_orders_and_refunds_of_both_practices_carry_their_amounts_and_references(
    client: TestClient, world: World, seeded: Seeded, database: Database, finance: dict[str, str]
) -> None:
    # when Finance reads today's orders and refunds
    orders = {o["order_id"]: o for o in _get(client, ORDERS, finance, **_today())["items"]}
    refunds = _get(client, REFUNDS, finance, **_today())["items"]

    # then each order of both practices is there once, with its amounts and DNA reference
    a1, a2, b = seeded.orders
    assert set(orders) == {a1["order_id"], a2["order_id"], b["order_id"]}
    expected = {
        a1["order_id"]: (str(world.practice_a), 30899, 30899, 1000, "Refunded", "partial"),
        a2["order_id"]: (str(world.practice_a), 6000, 6000, 0, "Completed", "none"),  # a voucher
        b["order_id"]: (str(world.practice_b), 14000, 14000, 14000, "Refunded", "full"),
    }
    for order in (a1, a2, b):
        item = orders[order["order_id"]]
        assert (
            item["practice_id"],
            item["total_minor"],
            item["captured_minor"],
            item["refunded_minor"],
            item["status"],
            item["refund_status"],
        ) == expected[order["order_id"]]
        assert (item["currency"], item["redeemed_minor"], item["refund_pending_minor"]) == (
            "GBP",
            0,
            0,
        )
        assert item["payment_ref"] == order["payment"]["payment_ref"]
        assert item["payment_method"] == "card"
        assert (item["settlement_ref"], item["points_returned"]) == (None, False)
    assert list(orders.values()) == sorted(
        orders.values(), key=lambda o: (o["created_at"], o["order_id"])
    )

    # and each refund, with the original transaction, the provider's refund reference and
    # the staff member's id, as recorded
    with Session(database.engine) as session:
        rows = {str(r.refund_id): r for r in session.scalars(select(Refund))}
    assert {r["refund_id"] for r in refunds} == set(rows)
    assert len(refunds) == 3
    for item in refunds:
        row = rows[item["refund_id"]]
        assert row.provider_refund_ref is not None
        assert item["provider_refund_ref"] == row.provider_refund_ref
        assert (item["status"], item["currency"], item["payment_ref"]) == (
            "succeeded",
            "GBP",
            row.payment_ref,
        )
        assert item["initiated_by"] == row.initiated_by
        assert datetime.fromisoformat(item["completed_at"]) == row.completed_at
    by_subject = {r["order_id"] or r["payment_exception_id"]: r for r in refunds}
    first, whole = by_subject[a1["order_id"]], by_subject[b["order_id"]]
    assert (first["amount_minor"], first["kind"], first["reason_code"]) == (
        1000,
        "amount",
        "damaged_item",
    )
    assert first["payment_ref"] == a1["payment"]["payment_ref"]
    assert first["initiated_by"] == world.finance_a.actor.actor_id
    assert (whole["amount_minor"], whole["kind"], whole["practice_id"]) == (
        14000,
        "balance",
        str(world.practice_b),
    )
    assert whole["initiated_by"] == world.admin_b.actor.actor_id
    (exception,) = [r for r in refunds if r["order_id"] is None]
    assert exception["payment_exception_id"] is not None
    assert (exception["amount_minor"], exception["payment_ref"]) == (100, seeded.exception_ref)


def test_the_range_is_whole_utc_days_inclusive_and_the_practice_filter_narrows_it(
    client: TestClient, world: World, seeded: Seeded, database: Database, finance: dict[str, str]
) -> None:
    # given an order at the first instant of DAY, one at its last, and one just after it
    a1, a2, b = _order_ids(seeded)
    midnight = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    _move(database, Order, [a1], midnight)
    _move(database, Order, [a2], midnight + timedelta(days=1, microseconds=-1))
    _move(database, Order, [b], midnight + timedelta(days=1))
    # and the refunds: practice A's on DAY, practice B's the day after
    with Session(database.engine) as session:
        by_practice = {r.refund_id: r.practice_id for r in session.scalars(select(Refund))}
    _move(database, Refund, [r for r, p in by_practice.items() if p == world.practice_a], midnight)
    _move(
        database,
        Refund,
        [r for r, p in by_practice.items() if p == world.practice_b],
        midnight + timedelta(days=1),
    )

    def orders(**params: Any) -> set[uuid.UUID]:
        return {uuid.UUID(o["order_id"]) for o in _get(client, ORDERS, finance, **params)["items"]}

    def refunds(**params: Any) -> set[uuid.UUID]:
        items = _get(client, REFUNDS, finance, **params)["items"]
        return {uuid.UUID(r["refund_id"]) for r in items}

    # then a day holds its first and last instant, and not the next day's first
    assert orders(**_range(DAY)) == {a1, a2}
    assert orders(**_range(DAY + timedelta(days=1))) == {b}
    assert orders(**_range(DAY - timedelta(days=1))) == set()
    assert orders(**_range(DAY, DAY + timedelta(days=1))) == {a1, a2, b}
    assert orders(**_range(datetime.now(UTC).date())) == set()
    # and the practice filter keeps one practice's rows
    both = _range(DAY, DAY + timedelta(days=1))
    assert orders(**both, practice_id=str(world.practice_b)) == {b}
    assert orders(**both, practice_id=str(world.practice_a)) == {a1, a2}
    assert orders(**both, practice_id=str(uuid.uuid4())) == set()
    a_refunds = {r for r, p in by_practice.items() if p == world.practice_a}
    assert refunds(**_range(DAY)) == a_refunds
    assert len(a_refunds) == 2
    assert refunds(**_range(DAY + timedelta(days=1))) == set(by_practice) - a_refunds
    assert refunds(**both, practice_id=str(world.practice_a)) == a_refunds


@pytest.mark.parametrize("limit", [1, 2])
def test_paging_walks_every_row_exactly_once_in_time_then_id_order(
    client: TestClient, seeded: Seeded, database: Database, finance: dict[str, str], limit: int
) -> None:
    # given every order and refund at the same instant (the id alone orders them)
    at = datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=UTC)
    _move(database, Order, _order_ids(seeded), at)
    refund_ids = _refund_ids(database)
    _move(database, Refund, refund_ids[:2], at)
    _move(database, Refund, refund_ids[2:], at - timedelta(hours=1))

    # when Finance walks the pages
    orders = _walk(client, ORDERS, finance, **_range(DAY), limit=limit)
    refunds = _walk(client, REFUNDS, finance, **_range(DAY), limit=limit)

    # then every row came once, oldest first, then by id
    assert [uuid.UUID(o["order_id"]) for o in orders] == sorted(_order_ids(seeded))
    assert [uuid.UUID(r["refund_id"]) for r in refunds] == [
        *refund_ids[2:],
        *sorted(refund_ids[:2]),
    ]
    last = _get(client, ORDERS, finance, **_range(DAY), limit=3)
    assert last["next_cursor"] is None
    assert len(last["items"]) == 3


def test_the_ndjson_stream_gives_the_rows_of_the_pages_reading_a_page_at_a_time(
    client: TestClient,
    seeded: Seeded,
    database: Database,
    finance: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the stream reads 2 rows per database page
    monkeypatch.setattr("product_shop.web.finance.STREAM_PAGE", 2)

    # when Finance streams the range and walks the JSON pages
    streamed = _lines(client, ORDERS, finance, **_today())
    paged = _walk(client, ORDERS, finance, **_today(), limit=1)

    # then the same rows, the same fields, the same order
    assert streamed == paged
    assert len(streamed) == 3
    assert _lines(client, REFUNDS, finance, **_today()) == _walk(
        client, REFUNDS, finance, **_today(), limit=1
    )
    # and each database page of the stream was read (and audited) on its own: 2 then 1 ids
    with Session(database.engine) as session:
        reads = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == "finance.orders_read")
                .order_by(AuditEntry.position)
            )
        )
    streamed_reads = [len((entry.after or {})["order_ids"]) for entry in reads[:2]]
    assert streamed_reads == [2, 1]
    assert all(entry.actor_id == "finance" for entry in reads)
    assert {i for entry in reads for i in (entry.after or {})["order_ids"]} == {
        o["order_id"] for o in seeded.orders
    }
    # and a stream may resume from a page's cursor; an empty range is an empty body
    first = _get(client, ORDERS, finance, **_today(), limit=1)
    rest = _lines(client, ORDERS, finance, **_today(), cursor=first["next_cursor"])
    assert [first["items"][0], *rest] == paged
    assert _lines(client, ORDERS, finance, **_range(DAY)) == []


def test_no_personal_data_leaves_through_the_finance_api(
    client: TestClient, world: World, seeded: Seeded, finance: dict[str, str]
) -> None:
    bodies = [
        client.get(path, headers={**finance, **accept}, params=_today()).text
        for path in (ORDERS, REFUNDS)
        for accept in ({}, NDJSON)
    ]
    text = "\n".join(bodies)
    assert seeded.orders[0]["order_id"] in text  # the rows are there
    secrets = [
        ADDRESS["recipient_name"],
        ADDRESS["line1"],
        ADDRESS["postcode"],
        NOTE,
        "Harbour Road",
        "Fin Ance",
        "Bob Admin",
        world.patient_a.actor.actor_id,
        world.patient_a2.actor.actor_id,
        world.patient_b.actor.actor_id,
        "Oral-B",
    ]
    for secret in secrets:
        assert secret not in text, secret
    for name in ("patient_id", "note", "initiated_by_name", "delivery_address", "lines"):
        assert f'"{name}"' not in text, name


# ---- who may read, and bad requests -----------------------------------------------------------


def test_only_the_finance_service_may_read(
    client: TestClient, world: World, make_token: TokenFactory, database: Database
) -> None:
    audit = make_token(role="service", subject="audit-compliance", name="A&C")
    callers = {
        "practice admin": world.admin_a.headers,
        "practice finance staff": world.finance_a.headers,
        "patient": world.patient_a.headers,
        "hygiene subscriptions": world.service.headers,
        "audit & compliance": {"Authorization": f"Bearer {audit}"},
        "platform operator": world.operator.headers,
    }
    for who, headers in callers.items():
        for path in (ORDERS, REFUNDS):
            for accept in ({}, NDJSON):
                response = client.get(path, headers={**headers, **accept}, params=_today())
                assert response.status_code == 403, (who, path, response.text)
                assert response.json()["code"] == "forbidden"
    assert client.get(ORDERS, params=_today()).status_code == 401
    with Session(database.engine) as session:
        reads = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "finance.orders_read")
        )
        assert list(reads) == []


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        (_range(DAY, DAY - timedelta(days=1)), 422, "invalid_date_range"),
        (_range(date(2024, 1, 1), date(2025, 1, 1)), 422, "date_range_too_long"),
        ({"to": DAY.isoformat()}, 422, "validation_failed"),
        ({"from": DAY.isoformat()}, 422, "validation_failed"),
        ({"from": "14/03/2030", "to": DAY.isoformat()}, 422, "validation_failed"),
        (_range(DAY, limit=0), 422, "validation_failed"),
        (_range(DAY, limit=201), 422, "validation_failed"),
        (_range(DAY, practice_id="practice-a"), 422, "validation_failed"),
        (_range(DAY, cursor="not-a-cursor"), 400, "invalid_cursor"),
    ],
)
def test_bad_ranges_and_parameters_are_clear_problems(
    client: TestClient,
    finance: dict[str, str],
    database: Database,
    params: dict[str, Any],
    status: int,
    code: str,
) -> None:
    for path in (ORDERS, REFUNDS):
        for accept in ({}, NDJSON):
            response = client.get(path, headers={**finance, **accept}, params=params)
            assert response.status_code == status, (path, accept, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == code
    with Session(database.engine) as session:  # refused: nothing read, nothing audited
        reads = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "finance.orders_read")
        )
        assert list(reads) == []


def test_a_leap_year_is_one_range_and_a_day_more_is_refused(
    client: TestClient, finance: dict[str, str]
) -> None:
    leap = _range(date(2024, 1, 1), date(2024, 12, 31))  # 366 days
    assert _get(client, ORDERS, finance, **leap) == {"items": [], "next_cursor": None}
    assert _get(client, REFUNDS, finance, **leap) == {"items": [], "next_cursor": None}
    longer = client.get(
        ORDERS, headers=finance, params=_range(date(2023, 12, 31), date(2024, 12, 31))
    )
    assert longer.status_code == 422
    assert (longer.json()["code"], longer.json()["max_days"]) == ("date_range_too_long", 366)


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("table", "at", "row_id", "index"),
    [
        ("orders", "created_at", "order_id", "ix_orders_created_id"),
        ("refunds", "initiated_at", "refund_id", "ix_refunds_initiated_id"),
    ],
)
def test_a_page_across_every_practice_is_an_index_range_not_a_sort_of_the_range(
    database: Database, table: str, at: str, row_id: str, index: str
) -> None:
    """Migration 0024: Finance's cross-practice page (`orders/finance.py` `_rows`) reads its
    rows in (time, id) order from an index and stops after the page."""
    page = (
        f"SELECT {row_id} FROM {table}"
        f" WHERE {at} >= now() - interval '1 year' AND {at} < now()"
        f" ORDER BY {at}, {row_id} LIMIT 201"
    )
    with database.engine.begin() as connection:
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        connection.execute(text("SET LOCAL enable_bitmapscan = off"))
        plan = "\n".join(row[0] for row in connection.execute(text(f"EXPLAIN {page}")))
    assert index in plan, plan
    assert "Sort" not in plan, plan
