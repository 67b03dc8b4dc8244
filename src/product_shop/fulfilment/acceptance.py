"""The supplier network took a drop-ship line's submission: the relay's follow-up, as rows.

The relay runs this once per drop-ship line (`shipments.ShipmentFollowUp.delivered`), so it is
a few Core statements through `db.fast.Statements` rather than ORM loads and flushes
(docs/benchmarks.md, session 9: the ORM version was about half of the relay's CPU). What it
writes is exactly what `LineFulfilment.apply` writes for `Change(SENT_TO_SUPPLIER)` by the
supplier network (`lines.py`); tests/integration/test_shipment_follow_up.py holds the two equal.

1. One round trip of reads (PostgreSQL: one pipeline, which the server runs statement after
   statement): the order locked, then the line locked (one lock order for all: order, then
   line), the states of the order's lines, and the head of the order's audit stream (read
   after the order's lock, as `AuditLog` would read it).
2. The writes, queued: they go out with the unit of work's COMMIT (one round trip on
   PostgreSQL). The line's conditional UPDATE; its audit entry (and the order's status change,
   if any) through `AuditLog.row`, so the stream's chain goes on; its Communication Hub event
   through `Outbox.row` (the payload is encrypted by the outbox's column type on the way); the
   order's UPDATE (`updated_at` and `version` bumped, the status if it changed: what `apply`
   does whenever a line moved).

Nothing here begins or commits a transaction: the relay's unit of work owns it.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import String, bindparam, cast, select
from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.model import FulfilmentType
from product_shop.core.clock import Clock
from product_shop.core.errors import InvalidTransition, NotFound
from product_shop.db.fast import Row, Statements
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.events.tables import OutboxEvent
from product_shop.fulfilment.lines import NOTIFICATION, SUPPLIER_ACTOR, line_event, line_record
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

_STREAM = "order"
_ACCEPTED = LineState.SENT_TO_SUPPLIER
# The order of the line given as `line` (a scalar subquery, so the reads need no order id).
_ORDER_OF_LINE = (
    select(OrderLine.order_id).where(OrderLine.line_item_id == bindparam("line")).scalar_subquery()
)
ORDER_LOCKED = (
    select(
        Order.order_id,
        Order.practice_id,
        Order.patient_id,
        Order.status,
        Order.fulfilment_status,
        Order.refund_status,
        Order.version,
    )
    .where(Order.order_id == _ORDER_OF_LINE)
    .with_for_update()
)
LINE_LOCKED = (
    select(
        OrderLine.line_item_id,
        OrderLine.order_id,
        OrderLine.product_name,
        OrderLine.quantity,
        OrderLine.fulfilment_type,
        OrderLine.fulfilment_status,
        OrderLine.fulfilment_ref,
        OrderLine.carrier,
        OrderLine.tracking_number,
        OrderLine.tracking_url,
        OrderLine.dispatched_at,
        OrderLine.delivered_at,
        OrderLine.collected_at,
        OrderLine.exception_reason,
        OrderLine.exception_resolution,
        OrderLine.supplier_sequence,
        OrderLine.shipment_attempt,
    )
    .where(OrderLine.line_item_id == bindparam("line"))
    .with_for_update()
)
# Every line's state (the line given included, as it is before this change).
LINE_STATES = select(OrderLine.line_item_id, OrderLine.fulfilment_status).where(
    OrderLine.order_id == _ORDER_OF_LINE
)
# The order's audit stream head (`audit.log.STREAM_HEAD`, for the line's order). PostgreSQL
# only: its uuid as text is the stream id (`str(uuid)`); SQLite stores uuids as bare hex, so
# there the log looks the head up itself (no round trip is saved there anyway).
STREAM_HEAD_OF_LINE = (
    select(AuditEntry.stream_seq, AuditEntry.entry_hash)
    .where(
        AuditEntry.stream_type == _STREAM,
        AuditEntry.stream_id == cast(_ORDER_OF_LINE, String),
    )
    .order_by(AuditEntry.stream_seq.desc())
    .limit(1)
)


def awaiting_acceptance(line: Any) -> bool:
    """Whether the line waits for the supplier to take its current submission: never sent, or
    resent after an exception and not heard of since (an `OrderLine` or a row)."""
    if line.fulfilment_status == LineState.PENDING:
        return True
    return bool(
        line.fulfilment_status == LineState.EXCEPTION
        and line.exception_resolution == "resent"
        and line.supplier_sequence == 0
    )


class SubmissionAccepted:
    """`ShipmentFollowUp.delivered` as rows (see the module's docstring)."""

    def __init__(self, *, audit: AuditLog, outbox: Outbox, clock: Clock) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock

    def record(
        self, session: Session, line_item_id: uuid.UUID, attempt: int, shipment_id: str
    ) -> bool:
        """The supplier network took submission `attempt` of the line as `shipment_id`. True
        when the line moved to `sent_to_supplier`; False when nothing but, perhaps, the
        supplier's shipment id was written (an older submission, a line the supplier's callbacks
        moved already, or one that cannot be sent)."""
        fast = Statements(session)
        order, line, states = self._read(session, fast, line_item_id)
        if line.shipment_attempt != attempt:
            return False  # an older submission: the line was resent since
        values: Row = {}
        if line.fulfilment_ref is None:
            values["fulfilment_ref"] = line.fulfilment_ref = shipment_id
        # The line is locked (LINE_LOCKED, read above in this unit of work): its key alone. A
        # status or attempt in the WHERE would add nothing but a plan: a planner without
        # statistics read the line through the index on `fulfilment_status` instead of its key,
        # every line in that state per update (bench/checkout_bench.py, session 12).
        where = {"line_item_id": line.line_item_id}
        if not awaiting_acceptance(line) or not _can_accept(line):
            # The supplier's callbacks got there first (accepted, dispatched, exception), or
            # the line is not one the supplier sends: only its shipment id is new.
            if values:
                fast.update(OrderLine, where, values)
            return False
        now = self._clock.now()
        if line.fulfilment_status == LineState.EXCEPTION:  # a resend taken: no longer open
            values["exception_reason"] = line.exception_reason = None
            values["exception_since"] = None
            values["exception_resolution"] = line.exception_resolution = None
        values["fulfilment_status"] = line.fulfilment_status = _ACCEPTED.value
        values["updated_at"] = now
        fast.update(OrderLine, where, values)
        who = SUPPLIER_ACTOR.audit_actor()
        entries = [
            self._audit.row(
                session,
                stream_type=_STREAM,
                stream_id=order["order_id"],
                action=f"fulfilment.{_ACCEPTED.value}",
                actor=who,
                practice_id=order["practice_id"],
                after={**line_record(line), "has_note": False},
                at=now,
            )
        ]
        event = self._outbox.row(
            ev.FULFILMENT_STAGE_CHANGED,
            aggregate_id=line.line_item_id,
            data={
                "order_id": order["order_id"],
                "line_item_id": line.line_item_id,
                "patient_id": order["patient_id"],
                "practice_id": order["practice_id"],
                **line_event(line),
                "notification": NOTIFICATION[_ACCEPTED],
                "occurred_at": now,
            },
            at=now,
        )
        following = _order_follows(order, states, line, now)
        if following is not None and (following["status"], following["fulfilment_status"]) != (
            order["status"],
            order["fulfilment_status"],
        ):
            entries.append(
                self._audit.row(
                    session,
                    stream_type=_STREAM,
                    stream_id=order["order_id"],
                    action="order.status_changed",
                    actor=who,
                    practice_id=order["practice_id"],
                    before={
                        "status": order["status"],
                        "fulfilment_status": order["fulfilment_status"],
                    },
                    after={
                        "status": following["status"],
                        "fulfilment_status": following["fulfilment_status"],
                    },
                    at=now,
                )
            )
        fast.insert(AuditEntry, entries)
        fast.insert(OutboxEvent, [event])
        if following is not None:
            fast.update(
                Order, {"order_id": order["order_id"], "version": order["version"]}, following
            )
        return True

    def _read(
        self, session: Session, fast: Statements, line_item_id: uuid.UUID
    ) -> tuple[Row, SimpleNamespace, list[Row]]:
        """The order and the line, locked, and the order's line states, in one round trip; the
        order's audit stream head told to the log (PostgreSQL)."""
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres and fast.pending:
            fast.flush()  # the stream head read below must see every entry of this transaction
        params = {"line": line_item_id}
        queries = [(ORDER_LOCKED, params), (LINE_LOCKED, params), (LINE_STATES, params)]
        if postgres:
            queries.append((STREAM_HEAD_OF_LINE, params))
        found = fast.many(*queries)
        if not found[0] or not found[1]:
            raise NotFound("No such order line.")
        order, line = found[0][0], SimpleNamespace(**found[1][0])
        if postgres:
            heads = found[3]
            self._audit.note_head(session, _STREAM, order["order_id"], heads[0] if heads else None)
        return order, line, found[2]


def _can_accept(line: SimpleNamespace) -> bool:
    """Whether the line's transition table takes it to `sent_to_supplier` in one step (a
    drop-ship line pending or resent); `apply` would refuse any other line (InvalidTransition),
    and the ORM follow-up wrote nothing but the shipment id then."""
    try:
        steps = path_to(
            FulfilmentType(line.fulfilment_type), LineState(line.fulfilment_status), _ACCEPTED
        )
    except InvalidTransition:
        return False
    return steps == [_ACCEPTED]


def _order_follows(order: Row, states: list[Row], line: SimpleNamespace, now: Any) -> Row | None:
    """The order's new values once the line moved (`LineFulfilment._follow_lines`): its status
    follows its least advanced line; `updated_at` and `version` move on in any case. None when
    the order may not follow (a completed order would go back; `apply` raised then, after the
    line's writes, and the follow-up kept them)."""
    current = (
        line.fulfilment_status
        if state["line_item_id"] == line.line_item_id
        else state["fulfilment_status"]
        for state in states
    )
    try:
        following = advance_status(
            OrderStatus(order["fulfilment_status"]),
            fulfilment_status(LineState(state) for state in current),
        )
    except InvalidTransition:
        return None
    return {
        "fulfilment_status": following.value,
        "status": order_status(following, RefundStatus(order["refund_status"])).value,
        "updated_at": now,
        "version": order["version"] + 1,
    }
