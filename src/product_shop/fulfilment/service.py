"""Fulfilment use cases for the practice's staff: move a line by hand, resend a drop-ship line to
the supplier network, and the two work lists (the open exception queue, in-clinic collections).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import same, scoped
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.tables import Checkout
from product_shop.core.clock import Clock
from product_shop.core.cursors import decode_cursor, encode_cursor
from product_shop.core.errors import Conflict, InvalidTransition, NotFound
from product_shop.core.ids import new_id
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.fulfilment.lines import Change, LineFulfilment
from product_shop.fulfilment.schemas import (
    FulfilmentUpdateIn,
    QueueItem,
    QueuePage,
    VoucherRedemptionIn,
    VoucherRedemptionOut,
)
from product_shop.fulfilment.shipments import shipment_request
from product_shop.fulfilment.vouchers import code_hash
from product_shop.orders.model import LineState
from product_shop.orders.tables import Order, OrderLine, Voucher

MAX_PAGE = 200


class FulfilmentService:
    def __init__(
        self, *, lines: LineFulfilment, outbox: Outbox, audit: AuditLog, clock: Clock
    ) -> None:
        self._lines = lines
        self._outbox = outbox
        self._audit = audit
        self._clock = clock

    def update_line(
        self,
        session: Session,
        actor: Actor,
        order_id: uuid.UUID,
        line_item_id: uuid.UUID,
        body: FulfilmentUpdateIn,
    ) -> Order:
        """The staff member's change to one line of their practice's order (404 for another
        practice's). Repeating the line's current status changes nothing."""
        require(actor, Action.MANAGE_FULFILMENT)
        order, line = self._lines.lock(session, line_item_id, order_id=order_id)
        if not same(order.practice_id, actor.practice_id):
            raise NotFound("No such order line.")
        current = LineState(line.fulfilment_status)
        if body.status is LineState.CANCELLED:
            raise InvalidTransition(
                "A line is cancelled only by a refund (POST /v1/orders/{order_id}/refunds), "
                "which stops it where it can.",
                code="invalid_fulfilment_transition",
            )
        drop_ship = line.fulfilment_type == FulfilmentType.DROP_SHIP
        if drop_ship and current is LineState.PENDING:
            raise InvalidTransition(
                "This line is with the supplier network, which has not answered yet; it can be "
                "changed once the supplier has it (or has refused it).",
                code="invalid_fulfilment_transition",
            )
        if (
            drop_ship
            and current is LineState.EXCEPTION
            and body.status is LineState.SENT_TO_SUPPLIER
        ):
            if line.exception_resolution != "resent":  # a second click sends nothing more
                self._resend(session, order, line, actor, body.note)
            return order
        if body.status is LineState.SENT_TO_SUPPLIER and current is not LineState.SENT_TO_SUPPLIER:
            raise InvalidTransition(
                "Only the supplier network accepts a shipment; to send a line in exception "
                "again, use sent_to_supplier on it.",
                code="invalid_fulfilment_transition",
            )
        change = Change(
            body.status,
            carrier=body.carrier,
            tracking_number=body.tracking_number,
            tracking_url=body.tracking_url,
            reason=body.reason,
            resolution=body.resolution,
            note=body.note,
        )
        self._lines.apply(session, order, line, change, actor)
        return order

    def _resend(
        self, session: Session, order: Order, line: OrderLine, actor: Actor, note: str | None
    ) -> None:
        """A new submission to the supplier network (its own Idempotency-Key); the exception
        leaves the queue as `resent` until the supplier answers."""
        checkout = session.get(Checkout, order.checkout_id)
        assert checkout is not None
        now = self._clock.now()
        line.shipment_attempt += 1
        line.fulfilment_ref = None
        line.supplier_sequence = 0
        self._lines.apply(
            session,
            order,
            line,
            Change(LineState.EXCEPTION, resolution="resent", note=note),
            actor,
        )
        self._outbox.emit(
            session,
            ev.SHIPMENT_REQUESTED,
            aggregate_id=line.line_item_id,
            data=shipment_request(
                order.order_id, order.practice_id, line, checkout.delivery_address
            ),
            at=now,
        )

    # ---- vouchers ----------------------------------------------------------------------------

    def redeem_voucher(
        self, session: Session, actor: Actor, body: VoucherRedemptionIn
    ) -> VoucherRedemptionOut:
        """The practice takes a patient's digital voucher (spec §6.1 Digital): it is used once.
        A code of another practice is unknown here (404); a used or refunded (void) one is 409.
        The audit entry keeps the last four characters only."""
        require(actor, Action.MANAGE_FULFILMENT)
        found = session.scalar(select(Voucher).where(Voucher.code_hash == code_hash(body.code)))
        # The order first, then the voucher: the lock order of every writer of an order (its
        # audit stream is appended to below).
        order = (
            session.get(Order, found.order_id, with_for_update=True) if found is not None else None
        )
        if found is None or order is None or not same(order.practice_id, actor.practice_id):
            raise NotFound("No such voucher at this practice.", code="voucher_not_found")
        found = session.get(Voucher, found.voucher_id, with_for_update=True, populate_existing=True)
        assert found is not None
        if found.voided_at is not None:
            raise Conflict("This voucher was refunded and is void.", code="voucher_void")
        if found.redeemed_at is not None:
            raise Conflict(
                f"This voucher was used on {found.redeemed_at:%Y-%m-%d}.", code="voucher_used"
            )
        line = session.get(OrderLine, found.line_item_id)
        assert line is not None
        now = self._clock.now()
        found.redeemed_at = now
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="fulfilment.voucher_redeemed",
            actor=actor.audit_actor(),
            practice_id=order.practice_id,
            after={
                "line_item_id": str(line.line_item_id),
                "product_name": line.product_name,
                "voucher_id": str(found.voucher_id),
                "last_four": found.last_four,
            },
            at=now,
        )
        return VoucherRedemptionOut(
            voucher_id=found.voucher_id,
            order_id=order.order_id,
            line_item_id=line.line_item_id,
            product_name=line.product_name,
            last_four=found.last_four,
            redeemed_at=now,
        )

    # ---- the work lists ------------------------------------------------------------------

    def exceptions(
        self, session: Session, actor: Actor, *, limit: int, cursor: str | None
    ) -> QueuePage:
        """The practice's open exceptions, oldest first (spec §15.4)."""
        return self._page(
            session,
            actor,
            "fulfilment.exceptions_listed",
            and_(
                OrderLine.fulfilment_status == LineState.EXCEPTION.value,
                OrderLine.exception_resolution.is_(None),
            ),
            OrderLine.exception_since,
            limit=limit,
            cursor=cursor,
        )

    def collections(
        self, session: Session, actor: Actor, *, limit: int, cursor: str | None
    ) -> QueuePage:
        """In-clinic lines being prepared or ready for collection, oldest first."""
        return self._page(
            session,
            actor,
            "fulfilment.collections_listed",
            and_(
                OrderLine.fulfilment_type == FulfilmentType.IN_CLINIC.value,
                OrderLine.fulfilment_status.in_(
                    [LineState.PREPARING.value, LineState.READY_FOR_COLLECTION.value]
                ),
            ),
            OrderLine.updated_at,
            limit=limit,
            cursor=cursor,
        )

    def _page(
        self,
        session: Session,
        actor: Actor,
        action: str,
        condition: Any,
        since: Any,
        *,
        limit: int,
        cursor: str | None,
    ) -> QueuePage:
        """A page of a work list; the read is audited (spec §8: reads of patient-bound
        fulfilment records), like an order read: its own one-entry stream naming who read
        which orders' lines."""
        require(actor, Action.MANAGE_FULFILMENT)
        statement = (
            select(OrderLine, Order.patient_id)
            .join(Order, Order.order_id == OrderLine.order_id)
            .where(scoped(Order.practice_id, actor.practice_id), condition)
        )
        if cursor is not None:
            at, last = decode_cursor(cursor)
            statement = statement.where(
                or_(since > at, and_(since == at, OrderLine.line_item_id > last))
            )
        limit = max(1, min(limit, MAX_PAGE))
        rows = session.execute(
            statement.order_by(since, OrderLine.line_item_id).limit(limit + 1)
        ).all()
        page, more = rows[:limit], len(rows) > limit
        items = [_item(line, patient_id) for line, patient_id in page]
        next_cursor = encode_cursor(items[-1].since, items[-1].line_item_id) if more else None
        self._audit.record(
            session,
            stream_type="order_read",
            stream_id=new_id(),
            new_stream=True,
            action=action,
            actor=actor.audit_actor(),
            practice_id=actor.practice_id,
            after={
                "order_ids": list(dict.fromkeys(str(item.order_id) for item in items)),
                "line_item_ids": [str(item.line_item_id) for item in items],
            },
        )
        return QueuePage(items=items, next_cursor=next_cursor)


def _item(line: OrderLine, patient_id: uuid.UUID) -> QueueItem:
    since = (
        line.exception_since
        if line.fulfilment_status == LineState.EXCEPTION and line.exception_since
        else line.updated_at
    )
    return QueueItem(
        order_id=line.order_id,
        line_item_id=line.line_item_id,
        patient_id=patient_id,
        product_id=line.product_id,
        product_name=line.product_name,
        quantity=line.quantity,
        fulfilment_type=FulfilmentType(line.fulfilment_type),
        fulfilment_status=LineState(line.fulfilment_status),
        exception_reason=line.exception_reason,
        carrier=line.carrier,
        tracking_number=line.tracking_number,
        since=since,
    )
