"""Moving a line through its fulfilment stages (spec §3.3, §6.2).

One way for every source of change — the supplier's callbacks, staff, the relay's follow-ups:
the line walks its type's transition table (`orders.model.path_to`; a stage the supplier skipped
is passed through, a line never goes back), each stage it passes writes its record on the line,
an audit entry on the order's trail with the actor, and the Communication Hub event for it; then
the order's status follows its least advanced line (Completed never reverts).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.audit.log import AuditLog
from product_shop.catalogue.model import FulfilmentType
from product_shop.core.clock import Clock
from product_shop.core.errors import NotFound
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.insights.counting import count_on_commit
from product_shop.insights.metrics import FULFILMENT_EXCEPTIONS
from product_shop.orders.model import (
    LineState,
    OrderStatus,
    RefundStatus,
    advance_status,
    fulfilment_status,
    order_status,
    path_to,
)
from product_shop.orders.tables import Order, OrderLine

SYSTEM_ACTOR = Actor(
    actor_id="product-shop",
    name="Product Shop",
    role=Role.SERVICE,
    practice_id=None,
    mfa=False,
    auth_time=None,
)
SUPPLIER_ACTOR = Actor(
    actor_id="supplier-network",
    name="Primoro supplier network",
    role=Role.SERVICE,
    practice_id=None,
    mfa=False,
    auth_time=None,
)

# The Communication Hub notification for a line reaching each stage.
NOTIFICATION = {
    LineState.SENT_TO_SUPPLIER: "sent_to_supplier",
    LineState.DISPATCHED: "shipment_dispatched",
    LineState.DELIVERED: "delivered",
    LineState.PREPARING: "preparing",
    LineState.READY_FOR_COLLECTION: "pickup_ready",
    LineState.COLLECTED: "collected",
    LineState.EXCEPTION: "delivery_exception",
    LineState.CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class Change:
    """Where a line should be, and what is known of it. None: not said (left as it is)."""

    status: LineState
    at: datetime | None = None  # when it happened (the supplier's time), else now
    carrier: str | None = None
    tracking_number: str | None = None
    tracking_url: str | None = None
    dispatched_at: datetime | None = None  # when the supplier says so; else `at`
    delivered_at: datetime | None = None
    reason: str | None = None  # for an exception
    resolution: str | None = None  # closes an open exception without moving the line
    note: str | None = None
    in_transit: bool = False  # the supplier's "in transit": no new stage, a notification
    reopen: bool = False  # an exception whose resolution failed is open again (the queue)


class LineFulfilment:
    def __init__(self, *, audit: AuditLog, outbox: Outbox, clock: Clock) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock

    @property
    def audit(self) -> AuditLog:
        return self._audit

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    @property
    def clock(self) -> Clock:
        return self._clock

    def lock(
        self, session: Session, line_item_id: uuid.UUID, *, order_id: uuid.UUID | None = None
    ) -> tuple[Order, OrderLine]:
        """The line and its order, locked (order first, then line: one lock order for all)."""
        found = session.get(OrderLine, line_item_id)
        if found is None or (order_id is not None and found.order_id != order_id):
            raise NotFound("No such order line.")
        order = session.get(Order, found.order_id, with_for_update=True)
        assert order is not None
        line = session.get(OrderLine, line_item_id, with_for_update=True, populate_existing=True)
        assert line is not None
        return order, line

    def apply(
        self, session: Session, order: Order, line: OrderLine, change: Change, actor: Actor
    ) -> bool:
        """Move the line (both locked by the caller); False when nothing changed."""
        kind = FulfilmentType(line.fulfilment_type)
        steps = path_to(kind, LineState(line.fulfilment_status), change.status)
        now = self._clock.now()
        at = change.at or now
        changed = False
        for step in steps:
            self._enter(line, step, change, at)
            self._record(session, order, line, step, actor, now, change.note)
            changed = True
        if not steps:
            changed = self._amend(session, order, line, change, actor, now, at)
        if not changed:
            return False
        line.updated_at = now
        self._follow_lines(session, order, actor, now)
        return True

    # ---- a stage --------------------------------------------------------------------------

    @staticmethod
    def _enter(line: OrderLine, step: LineState, change: Change, at: datetime) -> None:
        if line.fulfilment_status == LineState.EXCEPTION and step is not LineState.EXCEPTION:
            line.exception_reason = line.exception_since = line.exception_resolution = None
        line.fulfilment_status = step.value
        _tracking(line, change)
        if step is LineState.DISPATCHED and line.dispatched_at is None:
            line.dispatched_at = change.dispatched_at or at
        if step is LineState.DELIVERED:
            line.delivered_at = change.delivered_at or at
        elif step is LineState.COLLECTED:
            line.collected_at = at
        elif step is LineState.CANCELLED:
            line.cancellation = None  # done: the line says so itself
        elif step is LineState.EXCEPTION:
            line.exception_reason = change.reason or "other"
            line.exception_since = at
            line.exception_resolution = None

    def _amend(
        self,
        session: Session,
        order: Order,
        line: OrderLine,
        change: Change,
        actor: Actor,
        now: datetime,
        at: datetime,
    ) -> bool:
        """The line is at the stage already: record what is new about it (corrected tracking,
        in transit, an exception's reason or resolution); repeating the stage changes nothing."""
        before = _tracking_of(line)
        _tracking(line, change)
        moved_on = _tracking_of(line) != before
        resolved = False
        if line.fulfilment_status == LineState.EXCEPTION:
            if change.reason is not None and change.reason != line.exception_reason:
                line.exception_reason, moved_on = change.reason, True
            if change.reopen and line.exception_resolution is not None:
                line.exception_resolution, line.exception_since = None, at
                self._record(session, order, line, LineState.EXCEPTION, actor, now, change.note)
                return True
            if change.resolution is not None and change.resolution != line.exception_resolution:
                line.exception_resolution, moved_on, resolved = change.resolution, True, True
        if change.in_transit:
            self._record(session, order, line, None, actor, now, change.note, action="in_transit")
            return True
        if moved_on:
            action = "exception_resolved" if resolved else "updated"
            self._record(session, order, line, None, actor, now, change.note, action=action)
        return moved_on

    def _record(
        self,
        session: Session,
        order: Order,
        line: OrderLine,
        step: LineState | None,
        actor: Actor,
        now: datetime,
        note: str | None,
        *,
        action: str | None = None,
    ) -> None:
        """The audit entry and the Communication Hub event(s) of a stage (or of an update)."""
        name = action or (step.value if step else "updated")
        # whether a note came with it, never its text: the log is never rewritten, so it keeps
        # no personal free text
        details = {**line_record(line), "has_note": bool(note)}
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action=f"fulfilment.{name}",
            actor=actor.audit_actor(),
            practice_id=order.practice_id,
            after=details,
            at=now,
        )
        notification = (
            action
            if action in ("in_transit", "exception_resolved")
            else NOTIFICATION.get(step)
            if step
            else None
        )
        if notification is not None:
            self._outbox.emit(
                session,
                ev.FULFILMENT_STAGE_CHANGED,
                aggregate_id=line.line_item_id,
                data={
                    **_event_ids(order, line),
                    **line_event(line),
                    "notification": notification,
                    "occurred_at": now,
                },
                at=now,
            )
        if step is LineState.EXCEPTION:  # entered, or open again after a failed resolution
            self.staff_task(session, order, line, "resolve_fulfilment_exception", now)
            count_on_commit(session, FULFILMENT_EXCEPTIONS, reason=line.exception_reason or "other")

    def staff_task(
        self,
        session: Session,
        order: Order,
        line: OrderLine,
        task: str,
        now: datetime,
        *,
        first_name: str | None = None,
        stock: bool | None = None,
    ) -> None:
        self._outbox.emit(
            session,
            ev.STAFF_TASK,
            aggregate_id=line.line_item_id,
            data={
                "task": task,
                "order_id": order.order_id,
                "line_item_id": line.line_item_id,
                "practice_id": order.practice_id,
                "product_name": line.product_name,
                "quantity": line.quantity,
                "patient_first_name": first_name,
                "in_clinic_stock_available": stock,
                "exception_reason": line.exception_reason,
            },
            at=now,
        )

    # ---- the parent ---------------------------------------------------------------------

    def _follow_lines(self, session: Session, order: Order, actor: Actor, now: datetime) -> None:
        """The order's status is its least advanced line's (spec §3.3); Completed never goes
        back; Refunded stays an overlay."""
        session.flush()
        states = session.scalars(
            select(OrderLine.fulfilment_status).where(OrderLine.order_id == order.order_id)
        ).all()
        before = (order.status, order.fulfilment_status)
        following = advance_status(
            OrderStatus(order.fulfilment_status),
            fulfilment_status(LineState(state) for state in states),
        )
        order.fulfilment_status = following.value
        order.status = order_status(following, RefundStatus(order.refund_status)).value
        order.updated_at = now
        order.version += 1
        if (order.status, order.fulfilment_status) != before:
            self._audit.record(
                session,
                stream_type="order",
                stream_id=order.order_id,
                action="order.status_changed",
                actor=actor.audit_actor(),
                practice_id=order.practice_id,
                before={"status": before[0], "fulfilment_status": before[1]},
                after={"status": order.status, "fulfilment_status": order.fulfilment_status},
                at=now,
            )


def _tracking(line: OrderLine, change: Change) -> None:
    """What the change knows of the parcel, whatever stage it reaches: an update that skips a
    stage (an exception straight after acceptance) still carries when it was dispatched."""
    for name in ("carrier", "tracking_number", "tracking_url"):
        value = getattr(change, name)
        if value is not None:
            setattr(line, name, value)
    if change.dispatched_at is not None and line.dispatched_at is None:
        line.dispatched_at = change.dispatched_at


def _tracking_of(line: OrderLine) -> tuple[object, ...]:
    return (line.carrier, line.tracking_number, line.tracking_url, line.dispatched_at)


def _event_ids(order: Order, line: OrderLine) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "line_item_id": line.line_item_id,
        "patient_id": order.patient_id,
        "practice_id": order.practice_id,
    }


def line_event(line: Any) -> dict[str, Any]:
    """A line's stage for an event (an `OrderLine` or an `OrderLineRow`)."""
    return {
        "product_name": line.product_name,
        "quantity": line.quantity,
        "fulfilment_type": line.fulfilment_type,
        "status": line.fulfilment_status,
        "carrier": line.carrier,
        "tracking_number": line.tracking_number,
        "tracking_url": line.tracking_url,
        "dispatched_at": line.dispatched_at,
        "delivered_at": line.delivered_at,
        "collected_at": line.collected_at,
        "exception_reason": line.exception_reason,
    }


# Kept out of the audit trail, which is never rewritten (so neither re-encrypted nor erased
# when an order's personal data is, `orders/retention.py`): the parcel's number leads to its
# recipient at the carrier. The trail keeps its last four characters, enough to tell parcels
# apart; the line itself keeps the whole number, encrypted (migration 0019).
_NOT_AUDITED = ("product_name", "quantity", "fulfilment_type", "tracking_number", "tracking_url")


def line_record(line: Any) -> dict[str, Any]:
    """What the audit trail keeps of a line's stage (never a voucher code, never a whole
    tracking number or link)."""
    record = {"line_item_id": str(line.line_item_id), "product_name": line.product_name}
    record.update(
        {
            key: value
            for key, value in line_event(line).items()
            if value is not None and key not in _NOT_AUDITED
        }
    )
    if line.tracking_number:
        record["tracking_number_ends"] = line.tracking_number[-4:]
    if line.tracking_url:
        record["has_tracking_url"] = True
    if line.exception_resolution:
        record["exception_resolution"] = line.exception_resolution
    return record
