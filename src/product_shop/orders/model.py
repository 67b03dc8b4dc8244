"""Order rules (spec §3.3), free of web and database code.

Each line item moves through its fulfilment type's transition table. The parent status is the
least advanced line's stage; Completed is reached when every line is fulfilled and, since
fulfilled states have no way out, never reverts. Refunded is an overlay on top of the fulfilment
status, never a replacement for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from product_shop.catalogue.model import FulfilmentType
from product_shop.core.errors import InvalidTransition


class OrderStatus(StrEnum):
    """The spec's OrderStatus enum."""

    CREATED = "Created"
    FULFILMENT_IN_PROGRESS = "Fulfilment-In-Progress"
    COMPLETED = "Completed"
    REFUNDED = "Refunded"


class LineState(StrEnum):
    PENDING = "pending"
    SENT_TO_SUPPLIER = "sent_to_supplier"
    DISPATCHED = "dispatched"
    PREPARING = "preparing"
    READY_FOR_COLLECTION = "ready_for_collection"
    COLLECTED = "collected"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    # A refunded line whose fulfilment was stopped (an undispatched shipment the supplier
    # cancelled, an in-clinic line not collected): nothing more happens to it.
    CANCELLED = "cancelled"


class RefundStatus(StrEnum):
    NONE = "none"
    PARTIAL = "partial"
    FULL = "full"


_L = LineState
LINE_TRANSITIONS: dict[FulfilmentType, dict[LineState, frozenset[LineState]]] = {
    FulfilmentType.DROP_SHIP: {
        _L.PENDING: frozenset({_L.SENT_TO_SUPPLIER, _L.EXCEPTION, _L.CANCELLED}),
        _L.SENT_TO_SUPPLIER: frozenset({_L.DISPATCHED, _L.EXCEPTION, _L.CANCELLED}),
        _L.DISPATCHED: frozenset({_L.DELIVERED, _L.EXCEPTION}),
        _L.EXCEPTION: frozenset({_L.SENT_TO_SUPPLIER, _L.DISPATCHED, _L.DELIVERED, _L.CANCELLED}),
        _L.DELIVERED: frozenset(),
        _L.CANCELLED: frozenset(),
    },
    FulfilmentType.IN_CLINIC: {
        _L.PENDING: frozenset({_L.PREPARING, _L.EXCEPTION, _L.CANCELLED}),
        _L.PREPARING: frozenset({_L.READY_FOR_COLLECTION, _L.EXCEPTION, _L.CANCELLED}),
        _L.READY_FOR_COLLECTION: frozenset({_L.COLLECTED, _L.EXCEPTION, _L.CANCELLED}),
        _L.EXCEPTION: frozenset({_L.PREPARING, _L.READY_FOR_COLLECTION, _L.CANCELLED}),
        _L.COLLECTED: frozenset(),
        _L.CANCELLED: frozenset(),
    },
    FulfilmentType.DIGITAL: {
        _L.PENDING: frozenset({_L.DELIVERED, _L.EXCEPTION, _L.CANCELLED}),
        _L.EXCEPTION: frozenset({_L.DELIVERED, _L.CANCELLED}),
        _L.DELIVERED: frozenset(),
        _L.CANCELLED: frozenset(),
    },
}

# Which stage of the order each line state counts as; the parent takes the least advanced.
STAGE: dict[LineState, OrderStatus] = {
    _L.PENDING: OrderStatus.CREATED,
    _L.SENT_TO_SUPPLIER: OrderStatus.FULFILMENT_IN_PROGRESS,
    _L.DISPATCHED: OrderStatus.FULFILMENT_IN_PROGRESS,
    _L.PREPARING: OrderStatus.FULFILMENT_IN_PROGRESS,
    _L.READY_FOR_COLLECTION: OrderStatus.FULFILMENT_IN_PROGRESS,
    _L.EXCEPTION: OrderStatus.FULFILMENT_IN_PROGRESS,
    _L.COLLECTED: OrderStatus.COMPLETED,
    _L.DELIVERED: OrderStatus.COMPLETED,
    # Nothing more will happen to a cancelled line; only a refund cancels one, so its order
    # also carries the Refunded overlay.
    _L.CANCELLED: OrderStatus.COMPLETED,
}
_RANK = {OrderStatus.CREATED: 0, OrderStatus.FULFILMENT_IN_PROGRESS: 1, OrderStatus.COMPLETED: 2}


def next_line_state(
    fulfilment_type: FulfilmentType, current: LineState, target: LineState
) -> LineState:
    """The line's new state, or InvalidTransition when the table does not allow the move."""
    fulfilment_type, current, target = (
        FulfilmentType(fulfilment_type),
        LineState(current),
        LineState(target),
    )
    allowed = LINE_TRANSITIONS[fulfilment_type].get(current, frozenset())
    if target not in allowed:
        raise InvalidTransition(
            f"A {fulfilment_type.value} line cannot go from '{current.value}' to '{target.value}'.",
            code="invalid_fulfilment_transition",
        )
    return target


def fulfilment_status(line_states: Iterable[LineState]) -> OrderStatus:
    """The parent status: the least advanced line's stage (spec §3.3)."""
    stages = [STAGE[LineState(state)] for state in line_states]
    if not stages:
        raise ValueError("an order has at least one line")
    return min(stages, key=_RANK.__getitem__)


def refund_status(
    captured_minor: int, refunded_minor: int, *, points_returned: bool = False
) -> RefundStatus:
    """None, partial or full by the money refunded of the money captured; an order paid wholly
    with points is fully refunded once its points were asked back (`points_returned`)."""
    if points_returned:
        return RefundStatus.FULL
    if refunded_minor <= 0:
        return RefundStatus.NONE
    return RefundStatus.FULL if refunded_minor >= captured_minor else RefundStatus.PARTIAL


def order_status(fulfilment: OrderStatus, refund: RefundStatus) -> OrderStatus:
    """The spec's single OrderStatus: Refunded overlays any fulfilment stage once refunded."""
    return (
        OrderStatus.REFUNDED
        if RefundStatus(refund) is not RefundStatus.NONE
        else OrderStatus(fulfilment)
    )


def advance_status(before: OrderStatus, after: OrderStatus) -> OrderStatus:
    """Guard on the parent: Completed never goes back (spec §3.3)."""
    before, after = OrderStatus(before), OrderStatus(after)
    if before is OrderStatus.COMPLETED and after is not OrderStatus.COMPLETED:
        raise InvalidTransition("A completed order cannot go back.", code="order_completed")
    return after


def path_to(
    fulfilment_type: FulfilmentType, current: LineState, target: LineState
) -> list[LineState]:
    """The states a line passes through from `current` to `target`, in order (`target` last;
    empty when it is there already): the shortest way through the transition table that goes
    through no exception on the way. A supplier update that skips a step (dispatched before we
    heard of its acceptance) still walks the table. InvalidTransition when `target` cannot be
    reached forward (a line never goes back)."""
    fulfilment_type, current, target = (
        FulfilmentType(fulfilment_type),
        LineState(current),
        LineState(target),
    )
    if current is target:
        return []
    table = LINE_TRANSITIONS[fulfilment_type]
    paths: dict[LineState, list[LineState]] = {current: []}
    frontier = [current]
    while frontier:
        following: list[LineState] = []
        for state in frontier:
            for step in sorted(table.get(state, frozenset())):
                detour = step in (_L.EXCEPTION, _L.CANCELLED) and step is not target
                if step in paths or detour:
                    continue
                paths[step] = [*paths[state], step]
                if step is target:
                    return paths[step]
                following.append(step)
        frontier = following
    raise InvalidTransition(
        f"A {fulfilment_type.value} line cannot go from '{current.value}' to '{target.value}'.",
        code="invalid_fulfilment_transition",
    )


# What the patient's own timeline shows for an entry of the order's audit trail: a stable code
# and a sentence (`{product}`: the line's product name), never who did it, their role or internal
# values (issue 8 item 5). Actions not listed here (a PMS invoice reference, staff notes, ...)
# are for the practice's staff only.
PATIENT_TIMELINE: dict[str, tuple[str, str]] = {
    "payment.captured": ("payment_received", "Payment received"),
    "order.created": ("order_placed", "Order placed"),
    "fulfilment.sent_to_supplier": ("sent_to_supplier", "{product}: sent to our supplier"),
    "fulfilment.dispatched": ("dispatched", "{product}: dispatched"),
    "fulfilment.in_transit": ("in_transit", "{product}: on its way"),
    "fulfilment.delivered": ("delivered", "{product}: delivered"),
    "fulfilment.preparing": ("preparing", "{product}: being prepared for collection"),
    "fulfilment.ready_for_collection": (
        "ready_for_collection",
        "{product}: ready to collect at the practice",
    ),
    "fulfilment.collected": ("collected", "{product}: collected"),
    "fulfilment.exception": (
        "delivery_problem",
        "{product}: there is a problem; the practice will be in touch",
    ),
    "fulfilment.cancelled": ("cancelled", "{product}: cancelled"),
    "refund.succeeded": ("refunded", "Refund issued to your original payment method"),
    "order.cancellation_requested": (
        "cancellation_requested",
        "You asked to cancel; the practice will be in touch",
    ),
}
