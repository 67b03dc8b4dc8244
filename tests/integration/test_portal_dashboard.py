"""The portal's dashboard page (spec §10.2, §10.4, §15.4, §9): the practice admin sees the
overview's figures in tables beside server-drawn SVG bar charts, and downloads them as CSV; the
figures are those of the API and of the rows themselves (seeded as in test_dashboards.py)."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from product_shop.config import Settings
from product_shop.db.engine import Database
from product_shop.orders.tables import Order
from product_shop.simulators.server import BackgroundServer
from tests.conftest import World
from tests.integration.conftest import count_rows
from tests.integration.portal_support import (
    access_simulator,  # noqa: F401 (a fixture)
    portal_settings,
    sign_in,
)
from tests.integration.test_dashboards import RANGE, expected_from_rows, seed

QUERY = {**RANGE, "granularity": "month"}


@pytest.fixture
def settings(settings: Settings, access_simulator: BackgroundServer) -> Settings:  # noqa: F811
    return portal_settings(settings, access_simulator.url)


@pytest.fixture
def seeded(request: pytest.FixtureRequest) -> None:
    seed(request)


class Tables(HTMLParser):
    """Each table's body rows (by the table's id), as cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def pounds(minor: int) -> str:
    return f"£{minor // 100:,}.{minor % 100:02d}"


def test_the_admin_sees_the_seeded_figures_in_tables_and_svg_bars(
    client: TestClient, world: World, database: Database, seeded: None
) -> None:
    sign_in(client, world.admin_a, "admin_a")
    page = client.get("/portal/dashboard", params=QUERY)
    assert page.status_code == 200, page.text
    expected = expected_from_rows(database, world.practice_a)
    tables = tables_of(page.text)

    assert tables["revenue-table"] == [
        [
            p["period_start"],
            str(p["orders"]),
            pounds(p["gross_minor"]),
            pounds(p["refunded_minor"]),
            pounds(p["net_minor"]),
        ]
        for p in expected["periods"]
    ]
    assert tables["revenue-table"][0][2] == "£308.99"  # June: 59.99 + 249.00, pinned by hand
    assert tables["refunds-table"] == [
        [r["reason_code"], str(r["count"]), pounds(r["amount_minor"])]
        for r in expected["by_reason"]
    ]
    made, bought = expected["conversion"]
    assert tables["conversion-table"] == [[str(made), str(bought), "66.7%"]]
    started, reached, paid = expected["funnel"]
    assert tables["funnel-table"] == [
        ["Checkouts started", str(started)],
        ["Reached payment", str(reached)],
        ["Paid", str(paid)],
        ["Dropped before payment", str(started - reached)],
        ["Dropped at payment", str(reached - paid)],
    ]
    assert ["Open exceptions (now)", str(expected["open_exceptions"])] in tables["fulfilment-table"]

    # Five charts, inline SVG named for assistive technology; bars carry their value.
    assert page.text.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"') == 5
    bars = re.findall(r'<rect class="bar"[^>]*><title>([^<]*)</title>', page.text)
    assert "Jun 2026: " + pounds(30899 - 1000) in bars  # June's net revenue bar
    assert "damaged_item: £120.00" in bars
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([\d.]+)"', page.text)]
    assert any(h > 0 for h in heights)
    # The security policy holds: no script, no inline style anywhere in the page.
    assert "<script" not in page.text
    assert "style=" not in page.text


def test_the_default_is_the_last_three_months_by_month(
    client: TestClient, world: World, database: Database
) -> None:
    sign_in(client, world.finance_a, "finance_a")
    page = client.get("/portal/dashboard")
    assert page.status_code == 200, page.text
    rows = tables_of(page.text)["revenue-table"]
    assert len(rows) == 3
    assert all(row[0].endswith("-01") for row in rows)
    assert all(row[1] == "0" for row in rows)  # nothing was sold: zeros, not an error
    assert count_rows(database, Order) == 0


def test_a_clinician_gets_403_and_no_figures(
    client: TestClient, world: World, database: Database, seeded: None
) -> None:
    sign_in(client, world.clinician_a, "clinician_a")
    page = client.get("/portal/dashboard", params=QUERY)
    assert page.status_code == 403
    assert "£308.99" not in page.text
    csv_response = client.get("/portal/dashboard.csv", params={**QUERY, "table": "revenue"})
    assert csv_response.status_code == 403
    assert "30899" not in csv_response.text


def test_another_practice_admin_sees_only_their_own_figures(
    client: TestClient, world: World, database: Database, seeded: None
) -> None:
    sign_in(client, world.admin_b, "admin_b")
    page = client.get("/portal/dashboard", params=QUERY)
    assert page.status_code == 200, page.text
    expected = expected_from_rows(database, world.practice_b)
    revenue = tables_of(page.text)["revenue-table"]
    assert [row[2] for row in revenue] == [pounds(p["gross_minor"]) for p in expected["periods"]]
    assert [row[2] for row in revenue] == ["£0.00", "£210.00", "£0.00"]
    assert "£308.99" not in page.text


def _csv(client: TestClient, table: str) -> list[dict[str, str]]:
    response = client.get("/portal/dashboard.csv", params={**QUERY, "table": table})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(response.text)))


def test_the_csv_downloads_match_the_api(
    client: TestClient, world: World, database: Database, seeded: None
) -> None:
    api: dict[str, Any] = client.get(
        "/v1/dashboards/overview", params=QUERY, headers=world.admin_a.headers
    ).json()
    sign_in(client, world.admin_a, "admin_a")

    revenue = _csv(client, "revenue")
    assert [
        {
            k: row[k]
            for k in ("period_start", "gross_minor", "refunded_minor", "net_minor", "orders")
        }
        for row in revenue
    ] == [{k: str(v) for k, v in period.items()} for period in api["revenue"]["periods"]]
    assert {row["currency"] for row in revenue} == {"GBP"}

    refunds = _csv(client, "refunds")
    assert [
        {
            "reason_code": r["reason_code"],
            "count": int(r["count"]),
            "amount_minor": int(r["amount_minor"]),
        }
        for r in refunds
    ] == api["refunds"]["by_reason"]
    assert refunds == [
        {"reason_code": code, "count": n, "amount_minor": amount, "currency": "GBP"}
        for code, n, amount in (("customer_request", "2", "1500"), ("damaged_item", "1", "12000"))
    ]

    funnel = {row["step"]: int(row["count"]) for row in _csv(client, "funnel")}
    assert funnel == api["funnel"]
    # The figures are the rows' own.
    assert (
        tuple(funnel[k] for k in ("checkouts_started", "reached_payment", "paid"))
        == (expected_from_rows(database, world.practice_a)["funnel"])
    )


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"from": "2026-08-31", "to": "2026-06-01"}, 422),
        ({"from": "2024-01-01", "to": "2026-08-31"}, 422),
        ({"from": "31/08/2026"}, 400),
        ({"granularity": "year"}, 400),
    ],
    ids=["to_before_from", "too_long", "not_a_date", "unknown_granularity"],
)
def test_bad_dates_show_a_problem_page(
    client: TestClient, world: World, database: Database, params: dict[str, str], status: int
) -> None:
    sign_in(client, world.admin_a, "admin_a")
    page = client.get("/portal/dashboard", params=params)
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    bad_table = client.get("/portal/dashboard.csv", params={**QUERY, "table": "patients"})
    assert bad_table.status_code == 400
