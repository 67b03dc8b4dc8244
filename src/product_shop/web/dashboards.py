"""Dashboard routes (spec §2.1, §10.4, §15.4): the practice's overview for practice admins and
finance (spec §9); the figures are computed in `insights/dashboards.py`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.core.moments import Day
from product_shop.insights.dashboards import DashboardOverview, Granularity, overview
from product_shop.web.deps import SessionDep, permitted
from product_shop.web.problems import problem_responses
from product_shop.web.responses import model_response

router = APIRouter(prefix="/v1", tags=["dashboards"])


@router.get(
    "/dashboards/overview",
    operation_id="getDashboardOverview",
    response_model=DashboardOverview,
    summary="The practice's dashboard: revenue, orders, conversion, fulfilment, refunds, funnel",
    description=(
        "Figures for the inclusive UTC dates [from, to] (at most 400 days apart, else 422 "
        "`invalid_date_range`), computed from the orders, refunds, recommendations and "
        "checkouts themselves; revenue is also given per period (every period of the range, "
        "weeks starting Monday, months on the 1st). Money in minor units of `currency`."
    ),
    responses=problem_responses(401, 403, 422),
)
def dashboard_overview(
    actor: Annotated[Actor, Depends(permitted(Action.VIEW_DASHBOARDS))],
    session: SessionDep,
    start: Annotated[Day, Query(alias="from", description="First day (UTC), YYYY-MM-DD")],
    end: Annotated[Day, Query(alias="to", description="Last day (UTC), inclusive")],
    granularity: Annotated[Granularity, Query(description="Revenue period")] = Granularity.MONTH,
) -> Response:
    return model_response(overview(session, actor, start, end, granularity))
