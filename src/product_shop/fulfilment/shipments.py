"""Drop-ship lines and the supplier network (spec §6.1): submitting, and what comes back.

- The relay delivers `fulfilment.shipment_requested.v1` through `shipment_sink`: one submission
  per line and attempt, its Idempotency-Key `shipment:{line}:{attempt}`, so a resend never makes
  a second shipment. Accepted: the line goes `sent_to_supplier` (`ShipmentFollowUp.delivered`).
  A refusal (out of stock, address problem) parks the event at once; an unreachable network is
  retried on the relay's schedule (minutes to hours) and then parked. Either way the line
  becomes an exception in the practice's queue (`ShipmentFollowUp.parked`).
- The network's signed callbacks (`POST /v1/webhooks/suppliers`) move the line on
  (`SupplierUpdates`): deduplicated by event id through the inbox; an update older than the
  last one applied (its `sequence`) changes nothing, so duplicates and reordering leave the line
  where the clean sequence would; a line never goes back.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
)
from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog
from product_shop.catalogue.model import FulfilmentType
from product_shop.core.clock import Clock
from product_shop.core.errors import BadRequest, InvalidTransition
from product_shop.core.ids import new_id
from product_shop.core.moments import Timestamp
from product_shop.core.text import InputModel
from product_shop.events import inbox
from product_shop.events.delivery import PendingEvent, PermanentDeliveryError, Sink
from product_shop.fulfilment.acceptance import SubmissionAccepted, awaiting_acceptance
from product_shop.fulfilment.lines import SUPPLIER_ACTOR, SYSTEM_ACTOR, Change, LineFulfilment
from product_shop.integrations.suppliers import (
    ExceptionReason,
    Shipment,
    ShipmentItem,
    ShipmentRequest,
    ShipmentStatus,
    SupplierNetwork,
    SupplierRejected,
)
from product_shop.orders.model import LineState
from product_shop.orders.tables import OrderLine

INBOX_SOURCE = "supplier_network"
STAGE = {
    ShipmentStatus.ACCEPTED: LineState.SENT_TO_SUPPLIER,
    ShipmentStatus.DISPATCHED: LineState.DISPATCHED,
    ShipmentStatus.IN_TRANSIT: LineState.DISPATCHED,
    ShipmentStatus.DELIVERED: LineState.DELIVERED,
    ShipmentStatus.EXCEPTION: LineState.EXCEPTION,
    ShipmentStatus.CANCELLED: LineState.CANCELLED,
}
# Refusals that name a reason the practice can act on; any other refusal is `supplier_refused`.
_REFUSAL_REASONS = frozenset({"out_of_stock", "address_problem"})


class ShipmentRefused(PermanentDeliveryError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def shipment_key(line_item_id: uuid.UUID | str, attempt: int) -> str:
    return f"shipment:{line_item_id}:{attempt}"


def shipment_reference(line_item_id: uuid.UUID | str, attempt: int) -> str:
    """Our reference for one submission of a line: the line and the attempt, so an update about
    a shipment replaced by a resend is recognised as such."""
    return f"{line_item_id}:{attempt}"


def shipment_request(
    order_id: uuid.UUID,
    practice_id: uuid.UUID,
    line: Any,
    delivery_address: dict[str, Any] | None,
) -> dict[str, Any]:
    """The payload of `fulfilment.shipment_requested.v1` for a line's current attempt (an
    `OrderLine` or an `OrderLineRow`)."""
    return {
        "order_id": order_id,
        "line_item_id": line.line_item_id,
        "practice_id": practice_id,
        "attempt": line.shipment_attempt,
        "items": [
            {"product_id": line.product_id, "name": line.product_name, "quantity": line.quantity}
        ],
        "delivery_address": {"line2": None, "country": "GB", **(delivery_address or {})},
    }


def _parse_reference(reference: str) -> tuple[uuid.UUID, int] | None:
    line, _, attempt = reference.partition(":")
    try:
        return uuid.UUID(line), int(attempt or "1")
    except ValueError:
        return None


def shipment_sink(network: SupplierNetwork) -> Sink:
    def submit(event: PendingEvent) -> Shipment:
        data = event.data
        request = ShipmentRequest(
            reference=shipment_reference(data["line_item_id"], data["attempt"]),
            order_id=str(data["order_id"]),
            practice_id=str(data["practice_id"]),
            items=tuple(
                ShipmentItem(str(item["product_id"]), item["name"], item["quantity"])
                for item in data["items"]
            ),
            delivery_address=data["delivery_address"],
        )
        try:
            return network.submit_shipment(
                request, idempotency_key=shipment_key(data["line_item_id"], data["attempt"])
            )
        except SupplierRejected as exc:
            raise ShipmentRefused(exc.code, exc.message) from exc

    return submit


class ShipmentFollowUp:
    """The relay's follow-up for `fulfilment.shipment_requested.v1`."""

    def __init__(self, lines: LineFulfilment) -> None:
        self._lines = lines
        self._accepted = SubmissionAccepted(
            audit=lines.audit, outbox=lines.outbox, clock=lines.clock
        )

    def delivered(self, session: Session, event: PendingEvent, result: object) -> None:
        """The supplier network took the submission: the line goes `sent_to_supplier` (with its
        audit entry, Communication Hub event and the order's status), unless the line was
        resent since or the supplier's callbacks moved it already; a repeat changes nothing.
        The relay's session holds no ORM objects, so this is rows (`fulfilment.acceptance`,
        once per drop-ship line); a session holding some gets the same through the ORM."""
        assert isinstance(result, Shipment)
        line_item_id = uuid.UUID(event.data["line_item_id"])
        if len(session.identity_map) == 0:
            self._accepted.record(session, line_item_id, event.data["attempt"], result.shipment_id)
        else:
            self.delivered_through_orm(session, line_item_id, event.data["attempt"], result)

    def delivered_through_orm(
        self, session: Session, line_item_id: uuid.UUID, attempt: int, result: Shipment
    ) -> None:
        """`delivered` through the ORM: the line and its order loaded and locked, then
        `LineFulfilment.apply`. The same outcome as the rows (the tests hold them equal)."""
        order, line = self._lines.lock(session, line_item_id)
        if line.shipment_attempt != attempt:
            return  # an older submission: the line was resent since
        if line.fulfilment_ref is None:
            line.fulfilment_ref = result.shipment_id
        if not awaiting_acceptance(line):
            return  # the supplier's callbacks got there first (accepted, dispatched, exception)
        with contextlib.suppress(InvalidTransition):
            self._lines.apply(
                session, order, line, Change(LineState.SENT_TO_SUPPLIER), SUPPLIER_ACTOR
            )

    def parked(self, session: Session, event: PendingEvent, error: Exception) -> None:
        order, line = self._lines.lock(session, uuid.UUID(event.data["line_item_id"]))
        if line.shipment_attempt != event.data["attempt"] or not awaiting_acceptance(line):
            return  # resent since, or the supplier has the shipment after all (callbacks)
        code = getattr(error, "code", None)
        if isinstance(error, ShipmentRefused):
            reason = code if code in _REFUSAL_REASONS else "supplier_refused"
        else:
            reason = "supplier_unavailable"
        self._lines.apply(
            session,
            order,
            line,
            Change(
                LineState.EXCEPTION,
                reason=reason,
                reopen=True,  # a resend that failed again is back in the queue
                note="The supplier network did not take the shipment.",
            ),
            SYSTEM_ACTOR,
        )


def cancellation_sink(network: SupplierNetwork) -> Sink:
    """Deliver `fulfilment.shipment_cancellation_requested.v1`: ask the network to cancel the
    shipment of a refunded line. A shipment the network never had needs no cancelling (None);
    one already dispatched is a refusal (parked at once: `CancellationFollowUp.parked`)."""

    def cancel(event: PendingEvent) -> Shipment | None:
        data = event.data
        try:
            return network.cancel_shipment(
                data["reference"],
                idempotency_key=f"cancel:{data['line_item_id']}:{data['attempt']}",
            )
        except SupplierRejected as exc:
            if exc.code == "shipment_not_found":
                return None
            raise ShipmentRefused(exc.code, exc.message) from exc

    return cancel


class CancellationFollowUp:
    """The relay's follow-up for `fulfilment.shipment_cancellation_requested.v1`: the line is
    cancelled once the network confirms; a refusal (already dispatched) or a network that never
    answered leaves the line going, marked `refused`, with a task for the practice's staff."""

    def __init__(self, lines: LineFulfilment, audit: AuditLog, clock: Clock) -> None:
        self._lines = lines
        self._audit = audit
        self._clock = clock

    def delivered(self, session: Session, event: PendingEvent, result: object) -> None:
        order, line = self._lines.lock(session, uuid.UUID(event.data["line_item_id"]))
        if line.cancellation != "requested":
            return
        line.cancellation = None
        if line.fulfilment_status == LineState.CANCELLED:
            return  # the network's callback got there first
        try:
            self._lines.apply(
                session,
                order,
                line,
                Change(LineState.CANCELLED, note="Refunded: the supplier cancelled the shipment."),
                SUPPLIER_ACTOR,
            )
        except InvalidTransition:
            self._refused(session, order, line, "The parcel left before the cancellation.")

    def parked(self, session: Session, event: PendingEvent, error: Exception) -> None:
        order, line = self._lines.lock(session, uuid.UUID(event.data["line_item_id"]))
        if line.cancellation != "requested":
            return
        reason = (
            "The supplier network had already dispatched it."
            if getattr(error, "code", None) == "already_dispatched"
            else "The supplier network did not answer the cancellation."
        )
        self._refused(session, order, line, reason)

    def _refused(self, session: Session, order: Any, line: OrderLine, reason: str) -> None:
        now = self._clock.now()
        line.cancellation = "refused"
        line.updated_at = now
        self._audit.record(
            session,
            stream_type="order",
            stream_id=order.order_id,
            action="fulfilment.cancellation_refused",
            actor=SUPPLIER_ACTOR.audit_actor(),
            practice_id=order.practice_id,
            after={
                "line_item_id": str(line.line_item_id),
                "product_name": line.product_name,
                "status": line.fulfilment_status,
                "reason": reason,
            },
            at=now,
        )
        self._lines.staff_task(session, order, line, "cancellation_refused", now)


class SupplierUpdateIn(InputModel):
    """A callback's `data` (integrations/suppliers.py has the contract): fields the contract
    does not name are ignored (a newer supplier network may send more); text holds no control
    characters, and numbers are numbers (`true` is not a sequence)."""

    model_config = ConfigDict(extra="ignore")
    shipment_id: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    reference: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    status: ShipmentStatus
    sequence: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
    occurred_at: Timestamp | None = None
    carrier: Annotated[str, StringConstraints(max_length=80)] | None = None
    tracking_number: Annotated[str, StringConstraints(max_length=120)] | None = None
    tracking_url: (
        Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://\S+$")] | None
    ) = None
    dispatched_at: Timestamp | None = None
    delivered_at: Timestamp | None = None
    exception_reason: ExceptionReason | None = None


def parse_update(data: Any) -> SupplierUpdateIn:
    try:
        return SupplierUpdateIn.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(
            "The webhook body is not a shipment update.", code="malformed_webhook"
        ) from exc


class SupplierUpdates:
    def __init__(self, *, lines: LineFulfilment, audit: AuditLog, clock: Clock) -> None:
        self._lines = lines
        self._audit = audit
        self._clock = clock

    def apply(self, session: Session, message_id: str, update: SupplierUpdateIn) -> str:
        """What the callback did: applied, unchanged, stale, duplicate or unknown_shipment."""
        if inbox.seen(session, INBOX_SOURCE, message_id):
            return "duplicate"
        now = self._clock.now()
        found = _line(session, update)
        if found is None:
            inbox.record(session, INBOX_SOURCE, message_id, "unknown_shipment", now)
            self._audit.record(
                session,
                stream_type="supplier_update",
                stream_id=new_id(),
                new_stream=True,
                action="supplier.unknown_shipment",
                actor=SUPPLIER_ACTOR.audit_actor(),
                after={
                    "message_id": message_id,
                    "shipment_id": update.shipment_id,
                    "reference": update.reference,
                    "status": update.status.value,
                    "sequence": update.sequence,
                },
                at=now,
            )
            return "unknown_shipment"
        order, line = self._lines.lock(session, found.line_item_id)
        inbox.record(session, INBOX_SOURCE, message_id, "shipment", now)
        if update.sequence <= line.supplier_sequence:
            return "stale"
        stage = STAGE[update.status]
        if (
            stage is LineState.SENT_TO_SUPPLIER
            and line.fulfilment_status == LineState.EXCEPTION
            and line.fulfilment_ref == update.shipment_id
            and line.dispatched_at is not None
        ):
            # "Accepted" again for a shipment already dispatched: the exception's way back to
            # the supplier is a staff resend (a new shipment), never this; a line never goes back.
            return "stale"
        line.supplier_sequence = update.sequence
        line.fulfilment_ref = update.shipment_id
        reason = update.exception_reason.value if update.exception_reason else None
        if stage is LineState.CANCELLED and line.refunded_quantity < line.quantity:
            # Only a refund stops a line; a supplier that drops a paid shipment on its own
            # leaves it for the practice to resolve.
            stage, reason = LineState.EXCEPTION, "supplier_refused"
        change = Change(
            stage,
            at=update.occurred_at,
            carrier=update.carrier,
            tracking_number=update.tracking_number,
            tracking_url=update.tracking_url,
            dispatched_at=update.dispatched_at,
            delivered_at=update.delivered_at,
            reason=reason,
            in_transit=update.status is ShipmentStatus.IN_TRANSIT,
        )
        try:
            moved = self._lines.apply(session, order, line, change, SUPPLIER_ACTOR)
        except InvalidTransition:
            return "stale"  # a line never goes back
        return "applied" if moved else "unchanged"


def _line(session: Session, update: SupplierUpdateIn) -> OrderLine | None:
    """The drop-ship line the update is about: by our reference (line and attempt) and, once
    we know it, the supplier's shipment id. An update about a shipment replaced by a resend (an
    older attempt) or about anything else is unknown."""
    parsed = _parse_reference(update.reference)
    if parsed is None:
        return None
    line = session.get(OrderLine, parsed[0])
    if line is None or line.fulfilment_type != FulfilmentType.DROP_SHIP:
        return None
    if parsed[1] != line.shipment_attempt:
        return None
    if line.fulfilment_ref is not None and line.fulfilment_ref != update.shipment_id:
        return None
    return line
