"""The practice dashboard (spec §2.1, §10.4, §15.4): revenue by period, order volume,
recommendation-to-purchase conversion, fulfilment status and the exception queue, refunds by
reason code, and the checkout funnel.

Every figure is read from the orders, refunds, recommendations and checkouts themselves (one
source of truth, nothing kept on the side that could drift), with aggregate SQL: the database
groups and sums, by period too, so the work grows with the number of periods and statuses shown,
never with the rows. Each query is scoped to the caller's practice and reads its rows through
the (practice_id, timestamp) indexes (migration 0021, docs/dashboards.md).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Integer, String, and_, cast, func, literal_column, or_
from sqlalchemy import select as sa_select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import scoped
from product_shop.access.policy import Action, require
from product_shop.checkout.model import CheckoutStatus
from product_shop.checkout.tables import Checkout
from product_shop.core.errors import Unprocessable
from product_shop.orders.tables import Order, OrderLine
from product_shop.recommendations.conversion import conversion
from product_shop.refunds.tables import Refund

MAX_RANGE_DAYS = 400
DEFAULT_CURRENCY = "GBP"
# Every state an order line can be in (orders/tables.py LINE_STATES), shown even when zero.
LINE_STATUSES = (
    "pending",
    "sent_to_supplier",
    "dispatched",
    "preparing",
    "ready_for_collection",
    "collected",
    "delivered",
    "exception",
    "cancelled",
)
# A checkout reached payment once it was awaiting payment, or went past it (paid, or a failed or
# expired attempt: `payment_attempts` counts the payment pages opened).
REACHED_PAYMENT = (CheckoutStatus.AWAITING_PAYMENT.value, CheckoutStatus.COMPLETED.value)


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"  # starting Monday
    MONTH = "month"  # starting on the 1st


class RevenuePeriod(BaseModel):
    period_start: date
    gross_minor: int
    refunded_minor: int
    net_minor: int
    orders: int


class Revenue(BaseModel):
    gross_minor: int = Field(description="Totals of the orders placed in the range")
    refunded_minor: int = Field(
        description="Succeeded refunds of the practice's orders initiated in the range"
    )
    net_minor: int = Field(description="gross_minor - refunded_minor")
    periods: list[RevenuePeriod] = Field(description="Every period of the range, empty ones too")


class OrderVolume(BaseModel):
    count: int
    average_order_value_minor: int = Field(description="gross / count, half up; 0 with none")


class ConversionFigures(BaseModel):
    recommendations: int = Field(description="Recommendations made in the range")
    converted: int = Field(description="Of those, how many led to a paid order")
    rate: float | None = Field(description="converted / recommendations; null when none")


class StatusCount(BaseModel):
    status: str
    count: int


class FulfilmentFigures(BaseModel):
    lines_by_status: list[StatusCount] = Field(
        description="Lines of the orders placed in the range, by fulfilment status"
    )
    open_exceptions: int = Field(description="The practice's exception queue now")


class ReasonCount(BaseModel):
    reason_code: str
    count: int
    amount_minor: int


class RefundFigures(BaseModel):
    count: int
    amount_minor: int
    by_reason: list[ReasonCount]


class Funnel(BaseModel):
    checkouts_started: int
    reached_payment: int
    paid: int
    dropped_before_payment: int
    dropped_at_payment: int


class DashboardOverview(BaseModel):
    practice_id: uuid.UUID
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    granularity: Granularity
    currency: str
    revenue: Revenue
    orders: OrderVolume
    conversion: ConversionFigures
    fulfilment: FulfilmentFigures
    refunds: RefundFigures
    funnel: Funnel

    model_config = {"populate_by_name": True}


def check_range(start: date, end: date) -> None:
    """`to` on or after `from`, at most MAX_RANGE_DAYS apart; else 422 `invalid_date_range`."""
    if end < start:
        raise Unprocessable("`to` must be on or after `from`.", code="invalid_date_range")
    if (end - start).days > MAX_RANGE_DAYS:
        raise Unprocessable(
            f"`from` and `to` may be at most {MAX_RANGE_DAYS} days apart.",
            code="invalid_date_range",
        )


def period_starts(start: date, end: date, granularity: Granularity) -> list[date]:
    """The first day of every period that meets [start, end]."""
    if granularity is Granularity.DAY:
        first = start
    elif granularity is Granularity.WEEK:
        first = start - timedelta(days=start.weekday())
    else:
        first = start.replace(day=1)
    starts = []
    while first <= end:
        starts.append(first)
        if granularity is Granularity.DAY:
            first += timedelta(days=1)
        elif granularity is Granularity.WEEK:
            first += timedelta(days=7)
        else:
            first = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return starts


def bucket(column: Any, granularity: Granularity, dialect: str) -> ColumnElement[str]:
    """The period a timestamp falls in, as 'YYYY-MM-DD' text, computed by the database.

    Constants are literal SQL (never bound parameters) so that PostgreSQL sees the SELECT's and
    the GROUP BY's expressions as the same one."""
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), column)
        truncated = func.date_trunc(literal_column(f"'{granularity.value}'"), utc)
        return func.to_char(truncated, literal_column("'YYYY-MM-DD'"))
    # SQLite keeps UTC timestamps as ISO text; %w is the weekday, 0 = Sunday.
    if granularity is Granularity.DAY:
        return func.strftime(literal_column("'%Y-%m-%d'"), column)
    if granularity is Granularity.MONTH:
        return func.strftime(literal_column("'%Y-%m-01'"), column)
    weekday = cast(func.strftime(literal_column("'%w'"), column), Integer)
    back: Any = literal_column("'-'") + cast((weekday + 6) % 7, String) + literal_column("' days'")
    return func.date(column, back)


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[from 00:00 UTC, the day after `to` 00:00 UTC): inclusive dates as a half-open range."""
    return (
        datetime.combine(start, time(), tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), time(), tzinfo=UTC),
    )


def overview(
    session: Session, actor: Actor, start: date, end: date, granularity: Granularity
) -> DashboardOverview:
    """The caller's practice's dashboard for the inclusive UTC dates [start, end]."""
    require(actor, Action.VIEW_DASHBOARDS)
    check_range(start, end)
    assert actor.practice_id is not None
    practice_id = actor.practice_id
    low, high = _bounds(start, end)
    dialect = session.get_bind().dialect.name

    order_period = bucket(Order.created_at, granularity, dialect).label("period")
    order_rows = session.execute(
        sa_select(
            order_period,
            func.count(),
            func.coalesce(func.sum(Order.total_minor), 0),
            func.max(Order.currency),
        )
        .where(
            scoped(Order.practice_id, practice_id),
            Order.created_at >= low,
            Order.created_at < high,
        )
        .group_by(order_period)
    ).all()
    ordered = {row[0]: (int(row[1]), int(row[2])) for row in order_rows}
    currency = next((row[3] for row in order_rows if row[3]), DEFAULT_CURRENCY)

    refunds_in_range = and_(
        scoped(Refund.practice_id, practice_id),
        Refund.initiated_at >= low,
        Refund.initiated_at < high,
        Refund.status == "succeeded",
        Refund.order_id.is_not(None),
    )
    # One pass over the refunds: by period and reason code; the totals of each come from
    # these few grouped rows (at most periods x reason codes).
    refund_period = bucket(Refund.initiated_at, granularity, dialect).label("period")
    refund_groups = session.execute(
        sa_select(
            refund_period,
            Refund.reason_code,
            func.count(),
            func.coalesce(func.sum(Refund.amount_minor), 0),
        )
        .where(refunds_in_range)
        .group_by(refund_period, Refund.reason_code)
    ).all()
    refunded: dict[str, int] = {}
    reasons: dict[str, tuple[int, int]] = {}
    for period, reason_code, count, amount in refund_groups:
        refunded[period] = refunded.get(period, 0) + int(amount)
        n, total = reasons.get(reason_code, (0, 0))
        reasons[reason_code] = (n + int(count), total + int(amount))
    by_reason = [
        ReasonCount(reason_code=code, count=n, amount_minor=total)
        for code, (n, total) in sorted(reasons.items())
    ]

    periods = []
    for first in period_starts(start, end, granularity):
        key = first.isoformat()
        count, gross = ordered.get(key, (0, 0))
        back = refunded.get(key, 0)
        periods.append(
            RevenuePeriod(
                period_start=first,
                gross_minor=gross,
                refunded_minor=back,
                net_minor=gross - back,
                orders=count,
            )
        )
    gross = sum(count_gross[1] for count_gross in ordered.values())
    orders = sum(count_gross[0] for count_gross in ordered.values())
    refunded_total = sum(refunded.values())

    return DashboardOverview(
        practice_id=practice_id,
        from_=start,
        to=end,
        granularity=granularity,
        currency=currency,
        revenue=Revenue(
            gross_minor=gross,
            refunded_minor=refunded_total,
            net_minor=gross - refunded_total,
            periods=periods,
        ),
        orders=OrderVolume(
            count=orders,
            average_order_value_minor=(2 * gross + orders) // (2 * orders) if orders else 0,
        ),
        conversion=_conversion(session, practice_id, low, high),
        fulfilment=_fulfilment(session, practice_id, low, high),
        refunds=RefundFigures(
            count=sum(reason.count for reason in by_reason),
            amount_minor=sum(reason.amount_minor for reason in by_reason),
            by_reason=by_reason,
        ),
        funnel=_funnel(session, practice_id, low, high),
    )


def _conversion(
    session: Session, practice_id: uuid.UUID, low: datetime, high: datetime
) -> ConversionFigures:
    """The same computation as `GET /v1/recommendations/conversion?from=low&to=high`."""
    found = conversion(session, practice_id, low, high)
    return ConversionFigures(
        recommendations=found.recommendations, converted=found.converted, rate=found.rate
    )


def _fulfilment(
    session: Session, practice_id: uuid.UUID, low: datetime, high: datetime
) -> FulfilmentFigures:
    counts: dict[str, int] = {
        row[0]: int(row[1])
        for row in session.execute(
            sa_select(OrderLine.fulfilment_status, func.count())
            .join(Order, Order.order_id == OrderLine.order_id)
            .where(
                scoped(Order.practice_id, practice_id),
                Order.created_at >= low,
                Order.created_at < high,
            )
            .group_by(OrderLine.fulfilment_status)
        )
    }
    # The exception queue as the fulfilment work list shows it (fulfilment/service.py).
    open_exceptions = session.scalar(
        sa_select(func.count())
        .select_from(OrderLine)
        .join(Order, Order.order_id == OrderLine.order_id)
        .where(
            scoped(Order.practice_id, practice_id),
            OrderLine.fulfilment_status == "exception",
            OrderLine.exception_resolution.is_(None),
        )
    )
    known = [StatusCount(status=s, count=int(counts.get(s, 0))) for s in LINE_STATUSES]
    other = [
        StatusCount(status=s, count=int(n)) for s, n in counts.items() if s not in LINE_STATUSES
    ]
    return FulfilmentFigures(lines_by_status=known + other, open_exceptions=open_exceptions or 0)


def _funnel(session: Session, practice_id: uuid.UUID, low: datetime, high: datetime) -> Funnel:
    reached = or_(Checkout.status.in_(REACHED_PAYMENT), Checkout.payment_attempts > 0)
    started, at_payment, paid = session.execute(
        sa_select(
            func.count(),
            func.count().filter(reached),
            func.count().filter(Checkout.order_id.is_not(None)),
        ).where(
            scoped(Checkout.practice_id, practice_id),
            Checkout.created_at >= low,
            Checkout.created_at < high,
        )
    ).one()
    return Funnel(
        checkouts_started=started,
        reached_payment=at_payment,
        paid=paid,
        dropped_before_payment=started - at_payment,
        dropped_at_payment=at_payment - paid,
    )


__all__ = ["DashboardOverview", "Granularity", "check_range", "overview", "period_starts"]
