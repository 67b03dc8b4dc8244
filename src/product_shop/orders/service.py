"""Order use cases that change an order outside fulfilment and refunds."""

from __future__ import annotations

import uuid
from dataclasses import asdict

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import same
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.core.clock import Clock
from product_shop.core.errors import NotFound, PreconditionFailed
from product_shop.core.ids import new_id
from product_shop.fulfilment.vouchers import voucher_code
from product_shop.orders.queries import (
    OrderFilters,
    list_orders,
    load_visible,
    order_document,
    order_document_for,
)
from product_shop.orders.schemas import OrderOut, OrderPage, PatientOrderOut
from product_shop.orders.tables import Order


class OrderService:
    def __init__(self, *, audit: AuditLog, clock: Clock, voucher_key: bytes) -> None:
        self._audit = audit
        self._clock = clock
        self._voucher_key = voucher_key

    def reveal(self, voucher_id: uuid.UUID) -> str:
        """A voucher's full code, for its owning patient's own order only."""
        return voucher_code(self._voucher_key, voucher_id)

    def set_pms_invoice_ref(
        self,
        session: Session,
        actor: Actor,
        order_id: uuid.UUID,
        reference: str | None,
        *,
        expected_version: int | None = None,
    ) -> Order:
        """Store the optional PMS invoice reference (spec §5.2). It is an enrichment field only:
        nothing waits for it and nothing is written to any PMS (spec §8.1). With
        `expected_version` (If-Match), a write based on a stale read is refused (412)."""
        require(actor, Action.SET_PMS_INVOICE_REF)
        order = session.get(Order, order_id, with_for_update=True)
        if order is None or not same(order.practice_id, actor.practice_id):
            raise NotFound("No such order.")
        if expected_version is not None and expected_version != order.version:
            raise PreconditionFailed(
                f"The order changed since you read it (version {order.version}, "
                f"If-Match {expected_version}).",
                code="version_mismatch",
            )
        if order.pms_invoice_ref == reference:
            return order
        before = order.pms_invoice_ref
        now = self._clock.now()
        order.pms_invoice_ref = reference
        order.updated_at = now
        order.version += 1
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="order.pms_invoice_ref_set",
            actor=actor.audit_actor(),
            practice_id=order.practice_id,
            before={"pms_invoice_ref": before},
            after={"pms_invoice_ref": reference},
            at=now,
        )
        return order

    def read_order(
        self, session: Session, actor: Actor, order_id: uuid.UUID
    ) -> OrderOut | PatientOrderOut:
        """One order for a caller who may see it, in the view their role gets (a patient never
        sees the internal audit trail); the read is audited (spec §8)."""
        order = load_visible(session, actor, order_id)
        self._record_order_read(session, actor, order)
        return order_document_for(session, actor, order, self.reveal)

    def read_for_refund(self, session: Session, actor: Actor, order_id: uuid.UUID) -> OrderOut:
        """One order of the caller's practice, for a staff member who may refund it (the refund
        form's lines and amounts): refunding is theirs even where viewing every practice order
        is not (spec §9: finance initiates refunds but does not browse orders). Audited as a
        read, with its purpose."""
        require(actor, Action.INITIATE_REFUND)
        order = session.get(Order, order_id)
        if order is None or not same(order.practice_id, actor.practice_id):
            raise NotFound("No such order.")
        self._record_order_read(session, actor, order, purpose="refund")
        return order_document(session, order)

    def _record_order_read(
        self, session: Session, actor: Actor, order: Order, **details: object
    ) -> None:
        self.record_read(
            session,
            actor,
            order_ids=[order.order_id],
            action="order.read",
            practice_id=order.practice_id,
            details=details or None,
        )

    def list_orders(
        self,
        session: Session,
        actor: Actor,
        filters: OrderFilters,
        *,
        limit: int,
        cursor: str | None,
        own: bool,
    ) -> OrderPage:
        """A page of the patient's own orders (`own`) or of the practice's; the read is audited."""
        page = list_orders(session, actor, filters, limit=limit, cursor=cursor, own=own)
        details: dict[str, object] = {
            "filters": {k: str(v) for k, v in asdict(filters).items() if v is not None}
        }
        self.record_read(
            session,
            actor,
            order_ids=[item.order_id for item in page.items],
            action="orders.listed_own" if own else "orders.listed",
            practice_id=actor.practice_id,
            details=None if own else details,
        )
        return page

    def record_read(
        self,
        session: Session,
        actor: Actor,
        *,
        order_ids: list[uuid.UUID],
        action: str,
        practice_id: uuid.UUID | None,
        details: dict[str, object] | None = None,
    ) -> None:
        """Spec §8: every read of patient-bound order records is logged, with who and what.

        Each read is its own one-entry stream, so concurrent reads never contend for a stream
        position; tamper evidence across streams comes from the audit checkpoints."""
        self._audit.record(
            session,
            stream_type="order_read",
            stream_id=new_id(),
            new_stream=True,
            action=action,
            actor=actor.audit_actor(),
            practice_id=practice_id,
            after={"order_ids": [str(order_id) for order_id in order_ids], **(details or {})},
        )
