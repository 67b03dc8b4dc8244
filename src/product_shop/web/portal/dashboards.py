"""Portal page: the practice dashboard (spec §10.2, §10.4, §15.4) for practice admins and finance
(spec §9). It shows the same overview the API answers (`insights.dashboards.overview`, one code
path): charts drawn as inline SVG on the server (web/portal/charts.py), each with its numbers in
a table, and the tables as CSV downloads.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from product_shop.core.csv_export import csv_document
from product_shop.core.errors import BadRequest
from product_shop.insights.dashboards import DashboardOverview, Granularity, overview
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.portal.auth import PortalUserDep
from product_shop.web.portal.charts import bar_chart
from product_shop.web.portal.forms import day
from product_shop.web.portal.render import PREFIX, money, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

Text = Annotated[str | None, Query(max_length=32)]
TABLES = ("revenue", "refunds", "funnel")


def _inputs(
    context: ContextDep, date_from: str | None, date_to: str | None, granularity: str | None
) -> tuple[date, date, Granularity]:
    """The range asked for; by default the last three calendar months (this one included),
    by month."""
    today = context.clock.now().date()
    end = day(date_to, "to") or today
    start = day(date_from, "from")
    if start is None:
        first = end.replace(day=1)
        for _ in range(2):
            first = (first - timedelta(days=1)).replace(day=1)
        start = first
    try:
        chosen = Granularity(granularity or Granularity.MONTH.value)
    except ValueError as exc:
        raise BadRequest("Choose day, week or month.", code="invalid_filter") from exc
    return start, end, chosen


def _period_label(start: date, granularity: Granularity) -> str:
    if granularity is Granularity.MONTH:
        return start.strftime("%b %Y")
    return start.strftime("%d %b")


def funnel_steps(figures: DashboardOverview) -> list[tuple[str, int]]:
    funnel = figures.funnel
    return [
        ("checkouts_started", funnel.checkouts_started),
        ("reached_payment", funnel.reached_payment),
        ("paid", funnel.paid),
        ("dropped_before_payment", funnel.dropped_before_payment),
        ("dropped_at_payment", funnel.dropped_at_payment),
    ]


def _charts(figures: DashboardOverview) -> dict[str, Any]:
    currency = figures.currency
    periods = figures.revenue.periods
    names = [_period_label(p.period_start, figures.granularity) for p in periods]
    by_money = lambda minor: money(minor, currency)  # noqa: E731
    conversion = figures.conversion
    return {
        "revenue": bar_chart(
            "Net revenue by period",
            names,
            [p.net_minor for p in periods],
            describe=by_money,
            y_label=currency,
            x_label="Period starting",
        ),
        "orders": bar_chart(
            "Orders by period", names, [p.orders for p in periods], x_label="Period starting"
        ),
        "refunds": bar_chart(
            "Refunds by reason code",
            [r.reason_code for r in figures.refunds.by_reason],
            [r.amount_minor for r in figures.refunds.by_reason],
            describe=by_money,
            y_label=currency,
        ),
        "conversion": bar_chart(
            "Recommendations and purchases",
            ["Recommended", "Bought"],
            [conversion.recommendations, conversion.converted],
        ),
        "funnel": bar_chart(
            "Checkout funnel",
            ["Started", "Reached payment", "Paid"],
            [figures.funnel.checkouts_started, figures.funnel.reached_payment, figures.funnel.paid],
        ),
    }


@router.get("/dashboard")
def dashboard(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    date_from: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=32)] = None,
    granularity: Text = None,
) -> Response:
    start, end, chosen = _inputs(context, date_from, date_to, granularity)
    figures = overview(session, user.actor, start, end, chosen)
    query = {"from": start.isoformat(), "to": end.isoformat(), "granularity": chosen.value}
    return page(
        request,
        "dashboard.html",
        {
            "figures": figures,
            "charts": _charts(figures),
            "query": query,
            "funnel": funnel_steps(figures),
            "granularities": [g.value for g in Granularity],
        },
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


def dashboard_csv_rows(
    figures: DashboardOverview, table: str
) -> tuple[list[str], list[list[object]]]:
    """A table of the overview as CSV: minor units, as the API gives them."""
    if table == "revenue":
        return (
            ["period_start", "orders", "gross_minor", "refunded_minor", "net_minor", "currency"],
            [
                [
                    p.period_start.isoformat(),
                    p.orders,
                    p.gross_minor,
                    p.refunded_minor,
                    p.net_minor,
                    figures.currency,
                ]
                for p in figures.revenue.periods
            ],
        )
    if table == "refunds":
        return (
            ["reason_code", "count", "amount_minor", "currency"],
            [
                [r.reason_code, r.count, r.amount_minor, figures.currency]
                for r in figures.refunds.by_reason
            ],
        )
    return (["step", "count"], [[step, count] for step, count in funnel_steps(figures)])


@router.get("/dashboard.csv")
def dashboard_csv(
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    table: Annotated[str, Query(max_length=16)] = "revenue",
    date_from: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=32)] = None,
    granularity: Text = None,
) -> Response:
    if table not in TABLES:
        raise BadRequest("Choose the revenue, refunds or funnel table.", code="invalid_filter")
    start, end, chosen = _inputs(context, date_from, date_to, granularity)
    figures = overview(session, user.actor, start, end, chosen)
    header, rows = dashboard_csv_rows(figures, table)
    name = f"dashboard-{table}-{start.isoformat()}-{end.isoformat()}.csv"
    return Response(
        csv_document(header, rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
