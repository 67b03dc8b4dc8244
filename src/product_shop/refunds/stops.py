"""Refunded lines stop where they can (spec §3.3, §5.3, §6): an in-clinic line not collected is
cancelled (its collection task withdrawn), a drop-ship parcel not dispatched is cancelled at the
supplier network, refunded vouchers not used are voided. A parcel on its way, or goods handed
over, cannot be stopped: the line keeps its state and shows the units refunded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.audit.log import AuditLog
from product_shop.catalogue.model import FulfilmentType
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.fulfilment.lines import Change, LineFulfilment
from product_shop.fulfilment.shipments import shipment_reference
from product_shop.orders.model import LineState
from product_shop.orders.tables import Order, OrderLine, Voucher

# Drop-ship states whose parcel has not left: the supplier network is asked to cancel it.
_STOPPABLE_SHIPMENT = frozenset(
    {LineState.PENDING, LineState.SENT_TO_SUPPLIER, LineState.EXCEPTION}
)
# In-clinic states before collection: the collection task is withdrawn.
_STOPPABLE_COLLECTION = frozenset(
    {
        LineState.PENDING,
        LineState.PREPARING,
        LineState.READY_FOR_COLLECTION,
        LineState.EXCEPTION,
    }
)


class RefundedLines:
    def __init__(self, *, lines: LineFulfilment, audit: AuditLog, outbox: Outbox) -> None:
        self._lines = lines
        self._audit = audit
        self._outbox = outbox

    def stop(
        self,
        session: Session,
        order: Order,
        line: OrderLine,
        quantity: int,
        staff: Actor,
        now: datetime,
    ) -> None:
        """A refunded line stops where it can: an in-clinic line not collected is cancelled (its
        collection task withdrawn), a drop-ship parcel not dispatched is cancelled at the supplier
        network, refunded vouchers not used are voided. A parcel on its way, or goods handed over,
        cannot be stopped: the line keeps its state and shows the units refunded."""
        state = LineState(line.fulfilment_status)
        kind = FulfilmentType(line.fulfilment_type)
        if kind is FulfilmentType.DIGITAL:
            self._void_vouchers(session, line, quantity, now)
        if line.refunded_quantity < line.quantity:
            return  # part of the line refunded: the rest still goes to the patient
        if kind is FulfilmentType.IN_CLINIC and state in _STOPPABLE_COLLECTION:
            self._lines.apply(
                session,
                order,
                line,
                Change(LineState.CANCELLED, note="Refunded: the collection is withdrawn."),
                staff,
            )
            self._lines.staff_task(session, order, line, "collection_withdrawn", now)
        elif (
            kind is FulfilmentType.DROP_SHIP
            and state in _STOPPABLE_SHIPMENT
            and line.dispatched_at is None
            and line.cancellation is None
        ):
            line.cancellation = "requested"
            self._audit.record(
                session,
                stream_type="order",
                stream_id=order.order_id,
                action="fulfilment.cancellation_requested",
                actor=staff.audit_actor(),
                practice_id=order.practice_id,
                after={
                    "line_item_id": str(line.line_item_id),
                    "product_name": line.product_name,
                    "status": line.fulfilment_status,
                },
                at=now,
            )
            self._outbox.emit(
                session,
                ev.SHIPMENT_CANCELLATION_REQUESTED,
                aggregate_id=line.line_item_id,
                data={
                    "order_id": order.order_id,
                    "line_item_id": line.line_item_id,
                    "practice_id": order.practice_id,
                    "attempt": line.shipment_attempt,
                    "reference": shipment_reference(line.line_item_id, line.shipment_attempt),
                    "shipment_id": line.fulfilment_ref,
                },
                at=now,
            )
        elif kind is FulfilmentType.DIGITAL and state in (LineState.PENDING, LineState.EXCEPTION):
            self._lines.apply(
                session,
                order,
                line,
                Change(LineState.CANCELLED, note="Refunded before the vouchers were issued."),
                staff,
            )

    def _void_vouchers(
        self, session: Session, line: OrderLine, quantity: int, now: datetime
    ) -> None:
        """Void `quantity` of the line's vouchers that are neither used nor void yet."""
        vouchers = session.scalars(
            select(Voucher)
            .where(
                Voucher.line_item_id == line.line_item_id,
                Voucher.redeemed_at.is_(None),
                Voucher.voided_at.is_(None),
            )
            .order_by(Voucher.unit_no.desc())
            .limit(quantity)
            .with_for_update()
        )
        for voucher in vouchers:
            voucher.voided_at = now
