"""The practice dashboard (spec §2.1, §10.4, §15.4, §9): orders, refunds, recommendations and
checkouts made through the API, then moved into June-August 2026 (the precondition); the
overview must EQUAL figures computed here from the raw rows, and a few pinned by hand."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from product_shop.access.isolation import checks_disabled
from product_shop.checkout.tables import Checkout, CheckoutLine
from product_shop.db.engine import Database
from product_shop.orders.tables import Order, OrderLine
from product_shop.recommendations.tables import Recommendation
from product_shop.refunds.tables import Refund
from tests.conftest import Person, World, as_owner
from tests.integration.checkout_support import ADDRESS, Shop, key, pay
from tests.integration.conftest import count_rows
from tests.integration.refund_support import refund

RANGE = {"from": "2026-06-01", "to": "2026-08-31"}
MONTHS = ("2026-06-01", "2026-07-01", "2026-08-01")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _recommend(client: TestClient, clinician: Person, patient: Person, product: uuid.UUID) -> str:
    response = client.post(
        f"/v1/patients/{patient.actor.actor_id}/recommendations",
        headers={**clinician.headers, **key()},
        json={"product_ids": [str(product)]},
    )
    assert response.status_code == 201, response.text
    recommendation_id: str = response.json()["items"][0]["recommendation_id"]
    return recommendation_id


def _checkout(
    client: TestClient, patient: Person, product: uuid.UUID, quantity: int, rec: str | None = None
) -> dict[str, Any]:
    line: dict[str, Any] = {"product_id": str(product), "quantity": quantity}
    if rec:
        line["recommendation_id"] = rec
    created = client.post(
        "/v1/checkouts",
        headers={**patient.headers, **key()},
        json={"lines": [line], "delivery_address": ADDRESS},
    )
    assert created.status_code == 201, created.text
    document: dict[str, Any] = created.json()
    return document


def _order(
    client: TestClient, patient: Person, product: uuid.UUID, quantity: int, rec: str | None = None
) -> str:
    checkout = _checkout(client, patient, product, quantity, rec)
    assert pay(checkout).status_code == 200
    done = client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=patient.headers)
    assert done.status_code == 200, done.text
    order_id: str = done.json()["order_id"]
    return order_id


def _refund(client: TestClient, headers: dict[str, str], order_id: str, **body: Any) -> str:
    response = refund(client, headers, order_id, body)
    assert (response.status_code, response.json().get("status")) == (201, "succeeded"), (
        response.text
    )
    refund_id: str = response.json()["refund_id"]
    return refund_id


def seed(request: pytest.FixtureRequest) -> None:
    """Practice A: six orders (five in June-August, one on 1 September), three refunds with two
    reason codes and one declined, three recommendations (two bought), one checkout left unpaid,
    one line in exception. Practice B: an order, its refund and a recommendation in July."""
    fixture = request.getfixturevalue
    client: TestClient = fixture("client")
    database: Database = fixture("database")
    world: World = fixture("world")
    shop: Shop = fixture("shop")
    with_mfa: Callable[..., dict[str, str]] = fixture("with_mfa")
    clinician_a = world.clinician_a
    recs = [
        _recommend(client, clinician_a, world.patient_a, shop.toothbrush),
        _recommend(client, clinician_a, world.patient_a2, shop.voucher),
        _recommend(client, clinician_a, world.patient_a, shop.kit),
    ]
    orders = [
        _order(client, world.patient_a, shop.toothbrush, 1, recs[0]),  # 5999
        _order(client, world.patient_a, shop.kit, 1),  # 24900
        _order(client, world.patient_a2, shop.voucher, 2, recs[1]),  # 12000
        _order(client, world.patient_a, shop.toothbrush, 2),  # 11998
        _order(client, world.patient_a2, shop.toothbrush, 1),  # 5999, last second of August
        _order(client, world.patient_a, shop.toothbrush, 1),  # 1 September: outside
    ]
    unpaid = _checkout(client, world.patient_a, shop.kit, 1)
    money = with_mfa(world.finance_a)
    refunds = [
        _refund(client, money, orders[1], amount_minor=1000, reason_code="customer_request"),
        _refund(client, money, orders[2], reason_code="damaged_item"),
        _refund(client, money, orders[3], amount_minor=500, reason_code="customer_request"),
    ]
    # Integrated Payments declines one refund: a `failed` refund, never counted.
    httpx.post(
        f"{fixture('payments_url')}/_simulator/faults",
        json={"operation": "refund", "mode": "error", "status": 400, "times": 1},
    ).raise_for_status()
    declined = refund(client, money, orders[0], {"reason_code": "damaged_item"})
    assert declined.status_code >= 400, declined.text
    fixture("offer")(world.admin_b, shop.toothbrush, 7000)
    clinician_b = fixture("person")("clinician", world.practice_b)
    rec_b = _recommend(client, clinician_b, world.patient_b, shop.toothbrush)
    order_b = _order(client, world.patient_b, shop.toothbrush, 3)
    refund_b = _refund(
        client, with_mfa(world.admin_b), order_b, amount_minor=700, reason_code="damaged_item"
    )

    # 3 Aug: 11998; 31 Aug 23:59:59 is in, 1 Sep 00:00 out.
    order_times = ["2026-06-05 10:00", "2026-06-20 12:00", "2026-07-10 09:30", "2026-08-03 16:00"]
    order_times += ["2026-08-31 23:59:59", "2026-09-01 00:00:00"]
    with as_owner(database) as connection:
        for order_id, when in [*zip(orders, order_times, strict=True), (order_b, "2026-07-15")]:
            oid = uuid.UUID(order_id)
            connection.execute(
                update(Order).where(Order.order_id == oid).values(created_at=at(when))
            )
            connection.execute(
                update(Checkout).where(Checkout.order_id == oid).values(created_at=at(when))
            )
        connection.execute(
            update(Checkout)
            .where(Checkout.checkout_id == uuid.UUID(unpaid["id"]))
            .values(created_at=at("2026-08-15 08:00:00"))
        )
        failed = connection.scalar(
            select(Refund.refund_id).where(
                Refund.order_id == uuid.UUID(orders[0]), Refund.status == "failed"
            )
        )
        assert failed is not None
        for refund_id, when in zip(
            [*refunds, refund_b, str(failed)],
            [
                "2026-06-25 10:00:00",
                "2026-07-12 10:00:00",
                "2026-08-10 10:00:00",
                "2026-07-16",
                "2026-06-10",
            ],
            strict=True,
        ):
            connection.execute(
                update(Refund)
                .where(Refund.refund_id == uuid.UUID(refund_id))
                .values(initiated_at=at(when))
            )
        for rec_id, when in zip(
            [*recs, rec_b], ["2026-06-01", "2026-07-01", "2026-08-01", "2026-07-02"], strict=True
        ):
            connection.execute(
                update(Recommendation)
                .where(Recommendation.recommendation_id == uuid.UUID(rec_id))
                .values(created_at=at(when))
            )
        # One line of the 3 August order in exception (the supplier lost it).
        connection.execute(
            update(OrderLine)
            .where(OrderLine.order_id == uuid.UUID(orders[3]))
            .values(
                fulfilment_status="exception",
                exception_reason="lost",
                exception_since=at("2026-08-05"),
            )
        )


def expected_from_rows(database: Database, practice_id: uuid.UUID) -> dict[str, Any]:
    """The figures for RANGE by month, computed here from the raw rows in Python."""
    low, high = at("2026-06-01"), at("2026-09-01")
    with as_owner(database) as connection:
        orders = connection.execute(
            select(Order.order_id, Order.created_at, Order.total_minor).where(
                Order.practice_id == practice_id
            )
        ).all()
        refunds = connection.execute(
            select(Refund.initiated_at, Refund.amount_minor, Refund.reason_code).where(
                Refund.practice_id == practice_id,
                Refund.status == "succeeded",
                Refund.order_id.is_not(None),
            )
        ).all()
        recs = connection.execute(
            select(Recommendation.recommendation_id, Recommendation.created_at).where(
                Recommendation.practice_id == practice_id
            )
        ).all()
        bought = set(
            connection.scalars(
                select(CheckoutLine.recommendation_id)
                .join(Checkout, Checkout.checkout_id == CheckoutLine.checkout_id)
                .where(Checkout.order_id.is_not(None))
            )
        )
        checkouts = connection.execute(
            select(
                Checkout.created_at, Checkout.status, Checkout.payment_attempts, Checkout.order_id
            ).where(Checkout.practice_id == practice_id)
        ).all()
        lines = connection.execute(
            select(OrderLine.order_id, OrderLine.fulfilment_status, OrderLine.exception_resolution)
        ).all()

    def inside(moment: datetime) -> bool:
        return low <= moment.replace(tzinfo=UTC) < high

    gross: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for row in orders:
        if inside(row.created_at):
            gross[row.created_at.strftime("%Y-%m-01")] += row.total_minor
            count[row.created_at.strftime("%Y-%m-01")] += 1
    back: dict[str, int] = defaultdict(int)
    reasons: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in refunds:
        if inside(row.initiated_at):
            back[row.initiated_at.strftime("%Y-%m-01")] += row.amount_minor
            reasons[row.reason_code][0] += 1
            reasons[row.reason_code][1] += row.amount_minor
    made = [r.recommendation_id for r in recs if inside(r.created_at)]
    started = [c for c in checkouts if inside(c.created_at)]
    in_range = {o.order_id for o in orders if inside(o.created_at)}
    mine = {o.order_id for o in orders}
    return {
        "periods": [
            {
                "period_start": m,
                "gross_minor": gross[m],
                "refunded_minor": back[m],
                "net_minor": gross[m] - back[m],
                "orders": count[m],
            }
            for m in MONTHS
        ],
        "by_reason": [
            {"reason_code": code, "count": n, "amount_minor": amount}
            for code, (n, amount) in sorted(reasons.items())
        ],
        "conversion": (len(made), sum(1 for r in made if r in bought)),
        "funnel": (
            len(started),
            sum(
                1
                for c in started
                if c.status in ("awaiting_payment", "completed") or c.payment_attempts > 0
            ),
            sum(1 for c in started if c.order_id is not None),
        ),
        "lines": Counter(line.fulfilment_status for line in lines if line.order_id in in_range),
        "open_exceptions": sum(
            1 for line in lines if line.order_id in mine and line[1:] == ("exception", None)
        ),
    }


def overview(client: TestClient, who: Person, **params: str) -> Any:
    return client.get("/v1/dashboards/overview", params=params, headers=who.headers)


@pytest.fixture
def seeded(request: pytest.FixtureRequest) -> None:
    seed(request)


def test_the_overview_equals_the_figures_computed_from_the_rows(
    client: TestClient, database: Database, world: World, seeded: None
) -> None:
    response = overview(client, world.admin_a, **RANGE, granularity="month")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = expected_from_rows(database, world.practice_a)

    revenue = body["revenue"]
    assert revenue["periods"] == expected["periods"]
    # Pinned by hand too: June 5999 + 24900, July 12000, August 11998 + 5999 (the last second
    # of August is in, 1 September is out); refunds 1000, 12000 (the whole voucher order), 500.
    assert [p["gross_minor"] for p in revenue["periods"]] == [30899, 12000, 17997]
    assert [p["refunded_minor"] for p in revenue["periods"]] == [1000, 12000, 500]
    assert (revenue["gross_minor"], revenue["refunded_minor"], revenue["net_minor"]) == (
        60896,
        13500,
        47396,
    )
    assert body["orders"] == {"count": 5, "average_order_value_minor": 12179}  # 12179.2
    assert body["currency"] == "GBP"
    assert (body["from"], body["to"], body["granularity"]) == ("2026-06-01", "2026-08-31", "month")

    assert body["refunds"]["by_reason"] == expected["by_reason"]
    assert body["refunds"]["by_reason"] == [
        {"reason_code": "customer_request", "count": 2, "amount_minor": 1500},
        {"reason_code": "damaged_item", "count": 1, "amount_minor": 12000},
    ]
    assert (body["refunds"]["count"], body["refunds"]["amount_minor"]) == (3, 13500)

    conversion = body["conversion"]
    assert (conversion["recommendations"], conversion["converted"]) == expected["conversion"]
    assert (conversion["recommendations"], conversion["converted"]) == (3, 2)
    assert conversion["rate"] == pytest.approx(2 / 3)
    # The same figure as the conversion endpoint over the same instants.
    same = client.get(
        "/v1/recommendations/conversion",
        params={"from": "2026-06-01T00:00:00Z", "to": "2026-09-01T00:00:00Z"},
        headers=world.admin_a.headers,
    ).json()
    assert (same["recommendations"], same["converted"], same["rate"]) == (
        conversion["recommendations"],
        conversion["converted"],
        conversion["rate"],
    )

    funnel = body["funnel"]
    assert (funnel["checkouts_started"], funnel["reached_payment"], funnel["paid"]) == expected[
        "funnel"
    ]
    assert expected["funnel"] == (6, 6, 5)  # five orders and the unpaid August checkout
    assert (funnel["dropped_before_payment"], funnel["dropped_at_payment"]) == (0, 1)

    lines = {item["status"]: item["count"] for item in body["fulfilment"]["lines_by_status"]}
    assert {k: v for k, v in lines.items() if v} == dict(expected["lines"])
    assert lines["exception"] == 1
    assert body["fulfilment"]["open_exceptions"] == expected["open_exceptions"] == 1


def test_weeks_start_on_monday_and_days_include_empty_ones(
    client: TestClient, database: Database, world: World, seeded: None
) -> None:
    weekly = overview(
        client, world.admin_a, **{"from": "2026-06-03", "to": "2026-06-21", "granularity": "week"}
    ).json()
    # 3 June 2026 is a Wednesday: its week starts on Monday 1 June.
    assert [p["period_start"] for p in weekly["revenue"]["periods"]] == [
        "2026-06-01",
        "2026-06-08",
        "2026-06-15",
    ]
    assert [p["gross_minor"] for p in weekly["revenue"]["periods"]] == [5999, 0, 24900]
    assert [p["orders"] for p in weekly["revenue"]["periods"]] == [1, 0, 1]

    daily = overview(
        client, world.admin_a, **{"from": "2026-08-30", "to": "2026-09-01", "granularity": "day"}
    ).json()
    assert [(p["period_start"], p["gross_minor"]) for p in daily["revenue"]["periods"]] == [
        ("2026-08-30", 0),
        ("2026-08-31", 5999),
        ("2026-09-01", 5999),
    ]


def test_another_practices_data_never_appears(
    client: TestClient, database: Database, world: World, seeded: None
) -> None:
    a = overview(client, world.admin_a, **RANGE).json()
    assert a["practice_id"] == str(world.practice_a)
    # B's July order (3 x 7000) and its 700 refund are not in A's July.
    assert (
        a["revenue"]["periods"][1]["gross_minor"]
        == a["revenue"]["periods"][1]["net_minor"] + 12000
        == 12000
    )

    b = overview(client, world.admin_b, **RANGE).json()
    expected = expected_from_rows(database, world.practice_b)
    assert b["revenue"]["periods"] == expected["periods"]
    assert [p["gross_minor"] for p in b["revenue"]["periods"]] == [0, 21000, 0]
    assert b["refunds"]["by_reason"] == [
        {"reason_code": "damaged_item", "count": 1, "amount_minor": 700}
    ]
    assert (b["conversion"]["recommendations"], b["conversion"]["converted"]) == (1, 0)
    assert (b["funnel"]["checkouts_started"], b["funnel"]["paid"]) == (1, 1)
    assert b["fulfilment"]["open_exceptions"] == 0
    if database.role:  # PostgreSQL as the service role: row-level security alone holds too
        with checks_disabled():
            assert overview(client, world.admin_b, **RANGE).json() == b


def test_clinicians_staff_and_patients_may_not_read_it_finance_may(
    client: TestClient, world: World, database: Database
) -> None:
    for who in (world.clinician_a, world.staff_a, world.patient_a):
        response = overview(client, who, **RANGE)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"
    assert overview(client, world.finance_a, **RANGE).status_code == 200
    assert client.get("/v1/dashboards/overview", params=RANGE).status_code == 401


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-08-31", "to": "2026-06-01"}, "invalid_date_range"),
        ({"from": "2025-01-01", "to": "2026-02-06"}, "invalid_date_range"),  # 401 days
        ({"from": "2026-06-01"}, "validation_failed"),
        ({"from": "2026-06-01", "to": "31/08/2026"}, "validation_failed"),
        ({**RANGE, "granularity": "year"}, "validation_failed"),
    ],
    ids=["to_before_from", "more_than_400_days", "no_to", "not_a_date", "unknown_granularity"],
)
def test_bad_ranges_are_a_problem(
    client: TestClient, world: World, database: Database, params: dict[str, str], code: str
) -> None:
    response = overview(client, world.admin_a, **params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_an_empty_range_is_all_zeros(
    client: TestClient, world: World, database: Database, seeded: None
) -> None:
    # Exactly 400 days apart is allowed; nothing was made in 2024-2025.
    response = overview(
        client, world.admin_a, **{"from": "2024-06-01", "to": "2025-07-06", "granularity": "week"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    periods = body["revenue"]["periods"]
    assert periods[0]["period_start"] == "2024-05-27"  # the Monday of 1 June 2024's week
    assert len(periods) == 58
    assert all(p["gross_minor"] == p["refunded_minor"] == p["orders"] == 0 for p in periods)
    assert body["orders"] == {"count": 0, "average_order_value_minor": 0}
    assert body["conversion"] == {"recommendations": 0, "converted": 0, "rate": None}
    assert body["refunds"] == {"count": 0, "amount_minor": 0, "by_reason": []}
    assert set(body["funnel"].values()) == {0}
    assert {item["count"] for item in body["fulfilment"]["lines_by_status"]} == {0}
    # The exception queue is "now", whatever the range.
    assert body["fulfilment"]["open_exceptions"] == 1
    assert count_rows(database, Order, Order.created_at < at("2025-07-07")) == 0
