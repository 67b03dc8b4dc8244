"""Finance's read of order-level revenue and refund data (spec §11.2), for reconciliation and VAT
reporting: every practice's orders and refunds in a date range, a keyset page at a time.

Finance is no practice: its service identity reads across practices (tenant scope `system`),
optionally one practice. The items carry ids, amounts and payment references only: no names,
addresses, notes or patient ids (docs/finance-api.md says why). Only the columns the items need
are read, so encrypted personal columns (a refund's note) are never even loaded."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.policy import Action, require
from product_shop.core.cursors import decode_cursor, encode_cursor
from product_shop.core.errors import Unprocessable
from product_shop.orders.tables import Order
from product_shop.refunds.tables import Refund

DEFAULT_LIMIT = 200
# A page's size, as every list of the API caps it (docs/security.md, abuse limits); the JSON-lines
# stream reads the database in larger pages of its own.
MAX_LIMIT = 200
STREAM_PAGE = 1000
MAX_RANGE_DAYS = 366


@dataclass(frozen=True, slots=True)
class FinanceRange:
    """Whole UTC days, `date_from` to `date_to` inclusive, of every practice or one."""

    date_from: date
    date_to: date
    practice_id: uuid.UUID | None = None

    @property
    def start(self) -> datetime:
        return datetime.combine(self.date_from, time.min, UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: midnight UTC after `date_to`."""
        return datetime.combine(self.date_to + timedelta(days=1), time.min, UTC)

    def details(self) -> dict[str, object]:
        return {
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "practice_id": str(self.practice_id) if self.practice_id else None,
        }


def finance_range(
    date_from: date, date_to: date, practice_id: uuid.UUID | None = None
) -> FinanceRange:
    """The range, once it is one: `to` not before `from`, at most 366 days (a year, leap or not,
    per request; a longer period is several requests, so no request holds a reader for long)."""
    if date_to < date_from:
        raise Unprocessable(
            "to must not be before from.",
            code="invalid_date_range",
            errors=[{"loc": ["query", "to"], "type": "invalid_date_range"}],
        )
    days = (date_to - date_from).days + 1
    if days > MAX_RANGE_DAYS:
        raise Unprocessable(
            f"The range covers {days} days; ask for at most {MAX_RANGE_DAYS} at a time.",
            code="date_range_too_long",
            max_days=MAX_RANGE_DAYS,
            errors=[{"loc": ["query", "to"], "type": "date_range_too_long"}],
        )
    return FinanceRange(date_from, date_to, practice_id)


# ---- the items: a contract for reconciliation (docs/finance-api.md) ----------------------------


class FinanceOrder(BaseModel):
    """One order placed in the range, as Finance reconciles it."""

    order_id: uuid.UUID = Field(description="The order's id (stable; also in the order events).")
    practice_id: uuid.UUID = Field(description="The practice that sold it.")
    created_at: datetime = Field(
        description="When the order was placed (payment confirmed), ISO 8601 UTC. The range "
        "filters and pages on this."
    )
    currency: str = Field(description="ISO 4217 code of every amount of the order.")
    total_minor: int = Field(
        description="The order total in minor units: captured_minor + redeemed_minor."
    )
    captured_minor: int = Field(
        description="Taken by card or wallet through Integrated Payments (DNA Payments), in "
        "minor units; 0 when points paid the whole order."
    )
    redeemed_minor: int = Field(
        description="The money value of the Rewards Manager points redeemed for the order, in "
        "minor units (0: no points)."
    )
    refunded_minor: int = Field(
        description="Money refunded and confirmed by Integrated Payments (succeeded refunds), in "
        "minor units, never above captured_minor. Points given back are not money: see the "
        "refunds of kind `points` and `points_returned`."
    )
    refund_pending_minor: int = Field(
        description="Money in refunds sent to Integrated Payments and not yet confirmed, in "
        "minor units (it moves to refunded_minor, or back, when they settle)."
    )
    points_returned: bool = Field(
        description="An order paid wholly with points was refunded by Rewards Manager "
        "reinstating the points."
    )
    payment_ref: str | None = Field(
        description="The DNA Payments transaction reference of the capture (null when points "
        "paid the whole order)."
    )
    payment_method: str | None = Field(
        description="How the capture was paid: `card` or `wallet` (null: points only)."
    )
    redemption_ref: str | None = Field(
        description="Rewards Manager's redemption reference when points paid part or all of "
        "the order."
    )
    settlement_ref: str | None = Field(
        description="Rewards Manager's settlement reference when points paid the whole order "
        "(then payment_ref is null)."
    )
    status: str = Field(
        description="The order status: `Created`, `Fulfilment-In-Progress`, `Completed` or "
        "`Refunded` (any refund, partial or full)."
    )
    refund_status: str = Field(
        description="`none`, `partial` or `full`: how much of the order has been refunded."
    )


class FinanceRefund(BaseModel):
    """One refund initiated in the range: of an order, or of a payment exception (a capture
    that made no order)."""

    refund_id: uuid.UUID = Field(description="The refund's id (stable; also in refund events).")
    order_id: uuid.UUID | None = Field(
        description="The order refunded; null when the refund is of a payment exception."
    )
    payment_exception_id: uuid.UUID | None = Field(
        description="The payment exception refunded (a capture that made no order); null when "
        "the refund is of an order."
    )
    practice_id: uuid.UUID = Field(description="The practice whose payment was refunded.")
    initiated_at: datetime = Field(
        description="When a staff member initiated it, ISO 8601 UTC. The range filters and "
        "pages on this."
    )
    completed_at: datetime | None = Field(
        description="When its outcome was recorded (succeeded or failed); null while pending."
    )
    status: str = Field(
        description="`pending` (sent, outcome not known yet), `succeeded` or `failed` (nothing "
        "was refunded)."
    )
    kind: str = Field(
        description="`amount` (partial by amount), `lines` (by line and quantity), `balance` "
        "(all that was left) or `points` (an order paid wholly with points: Rewards Manager "
        "reinstates the points, no money moves)."
    )
    amount_minor: int = Field(
        description="Money refunded (or asked for, while pending), in minor units; 0 for a "
        "`points` refund."
    )
    points: int | None = Field(
        description="Points Rewards Manager is asked to reinstate (a `points` refund); else null."
    )
    currency: str = Field(description="ISO 4217 code of amount_minor.")
    reason_code: str = Field(description="Integrated Payments' refund reason code.")
    payment_ref: str = Field(
        description="The original DNA Payments transaction refunded (or, for a `points` "
        "refund, Rewards Manager's settlement reference)."
    )
    payment_method: str = Field(description="How the original payment was made.")
    provider_refund_ref: str | None = Field(
        description="Integrated Payments' reference of the refund itself; null while pending, "
        "when it failed, and for `points` refunds."
    )
    failure_code: str | None = Field(
        description="Integrated Payments' code when the refund failed; else null."
    )
    initiated_by: str = Field(
        description="The Access Manager id of the staff member who initiated it (no name)."
    )


class FinanceOrderPage(BaseModel):
    items: list[FinanceOrder]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class FinanceRefundPage(BaseModel):
    items: list[FinanceRefund]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


# ---- the queries ---------------------------------------------------------------------------------

_ORDER_COLUMNS = tuple(getattr(Order, name) for name in FinanceOrder.model_fields)
_REFUND_COLUMNS = tuple(getattr(Refund, name) for name in FinanceRefund.model_fields)
Page = TypeVar("Page", FinanceOrderPage, FinanceRefundPage)


def _rows(
    session: Session,
    statement: Select[Any],
    at: Any,
    row_id: Any,
    *,
    cursor: str | None,
    size: int,
) -> list[dict[str, Any]]:
    """Up to `size` + 1 rows oldest first by (time, id), after the cursor's row: new rows land
    after every cursor, so a walk under way never skips or repeats one."""
    if cursor is not None:
        last_at, last_id = decode_cursor(cursor)
        statement = statement.where(or_(at > last_at, and_(at == last_at, row_id > last_id)))
    found = session.execute(statement.order_by(at, row_id).limit(size + 1)).mappings()
    return [dict(row) for row in found]


def finance_orders(
    session: Session,
    actor: Actor,
    window: FinanceRange,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> FinanceOrderPage:
    """A page of the orders placed in the range, oldest first."""
    require(actor, Action.READ_FINANCE_DATA)
    statement = select(*_ORDER_COLUMNS).where(
        Order.created_at >= window.start, Order.created_at < window.end
    )
    if window.practice_id is not None:
        statement = statement.where(Order.practice_id == window.practice_id)
    size = max(1, min(limit, STREAM_PAGE))
    rows = _rows(session, statement, Order.created_at, Order.order_id, cursor=cursor, size=size)
    items = [FinanceOrder.model_validate(row) for row in rows[:size]]
    last = items[-1] if len(rows) > size else None
    return FinanceOrderPage(
        items=items, next_cursor=encode_cursor(last.created_at, last.order_id) if last else None
    )


def finance_refunds(
    session: Session,
    actor: Actor,
    window: FinanceRange,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> FinanceRefundPage:
    """A page of the refunds initiated in the range (every outcome), oldest first."""
    require(actor, Action.READ_FINANCE_DATA)
    statement = select(*_REFUND_COLUMNS).where(
        Refund.initiated_at >= window.start, Refund.initiated_at < window.end
    )
    if window.practice_id is not None:
        statement = statement.where(Refund.practice_id == window.practice_id)
    size = max(1, min(limit, STREAM_PAGE))
    rows = _rows(
        session, statement, Refund.initiated_at, Refund.refund_id, cursor=cursor, size=size
    )
    items = [FinanceRefund.model_validate(row) for row in rows[:size]]
    last = items[-1] if len(rows) > size else None
    return FinanceRefundPage(
        items=items,
        next_cursor=encode_cursor(last.initiated_at, last.refund_id) if last else None,
    )


def walk(read_page: Callable[[str | None], Page], cursor: str | None = None) -> Iterator[Page]:
    """Every page of a range from `cursor` on: `read_page(cursor)` reads one (the NDJSON stream
    reads each in a unit of work of its own, so a long range is never held in memory or in one
    transaction)."""
    while True:
        page = read_page(cursor)
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
