"""Refund amounts held and settled by single conditional statements (refunds/service.py).

Each hold and release is one UPDATE computed by the database from the row as it is, guarded by
a condition: concurrent refunds cannot lose one another's amounts (SQLite reads before its
write lock is taken), and the constraints `refund_within_capture` / `refund_quantity_range`
refuse any total above the capture whatever the code does.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from product_shop.core.errors import Unprocessable
from product_shop.orders.tables import Order, OrderLine
from product_shop.refunds.tables import PaymentException, Refund


def _execute(session: Session, statement: Any) -> CursorResult[Any]:
    return cast(CursorResult[Any], session.execute(statement))


def hold(session: Session, table: Any, where: Any, amount: int) -> None:
    """Hold `amount` of what is left to refund, or 422 when another refund took it first."""
    limit = Order.captured_minor if table is Order else PaymentException.amount_minor
    held = _execute(
        session,
        update(table)
        .where(where, table.refunded_minor + table.refund_pending_minor + amount <= limit)
        .values(refund_pending_minor=table.refund_pending_minor + amount)
        .execution_options(synchronize_session=False),
    )
    if held.rowcount != 1:
        raise Unprocessable(
            "Another refund of this payment was made meanwhile; not enough is left for this one.",
            code="refund_exceeds_balance",
        )


def hold_units(session: Session, line_item_id: uuid.UUID, quantity: int) -> None:
    line = OrderLine
    held = _execute(
        session,
        update(line)
        .where(
            line.line_item_id == line_item_id,
            line.refunded_quantity + line.refund_pending_quantity + quantity <= line.quantity,
        )
        .values(refund_pending_quantity=line.refund_pending_quantity + quantity)
        .execution_options(synchronize_session=False),
    )
    if held.rowcount != 1:
        raise Unprocessable(
            "Another refund of this line was made meanwhile; not enough units are left.",
            code="refund_exceeds_quantity",
        )


def settle_hold(
    session: Session, table: Any, where: Any, amount: int, *, refunded: bool = False
) -> None:
    """Release a hold; with `refunded`, move it to the refunded total."""
    values = {"refund_pending_minor": table.refund_pending_minor - amount}
    if refunded:
        values["refunded_minor"] = table.refunded_minor + amount
    session.execute(
        update(table).where(where).values(values).execution_options(synchronize_session=False)
    )


def settle_units(
    session: Session, line: OrderLine, quantity: int, *, refunded: bool = False
) -> None:
    table = OrderLine
    values = {"refund_pending_quantity": table.refund_pending_quantity - quantity}
    if refunded:
        values["refunded_quantity"] = table.refunded_quantity + quantity
    session.execute(
        update(table)
        .where(table.line_item_id == line.line_item_id)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(line, ["refunded_quantity", "refund_pending_quantity"])


def leave_pending(
    session: Session, refund: Refund, status: str, now: datetime, **values: Any
) -> bool:
    """Move the refund out of `pending`, exactly once (False: someone else settled it)."""
    moved = _execute(
        session,
        update(Refund)
        .where(Refund.refund_id == refund.refund_id, Refund.status == "pending")
        .values(status=status, completed_at=now, **values)
        .execution_options(synchronize_session=False),
    )
    session.refresh(refund)
    return moved.rowcount == 1
