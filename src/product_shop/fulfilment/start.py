"""Starting fulfilment when an order is born (spec §6.2, §15.2 rule 3), in the order's own unit
of work — so only ever for a paid order:

- Digital: one voucher per unit is issued and the line is delivered at once.
- In-Clinic: the line is being prepared, and the practice's staff get a "prepare for collection"
  task (with the patient's first name only and the practice's in-clinic stock flag).
- Drop-Ship: the line waits for the supplier network, asked through the outbox
  (`fulfilment.shipment_requested.v1`, delivered by the relay; see `fulfilment.shipments`).

The order's rows are the completion's (queued through `db.fast.Statements`), so everything here
is rows too: the lines' and the order's new state before they are queued, then vouchers, audit
entries and events after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog
from product_shop.audit.tables import AuditEntry
from product_shop.catalogue.model import FulfilmentType
from product_shop.checkout.fulfilment_port import FulfilmentStarted
from product_shop.checkout.repository import CheckoutLineRow, CheckoutRow
from product_shop.core.ids import new_id
from product_shop.db.fast import Statements
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox
from product_shop.events.tables import OutboxEvent
from product_shop.fulfilment.lines import NOTIFICATION, SYSTEM_ACTOR, line_event, line_record
from product_shop.fulfilment.shipments import shipment_request
from product_shop.fulfilment.vouchers import code_hash, last_four, voucher_code
from product_shop.orders.events import OrderLineRow, OrderRow
from product_shop.orders.model import LineState, OrderStatus, fulfilment_status, path_to
from product_shop.orders.tables import Voucher

# Where each type of line goes as soon as its order exists.
FIRST_STAGE = {
    FulfilmentType.DIGITAL: LineState.DELIVERED,
    FulfilmentType.IN_CLINIC: LineState.PREPARING,
    FulfilmentType.DROP_SHIP: LineState.PENDING,
}


@dataclass
class _Plan:
    order: OrderRow
    lines: list[OrderLineRow]
    checkout: CheckoutRow
    stock: dict[int, bool | None]
    at: datetime
    vouchers: list[dict[str, Any]] = field(default_factory=list)


class FulfilmentStarter:
    """Implements `checkout.fulfilment_port.FulfilmentTrigger`."""

    def __init__(self, *, audit: AuditLog, outbox: Outbox, voucher_key: bytes) -> None:
        self._audit = audit
        self._outbox = outbox
        self._voucher_key = voucher_key

    def order_created(
        self,
        order: OrderRow,
        lines: Sequence[OrderLineRow],
        checkout: CheckoutRow,
        checkout_lines: Sequence[CheckoutLineRow],
        at: datetime,
    ) -> FulfilmentStarted:
        started: list[OrderLineRow] = []
        vouchers: list[dict[str, Any]] = []
        for line in lines:
            kind = FulfilmentType(line.fulfilment_type)
            target = FIRST_STAGE[kind]
            path_to(kind, LineState(line.fulfilment_status), target)  # the table allows it
            if kind is FulfilmentType.DIGITAL:
                vouchers += self._vouchers(line, at)
                line = line._replace(fulfilment_status=target.value, delivered_at=at)
            elif kind is FulfilmentType.IN_CLINIC:
                line = line._replace(fulfilment_status=target.value)
            else:
                line = line._replace(shipment_attempt=1)
            started.append(line)
        parent = fulfilment_status(LineState(line.fulfilment_status) for line in started)
        stored = order._replace(status=parent.value, fulfilment_status=parent.value)
        plan = _Plan(
            order=stored,
            lines=started,
            checkout=checkout,
            stock={line.line_no: line.in_clinic_stock_available for line in checkout_lines},
            at=at,
            vouchers=vouchers,
        )
        return FulfilmentStarted(
            stored, started, vouchers, lambda session, fast: self._follow_up(session, fast, plan)
        )

    def _vouchers(self, line: OrderLineRow, at: datetime) -> list[dict[str, Any]]:
        rows = []
        for unit in range(1, line.quantity + 1):
            voucher_id = new_id()
            code = voucher_code(self._voucher_key, voucher_id)
            rows.append(
                {
                    "voucher_id": voucher_id,
                    "line_item_id": line.line_item_id,
                    "order_id": line.order_id,
                    "unit_no": unit,
                    "code_hash": code_hash(code),
                    "last_four": last_four(code),
                    "issued_at": at,
                }
            )
        return rows

    def _follow_up(self, session: Session, fast: Statements, plan: _Plan) -> list[dict[str, Any]]:
        """Vouchers, then per line its audit entry and events, then the order's status change;
        returns the audit entries (the order's trail goes on with them)."""
        order, at = plan.order, plan.at
        fast.insert(Voucher, plan.vouchers)
        entries: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        who = SYSTEM_ACTOR.audit_actor()
        for line in plan.lines:
            stage = LineState(line.fulfilment_status)
            action = "shipment_requested" if stage is LineState.PENDING else stage.value
            after = line_record(line)
            if stage is LineState.DELIVERED:
                after["vouchers"] = [
                    v["last_four"] for v in plan.vouchers if v["line_item_id"] == line.line_item_id
                ]
            entries.append(
                self._audit.row(
                    session,
                    stream_type="order",
                    stream_id=order.order_id,
                    action=f"fulfilment.{action}",
                    actor=who,
                    practice_id=order.practice_id,
                    after=after,
                    at=at,
                )
            )
            events += self._events(line, plan)
        if order.status != OrderStatus.CREATED:
            entries.append(
                self._audit.row(
                    session,
                    stream_type="order",
                    stream_id=order.order_id,
                    action="order.status_changed",
                    actor=who,
                    practice_id=order.practice_id,
                    before={
                        "status": OrderStatus.CREATED.value,
                        "fulfilment_status": OrderStatus.CREATED.value,
                    },
                    after={"status": order.status, "fulfilment_status": order.fulfilment_status},
                    at=at,
                )
            )
        fast.insert(AuditEntry, entries)
        fast.insert(OutboxEvent, events)
        return entries

    def _events(self, line: OrderLineRow, plan: _Plan) -> list[dict[str, Any]]:
        order, at = plan.order, plan.at
        ids = {
            "order_id": order.order_id,
            "line_item_id": line.line_item_id,
            "practice_id": order.practice_id,
        }
        stage = LineState(line.fulfilment_status)
        row = self._outbox.row
        if stage is LineState.PENDING:  # drop-ship: ask the supplier network
            data = shipment_request(
                order.order_id, order.practice_id, line, plan.checkout.delivery_address
            )
            return [row(ev.SHIPMENT_REQUESTED, aggregate_id=line.line_item_id, data=data, at=at)]
        stage_event = row(
            ev.FULFILMENT_STAGE_CHANGED,
            aggregate_id=line.line_item_id,
            data={
                **ids,
                "patient_id": order.patient_id,
                **line_event(line),
                "notification": NOTIFICATION[stage],
                "occurred_at": at,
            },
            at=at,
        )
        if stage is not LineState.PREPARING:
            return [stage_event]
        task = row(
            ev.STAFF_TASK,
            aggregate_id=line.line_item_id,
            data={
                **ids,
                "task": "prepare_for_collection",
                "product_name": line.product_name,
                "quantity": line.quantity,
                "patient_first_name": plan.checkout.patient_first_name,
                "in_clinic_stock_available": plan.stock.get(line.line_no),
                "exception_reason": None,
            },
            at=at,
        )
        return [stage_event, task]
