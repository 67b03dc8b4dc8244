"""Retention (spec §16 Privacy, §17): erasing the personal data of orders placed longer ago than
the retention period (setting `retention_days`, 6 years by default: the UK's record-keeping
norm for financial records), while what Finance needs stays: amounts, currency, dates, statuses,
line items, and the references (payment, refund, redemption and settlement references, the PMS
invoice reference, supplier references). Patient and practice ids stay too: they are Access
Manager's pseudonymous ids, not names, and the order's ownership and the practice's reports
rest on them.

Where an order's personal data lives, and what erasure does to it:

- `checkouts.delivery_address` (the recipient's name and address) and
  `checkouts.patient_first_name` (for staff tasks): NULL.
- `payment_captures.card_last4`: NULL (card scheme and payment method stay).
- `order_lines.tracking_number` and `tracking_url` (they lead to the recipient at the carrier):
  NULL (carrier and dates stay).
- `vouchers.code_hash` and `last_four` (the code itself is never stored): a hash no code has
  and "", so the voucher can no longer be redeemed or shown.
- `refunds.note` (staff's free text): NULL; the reason code and the named staff member (their
  id and name, spec §5.3) stay.
- `cancellation_requests.reason` (the patient's own words): NULL.
- `outbox_events.data` of the order's, its lines' and its checkout's events, delivered or still
  waiting: `delivery_address` keeps its shape with every field "" but the country (no one is
  identified by it), and `patient_first_name`, `card_last4`, `tracking_number` and
  `tracking_url` become null (the schemas allow both).
- `idempotency_keys.response_body`, the stored answers to the checkout, refund and cancellation
  POSTs: those fields, `note` and `reason` become null; the key still replays, so a retried
  refund never makes a second one.

The audit log is not touched: it is append-only and hash-chained (migration 0012), so what its
entries hold stays (ids and staff names by design, but also the tracking numbers of a line's
stages; fulfilment moves and refunds record only whether a note was given, `has_note`, except
in entries written before they did, which hold the note). Each erasure adds one entry
to the order's stream instead (`order.personal_data_erased`, the system actor),
naming the fields and how many rows or documents held them, never a value; the order's
`personal_data_erased_at` marks it done, so a second run passes it by.

The service works in the caller's unit of work (`jobs/retention.py` owns them): `plan` reads
what an erasure would change (the dry run), `erase` locks the order and erases all of it, or
nothing, in that one transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, null, or_, select, update
from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog
from product_shop.checkout.tables import Checkout, PaymentCapture
from product_shop.core.clock import Clock
from product_shop.events.tables import OutboxEvent
from product_shop.fulfilment.lines import SYSTEM_ACTOR
from product_shop.idempotency.tables import IdempotencyKey
from product_shop.orders.tables import Order, OrderLine, Voucher
from product_shop.refunds.tables import CancellationRequest, PaymentException, Refund

ERASED_ACTION = "order.personal_data_erased"

# Top-level keys of event payloads that carry personal data (events/schemas/): shipment
# requests, staff tasks, stage changes and payment receipts.
EVENT_FIELDS = (
    "delivery_address",
    "patient_first_name",
    "card_last4",
    "tracking_number",
    "tracking_url",
)
# Top-level keys of the stored answers to creating POSTs (checkout, refund, cancellation
# request) that carry personal data.
RESPONSE_FIELDS = (
    "delivery_address",
    "patient_first_name",
    "note",
    "reason",
    "card_last4",
    "tracking_number",
    "tracking_url",
)
_ADDRESS_TEXT = ("recipient_name", "line1", "city", "postcode")


@dataclass(frozen=True, slots=True)
class Erasure:
    """What erasing one order changes (or would): for each field, as `table.column` (or
    `table.column.key` inside a JSON document), how many rows or documents held personal data
    in it. Names and counts only, never a value."""

    order_id: uuid.UUID
    ordered_at: datetime
    fields: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_id": str(self.order_id),
            "ordered_at": self.ordered_at.isoformat(),
            "fields": dict(sorted(self.fields.items())),
        }


@dataclass(frozen=True, slots=True)
class DueOrder:
    order_id: uuid.UUID
    created_at: datetime


class OrderRetention:
    def __init__(self, *, audit: AuditLog, clock: Clock, period: timedelta) -> None:
        self._audit = audit
        self._clock = clock
        self.period = period

    def cutoff(self, now: datetime | None = None) -> datetime:
        """Orders placed before this are past the retention period."""
        return (now or self._clock.now()) - self.period

    def due(
        self,
        session: Session,
        cutoff: datetime,
        *,
        limit: int,
        after: DueOrder | None = None,
    ) -> list[DueOrder]:
        """Orders placed before `cutoff` whose personal data is still held, oldest first, after
        `after` (keyset), at most `limit` (index `ix_orders_retention_due`)."""
        statement = (
            select(Order.order_id, Order.created_at)
            .where(Order.personal_data_erased_at.is_(None), Order.created_at < cutoff)
            .order_by(Order.created_at, Order.order_id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(
                or_(
                    Order.created_at > after.created_at,
                    and_(Order.created_at == after.created_at, Order.order_id > after.order_id),
                )
            )
        return [
            DueOrder(order_id, created_at) for order_id, created_at in session.execute(statement)
        ]

    def plan(self, session: Session, order_id: uuid.UUID, cutoff: datetime) -> Erasure | None:
        """What erasing the order would change, changing nothing (None: not due)."""
        order = session.get(Order, order_id)
        if order is None or not _is_due(order, cutoff):
            return None
        return Erasure(order.order_id, order.created_at, _Places(session, order).visit(False))

    def erase(self, session: Session, order_id: uuid.UUID, cutoff: datetime) -> Erasure | None:
        """Erase the order's personal data everywhere, mark it and audit it, in the caller's
        unit of work (None: not due, or erased already by another run)."""
        order = session.get(Order, order_id, with_for_update=True)
        if order is None or not _is_due(order, cutoff):
            return None
        now = self._clock.now()
        erased = _Places(session, order).visit(True)
        order.personal_data_erased_at = now
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action=ERASED_ACTION,
            actor=SYSTEM_ACTOR.audit_actor(),
            practice_id=order.practice_id,
            after={
                "erased": dict(sorted(erased.items())),
                "retention_days": self.period.days,
                "ordered_at": order.created_at,
            },
            at=now,
        )
        return Erasure(order.order_id, order.created_at, erased)


def _is_due(order: Order, cutoff: datetime) -> bool:
    return order.personal_data_erased_at is None and order.created_at < cutoff


class _Places:
    """Every place one order's personal data lives; `visit(apply)` counts what holds some and,
    with `apply`, erases it."""

    def __init__(self, session: Session, order: Order) -> None:
        self._session = session
        self._order = order
        self._found: dict[str, int] = {}

    def visit(self, apply: bool) -> dict[str, int]:
        self._apply = apply
        self._checkout()
        self._capture()
        line_ids = self._lines()
        self._vouchers()
        refund_ids = self._refunds()
        request_ids = self._cancellation_requests()
        self._events(line_ids)
        self._responses(refund_ids, request_ids)
        return {name: count for name, count in self._found.items() if count}

    def _count(self, name: str, count: int = 1) -> None:
        self._found[name] = self._found.get(name, 0) + count

    def _nulls(self, model: Any, key: Any, where: ColumnElement[bool], columns: list[str]) -> None:
        """Set each of `columns` to NULL in the rows matching `where` that hold a value."""
        table = model.__table__
        for name in columns:
            # Read and tested here: a JSON column may hold JSON null rather than SQL NULL.
            rows = self._session.execute(select(key, table.c[name]).where(where)).all()
            held = [row_key for row_key, value in rows if value is not None]
            if held:
                self._count(f"{table.name}.{name}", len(held))
                if self._apply:
                    self._session.execute(update(table).where(key.in_(held)).values({name: null()}))

    def _checkout(self) -> None:
        self._nulls(
            Checkout,
            Checkout.checkout_id,
            Checkout.checkout_id == self._order.checkout_id,
            ["delivery_address", "patient_first_name"],
        )

    def _capture(self) -> None:
        self._nulls(
            PaymentCapture,
            PaymentCapture.transaction_ref,
            PaymentCapture.checkout_id == self._order.checkout_id,
            ["card_last4"],
        )

    def _lines(self) -> list[uuid.UUID]:
        where = OrderLine.order_id == self._order.order_id
        self._nulls(OrderLine, OrderLine.line_item_id, where, ["tracking_number", "tracking_url"])
        return list(self._session.scalars(select(OrderLine.line_item_id).where(where)))

    def _vouchers(self) -> None:
        """The code is never stored (`fulfilment/vouchers.py`); its hash and last four are what
        tie it to the order. The hash becomes one no typed code has (a code is hashed
        upper-case, without dashes: never "erased:<uuid>"), so it cannot be redeemed; with
        `last_four` empty, the patient's view no longer shows it (`orders/queries.py`)."""
        held = self._session.scalars(
            select(Voucher.voucher_id).where(
                Voucher.order_id == self._order.order_id, Voucher.last_four != ""
            )
        ).all()
        if not held:
            return
        self._count("vouchers.code_hash", len(held))
        self._count("vouchers.last_four", len(held))
        if self._apply:
            for voucher_id in held:
                self._session.execute(
                    update(Voucher)
                    .where(Voucher.voucher_id == voucher_id)
                    .values(code_hash=erased_code_hash(voucher_id), last_four="")
                )

    def _refunds(self) -> list[uuid.UUID]:
        """The order's refunds, and those of captures on its checkout that made no order."""
        exceptions = select(PaymentException.exception_id).where(
            PaymentException.checkout_id == self._order.checkout_id
        )
        where = or_(
            Refund.order_id == self._order.order_id,
            Refund.payment_exception_id.in_(exceptions),
        )
        self._nulls(Refund, Refund.refund_id, where, ["note"])
        return list(self._session.scalars(select(Refund.refund_id).where(where)))

    def _cancellation_requests(self) -> list[uuid.UUID]:
        where = CancellationRequest.order_id == self._order.order_id
        self._nulls(CancellationRequest, CancellationRequest.request_id, where, ["reason"])
        return list(self._session.scalars(select(CancellationRequest.request_id).where(where)))

    def _events(self, line_ids: list[uuid.UUID]) -> None:
        """The outbox rows of the order, its lines and its checkout (their aggregates), delivered
        or still waiting: a delivery made after this sends the erased payload."""
        order_id, checkout_id = str(self._order.order_id), str(self._order.checkout_id)
        aggregates = [
            and_(OutboxEvent.aggregate_type == "order", OutboxEvent.aggregate_id == order_id),
            and_(OutboxEvent.aggregate_type == "checkout", OutboxEvent.aggregate_id == checkout_id),
        ]
        if line_ids:
            aggregates.append(
                and_(
                    OutboxEvent.aggregate_type == "order_line",
                    OutboxEvent.aggregate_id.in_([str(line) for line in line_ids]),
                )
            )
        rows = self._session.execute(
            select(OutboxEvent.position, OutboxEvent.data).where(or_(*aggregates))
        ).all()
        for position, data in rows:
            scrubbed, changed = scrub(data, EVENT_FIELDS, _event_value)
            for name in changed:
                self._count(f"outbox_events.data.{name}")
            if changed and self._apply:
                self._session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.position == position)
                    .values(data=scrubbed)
                )

    def _responses(self, refund_ids: list[uuid.UUID], request_ids: list[uuid.UUID]) -> None:
        """The stored answers of the order's creating POSTs, found by their Location. The key
        and its answer stay (a replay still finds the refund it made); only the personal
        fields go."""
        locations = [
            f"/v1/checkouts/{self._order.checkout_id}",
            *(f"/v1/refunds/{refund_id}" for refund_id in refund_ids),
            *(f"/v1/cancellation-requests/{request_id}" for request_id in request_ids),
        ]
        rows = self._session.execute(
            select(IdempotencyKey.scope, IdempotencyKey.key, IdempotencyKey.response_body).where(
                IdempotencyKey.response_location.in_(locations)
            )
        ).all()
        for scope, key, body in rows:
            if not isinstance(body, dict):
                continue
            scrubbed, changed = scrub(body, RESPONSE_FIELDS, lambda _name, _value: None)
            for name in changed:
                self._count(f"idempotency_keys.response_body.{name}")
            if changed and self._apply:
                self._session.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
                    .values(response_body=scrubbed)
                )


def scrub(
    document: Mapping[str, Any],
    fields: tuple[str, ...],
    erased: Callable[[str, Any], Any],
) -> tuple[dict[str, Any], list[str]]:
    """The document with each of `fields` (top-level keys) replaced by `erased(name, value)`,
    and the names of those that changed."""
    result = dict(document)
    changed: list[str] = []
    for name in fields:
        if name in result:
            value = result[name]
            replacement = erased(name, value)
            if value != replacement:
                result[name] = replacement
                changed.append(name)
    return result, changed


def _event_value(name: str, value: Any) -> Any:
    """An event's field once erased: the schemas require a delivery address's shape (its
    country stays: no one is identified by it), every other field here may be null."""
    if name == "delivery_address" and isinstance(value, dict):
        return {
            **{key: "" for key in _ADDRESS_TEXT},
            "line2": None,
            "country": value.get("country"),
        }
    return None


def erased_code_hash(voucher_id: uuid.UUID) -> str:
    """What an erased voucher's `code_hash` becomes: unique (the column is), and never the hash
    of a code anyone can type."""
    return hashlib.sha256(f"erased:{voucher_id}".encode()).hexdigest()
