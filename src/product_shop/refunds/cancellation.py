"""The patient's right to cancel (distance selling, spec §16 Privacy).

A patient may ask to cancel an order: an undispatched drop-ship line at once, anything else
within the cancellation period after delivery or collection (setting, default 14 days). The
request is a task for the practice's staff and an audit entry; it refunds nothing by itself —
the refund is made by named staff with MFA like any other (spec §3.3, §5.3). Digital vouchers
already used are not covered by this path, and the answer says so line by line.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import same, scoped
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.catalogue.model import FulfilmentType
from product_shop.core.clock import Clock
from product_shop.core.cursors import decode_cursor, encode_cursor
from product_shop.core.errors import Conflict, NotFound, Unprocessable
from product_shop.core.ids import new_id
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.orders.model import LineState
from product_shop.orders.tables import Order, OrderLine, Voucher
from product_shop.refunds.schemas import (
    CancellationIn,
    CancellationLineOut,
    CancellationRequestOut,
    CancellationRequestPage,
)
from product_shop.refunds.tables import CancellationRequest

NEXT_STEPS = (
    "Your request has been sent to the practice. A member of staff will review it and refund "
    "the items covered to your original payment method."
)
SOME_NOT_COVERED = " Some items cannot be cancelled this way; each line says why."

MAX_PAGE = 200  # the page size every list caps at (tests/integration/test_abuse_limits.py)


class CancellationRequests:
    def __init__(self, *, audit: AuditLog, outbox: Outbox, clock: Clock, period: timedelta) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock
        self._period = period

    def request(
        self, session: Session, actor: Actor, order_id: uuid.UUID, body: CancellationIn
    ) -> CancellationRequestOut:
        """The owning patient's request (404 for anyone else's order). Refused when no line
        may be cancelled by this path (422 `not_cancellable`, each line saying why) or when a
        request is already open (409 `cancellation_already_requested`)."""
        require(actor, Action.REQUEST_CANCELLATION)
        order = session.get(Order, order_id, with_for_update=True)
        if order is None or not same(order.patient_id, actor.patient_id):
            raise NotFound("No such order.")
        open_request = session.scalar(
            select(CancellationRequest.request_id).where(
                CancellationRequest.order_id == order_id, CancellationRequest.status == "open"
            )
        )
        if open_request is not None:
            raise Conflict(
                "You have already asked to cancel this order; the practice will be in touch.",
                code="cancellation_already_requested",
                request_id=str(open_request),
            )
        now = self._clock.now()
        lines = [
            self._assess(session, line, now)
            for line in session.scalars(
                select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.line_no)
            )
        ]
        if not any(line.cancellable for line in lines):
            raise Unprocessable(
                "Nothing in this order can be cancelled this way: "
                + " ".join(f"{line.name}: {line.explanation}" for line in lines),
                code="not_cancellable",
                lines=[line.model_dump(mode="json") for line in lines],
            )
        request = CancellationRequest(
            request_id=new_id(),
            order_id=order.order_id,
            practice_id=order.practice_id,
            patient_id=order.patient_id,
            status="open",
            reason=body.reason,
            lines=[line.model_dump(mode="json") for line in lines],
            requested_at=now,
        )
        session.add(request)
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="order.cancellation_requested",
            actor=actor.audit_actor(),
            practice_id=order.practice_id,
            after={
                "request_id": str(request.request_id),
                "lines": [
                    {
                        "line_item_id": str(line.line_item_id),
                        "quantity": line.quantity,
                        "cancellable": line.cancellable,
                    }
                    for line in lines
                ],
                "reason_given": body.reason is not None,
            },
            at=now,
        )
        self._outbox.emit(
            session,
            ev.ORDER_CANCELLATION_REQUESTED,
            aggregate_id=order.order_id,
            data={
                "request_id": request.request_id,
                "order_id": order.order_id,
                "practice_id": order.practice_id,
                "patient_id": order.patient_id,
                "task": "review_cancellation_request",
                "lines": [
                    {
                        "line_item_id": line.line_item_id,
                        "product_name": line.name,
                        "quantity": line.quantity,
                        "cancellable": line.cancellable,
                    }
                    for line in lines
                ],
                "notification": "cancellation_requested",
                "requested_at": now,
            },
            at=now,
        )
        return request_out(request)

    def _assess(self, session: Session, line: OrderLine, now: datetime) -> CancellationLineOut:
        left = line.quantity - line.refunded_quantity - line.refund_pending_quantity
        state = LineState(line.fulfilment_status)
        kind = FulfilmentType(line.fulfilment_type)
        days = self._period.days

        def answer(
            cancellable: bool, explanation: str, quantity: int = left
        ) -> CancellationLineOut:
            return CancellationLineOut(
                line_item_id=line.line_item_id,
                name=line.product_name,
                quantity=quantity if cancellable else left,
                cancellable=cancellable,
                explanation=explanation,
            )

        if left <= 0:
            return answer(False, "Already refunded.")
        if state is LineState.CANCELLED:
            return answer(False, "Already cancelled.")
        if kind is FulfilmentType.DIGITAL:
            usable = session.scalar(
                select(func.count())
                .select_from(Voucher)
                .where(
                    Voucher.line_item_id == line.line_item_id,
                    Voucher.redeemed_at.is_(None),
                    Voucher.voided_at.is_(None),
                )
            )
            if line.delivered_at is not None and now - line.delivered_at > self._period:
                return answer(False, f"The {days}-day cancellation period has ended.")
            if not usable:
                return answer(
                    False, "Digital vouchers already used are not refundable by this path."
                )
            if usable < left:
                return answer(
                    True,
                    f"{left - usable} voucher(s) already used are not refundable by this path; "
                    f"the {usable} unused may be cancelled.",
                    quantity=usable,
                )
            return answer(True, f"Within the {days}-day cancellation period.")
        finished_at = line.delivered_at if kind is FulfilmentType.DROP_SHIP else line.collected_at
        if finished_at is None:
            if kind is FulfilmentType.DROP_SHIP and line.dispatched_at is None:
                return answer(True, "Not dispatched yet: it can be cancelled at once.")
            if kind is FulfilmentType.DROP_SHIP:
                return answer(True, f"On its way: you may cancel until {days} days after delivery.")
            return answer(True, "Not collected yet: it can be cancelled at once.")
        if now - finished_at > self._period:
            return answer(False, f"The {days}-day cancellation period has ended.")
        return answer(True, f"Within the {days}-day cancellation period.")

    def get(self, session: Session, actor: Actor, request_id: uuid.UUID) -> CancellationRequestOut:
        """One request: for the patient who made it, or staff of the practice."""
        found = session.get(CancellationRequest, request_id)
        if actor.is_patient:
            require(actor, Action.REQUEST_CANCELLATION)
            visible = found is not None and same(found.patient_id, actor.patient_id)
        else:
            require(actor, Action.VIEW_CANCELLATION_REQUESTS)
            visible = found is not None and same(found.practice_id, actor.practice_id)
        if found is None or not visible:
            raise NotFound("No such cancellation request.")
        return request_out(found)

    def list_requests(
        self,
        session: Session,
        actor: Actor,
        *,
        status: str | None,
        limit: int,
        cursor: str | None = None,
    ) -> CancellationRequestPage:
        """The practice's cancellation requests, oldest first (open ones by default), a page
        at a time: `next_cursor` continues after the page's last request."""
        require(actor, Action.VIEW_CANCELLATION_REQUESTS)
        statement = select(CancellationRequest).where(
            scoped(CancellationRequest.practice_id, actor.practice_id)
        )
        if status is not None:
            statement = statement.where(CancellationRequest.status == status)
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            statement = statement.where(
                or_(
                    CancellationRequest.requested_at > at,
                    and_(
                        CancellationRequest.requested_at == at,
                        CancellationRequest.request_id > last_id,
                    ),
                )
            )
        limit = max(1, min(limit, MAX_PAGE))
        rows = list(
            session.scalars(
                statement.order_by(
                    CancellationRequest.requested_at, CancellationRequest.request_id
                ).limit(limit + 1)
            )
        )
        page, more = rows[:limit], len(rows) > limit
        next_cursor = encode_cursor(page[-1].requested_at, page[-1].request_id) if more else None
        return CancellationRequestPage(
            items=[request_out(row) for row in page], next_cursor=next_cursor
        )


def request_out(request: CancellationRequest) -> CancellationRequestOut:
    lines = [CancellationLineOut.model_validate(line) for line in request.lines]
    covered_all = all(line.cancellable for line in lines)
    return CancellationRequestOut(
        request_id=request.request_id,
        order_id=request.order_id,
        patient_id=request.patient_id,
        practice_id=request.practice_id,
        status=request.status,
        reason=request.reason,
        requested_at=request.requested_at,
        resolved_at=request.resolved_at,
        refund_id=request.refund_id,
        lines=lines,
        message=NEXT_STEPS + ("" if covered_all else SOME_NOT_COVERED),
    )


def resolve_open_requests(
    session: Session, order_id: uuid.UUID, refund_id: uuid.UUID, now: datetime
) -> None:
    """A refund of the order resolves the patient's open cancellation requests."""
    for request in session.scalars(
        select(CancellationRequest).where(
            CancellationRequest.order_id == order_id, CancellationRequest.status == "open"
        )
    ):
        request.status, request.resolved_at = "refunded", now
        request.refund_id = refund_id
