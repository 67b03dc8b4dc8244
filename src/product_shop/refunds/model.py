"""What a refund request comes to (spec §5.3), free of web and database code: the amount, and
the line quantities it covers, never more than is left to refund."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from product_shop.core.errors import Conflict, Unprocessable


@dataclass(frozen=True, slots=True)
class LineHolding:
    """What is left to refund of an order line."""

    line_item_id: uuid.UUID
    quantity: int
    unit_price_minor: int
    refunded_quantity: int
    pending_quantity: int

    @property
    def open_quantity(self) -> int:
        return self.quantity - self.refunded_quantity - self.pending_quantity


@dataclass(frozen=True, slots=True)
class PlannedLine:
    line_item_id: uuid.UUID
    quantity: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class RefundPlan:
    kind: str  # amount | lines | balance
    amount_minor: int
    lines: tuple[PlannedLine, ...]


def refundable(captured_minor: int, refunded_minor: int, pending_minor: int) -> int:
    """What may still be refunded: the capture less what was refunded and what is in flight."""
    return captured_minor - refunded_minor - pending_minor


def plan_refund(
    *,
    refundable_minor: int,
    captured_minor: int,
    total_minor: int,
    lines: Sequence[LineHolding],
    amount_minor: int | None,
    requested: Sequence[tuple[uuid.UUID, int]] | None,
) -> RefundPlan:
    """The refund a request asks for: by amount, by lines, or the whole remaining balance.
    Refused: nothing left (409 `nothing_to_refund`), more than is left (422
    `refund_exceeds_balance`), a line not in the order or more units than are left of it (422).
    Where points paid part of the order (`captured_minor < total_minor`), a line refunds its
    share of the money captured; Rewards Manager reinstates the points."""
    if refundable_minor <= 0:
        raise Conflict(
            "Nothing is left to refund on this payment (refunded already, or a refund of the "
            "rest is still being made).",
            code="nothing_to_refund",
        )
    if amount_minor is not None:
        _within_balance(amount_minor, refundable_minor)
        return RefundPlan("amount", amount_minor, ())
    by_id = {line.line_item_id: line for line in lines}
    if requested is not None:
        planned = []
        for line_item_id, quantity in requested:
            line = by_id.get(line_item_id)
            if line is None:
                raise Unprocessable(
                    "A line named is not part of this order.",
                    code="unknown_order_line",
                    errors=[{"loc": ["body", "lines"], "line_item_id": str(line_item_id)}],
                )
            if quantity > line.open_quantity:
                raise Unprocessable(
                    f"Only {line.open_quantity} of this line's {line.quantity} units are left to "
                    "refund.",
                    code="refund_exceeds_quantity",
                    errors=[
                        {
                            "loc": ["body", "lines"],
                            "line_item_id": str(line_item_id),
                            "refundable_quantity": line.open_quantity,
                        }
                    ],
                )
            planned.append(
                PlannedLine(
                    line_item_id,
                    quantity,
                    _money_share(line.unit_price_minor * quantity, captured_minor, total_minor),
                )
            )
        amount = sum(line.amount_minor for line in planned)
        if amount <= 0:
            raise Conflict("These lines were paid with points only.", code="nothing_to_refund")
        _within_balance(amount, refundable_minor)
        return RefundPlan("lines", amount, tuple(planned))
    # The whole remaining balance, and every unit not refunded yet (their fulfilment stops).
    left = refundable_minor
    planned = []
    for line in lines:
        if line.open_quantity <= 0:
            continue
        share = min(
            left,
            _money_share(line.unit_price_minor * line.open_quantity, captured_minor, total_minor),
        )
        left -= share
        planned.append(PlannedLine(line.line_item_id, line.open_quantity, share))
    return RefundPlan("balance", refundable_minor, tuple(planned))


def _within_balance(amount_minor: int, refundable_minor: int) -> None:
    if amount_minor > refundable_minor:
        raise Unprocessable(
            f"Only {refundable_minor} (minor units) is left to refund on this payment.",
            code="refund_exceeds_balance",
            refundable_minor=refundable_minor,
        )


def _money_share(value_minor: int, captured_minor: int, total_minor: int) -> int:
    if captured_minor >= total_minor:
        return value_minor
    return value_minor * captured_minor // total_minor
