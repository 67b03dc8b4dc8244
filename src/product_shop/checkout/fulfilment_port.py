"""What completing a checkout asks of fulfilment (implemented by `fulfilment.start`): start it
for the order being born, in the order's own unit of work."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy.orm import Session

from product_shop.checkout.repository import CheckoutLineRow, CheckoutRow
from product_shop.db.fast import Statements
from product_shop.orders.events import OrderLineRow, OrderRow


class FulfilmentStarted(NamedTuple):
    """What starting fulfilment makes of a new order: the order and lines as they are stored
    (a digital line is delivered at once, an in-clinic one being prepared), its voucher rows,
    and `follow_up`, which queues the rows that must follow the order's (vouchers, audit
    entries, events) and returns the audit entries for the order's trail."""

    order: OrderRow
    lines: list[OrderLineRow]
    vouchers: list[dict[str, Any]]
    follow_up: Callable[[Session, Statements], list[dict[str, Any]]]


class FulfilmentTrigger(Protocol):
    """Starts fulfilment for a paid order, in the order's own unit of work (spec §15.2 rule 3:
    never before the capture is confirmed)."""

    def order_created(
        self,
        order: OrderRow,
        lines: Sequence[OrderLineRow],
        checkout: CheckoutRow,
        checkout_lines: Sequence[CheckoutLineRow],
        at: datetime,
    ) -> FulfilmentStarted: ...


class NoFulfilment:
    """For tests of the completion alone: the order's lines stay pending."""

    def order_created(
        self,
        order: OrderRow,
        lines: Sequence[OrderLineRow],
        checkout: CheckoutRow,
        checkout_lines: Sequence[CheckoutLineRow],
        at: datetime,
    ) -> FulfilmentStarted:
        return FulfilmentStarted(order, list(lines), [], lambda session, fast: [])
