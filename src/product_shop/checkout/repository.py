"""Reading and locking checkouts: the statements, and the rows they return as typed objects.

The completion reads through `db.fast.Statements` (one round trip on PostgreSQL for the locked
checkout, its lines with what the catalogue says of their products now, and the checkout's audit
stream head); everything else reads through the ORM.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import same
from product_shop.access.policy import Action, require
from product_shop.audit.log import STREAM_HEAD
from product_shop.catalogue.model import (
    AvailabilityStatus,
    FulfilmentType,
    PracticeOffer,
    purchase_blocker,
)
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.checkout.tables import Checkout, CheckoutLine
from product_shop.core.errors import NotFound
from product_shop.db.fast import Row, Statements


class CheckoutRow(NamedTuple):
    """What the completion needs of a checkout."""

    checkout_id: uuid.UUID
    patient_id: uuid.UUID
    practice_id: uuid.UUID
    status: str
    currency: str
    total_minor: int
    amount_due_minor: int
    payment_intent_id: str | None
    redemption_ref: str | None
    redemption_amount_minor: int
    order_id: uuid.UUID | None
    failure_code: str | None
    failure_reason: str | None
    version: int
    delivery_address: dict[str, Any] | None
    patient_first_name: str | None


class CheckoutLineRow(NamedTuple):
    """A checkout line with what the catalogue says of its product now (None: not offered)."""

    line_no: int
    product_id: uuid.UUID
    product_name: str
    quantity: int
    unit_price_minor: int
    fulfilment_type: str
    availability_status: str
    retail_price_minor: int | None
    visible: bool | None
    in_clinic_stock_available: bool | None

    @property
    def purchasable(self) -> bool:
        """Whether the product may still be bought at the checkout's practice (spec §4.2)."""
        offer = (
            PracticeOffer(
                self.retail_price_minor or 0,
                None,
                self.visible,
                bool(self.in_clinic_stock_available),
            )
            if self.visible is not None
            else None
        )
        return (
            purchase_blocker(
                AvailabilityStatus(self.availability_status),
                FulfilmentType(self.fulfilment_type),
                offer,
            )
            is None
        )


class CompletionRead(NamedTuple):
    checkout: CheckoutRow
    lines: list[CheckoutLineRow]
    audit_head: Row | None


_CHECKOUT = select(*(Checkout.__table__.c[name] for name in CheckoutRow._fields)).where(
    Checkout.checkout_id == bindparam("checkout_id")
)
_LOCKED_CHECKOUT = _CHECKOUT.with_for_update()
_LINES = (
    select(
        CheckoutLine.line_no,
        CheckoutLine.product_id,
        CheckoutLine.product_name,
        CheckoutLine.quantity,
        CheckoutLine.unit_price_minor,
        CheckoutLine.fulfilment_type,
        Product.availability_status,
        PracticeProductSetting.retail_price_minor,
        PracticeProductSetting.visible,
        PracticeProductSetting.in_clinic_stock_available,
    )
    .join(Checkout, Checkout.checkout_id == CheckoutLine.checkout_id)
    .join(Product, Product.product_id == CheckoutLine.product_id)
    .outerjoin(
        PracticeProductSetting,
        and_(
            PracticeProductSetting.practice_id == Checkout.practice_id,
            PracticeProductSetting.product_id == CheckoutLine.product_id,
        ),
    )
    .where(CheckoutLine.checkout_id == bindparam("checkout_id"))
    .order_by(CheckoutLine.line_no)
)


def _checkout_row(row: Row) -> CheckoutRow:
    return CheckoutRow(**row)


def read_checkout(session: Session, checkout_id: uuid.UUID) -> CheckoutRow | None:
    """The checkout as it is now, unlocked (None: no such checkout)."""
    found = Statements(session).one(_CHECKOUT, checkout_id=checkout_id)
    return _checkout_row(found) if found is not None else None


def read_for_completion(session: Session, checkout_id: uuid.UUID) -> CompletionRead:
    """The checkout locked for the order's transaction, its lines and its audit stream head."""
    by_checkout = {"checkout_id": checkout_id}
    checkouts, lines, heads = Statements(session).many(
        (_LOCKED_CHECKOUT, by_checkout),
        (_LINES, by_checkout),
        (STREAM_HEAD, {"stream_type": "checkout", "stream_id": str(checkout_id)}),
    )
    return CompletionRead(
        _checkout_row(checkouts[0]),
        [CheckoutLineRow(**line) for line in lines],
        heads[0] if heads else None,
    )


def check_owner(actor: Actor, patient_id: uuid.UUID | None) -> None:
    """404 unless this patient owns the checkout (None: there is no such checkout)."""
    require(actor, Action.CHECKOUT)
    if patient_id is None or not same(patient_id, actor.patient_id):
        raise NotFound("No such checkout.")


def load_owned(session: Session, actor: Actor, checkout_id: uuid.UUID) -> Checkout:
    """The checkout if this patient owns it; 404 for anyone else (existence is not revealed)."""
    checkout = session.get(Checkout, checkout_id)
    check_owner(actor, checkout.patient_id if checkout else None)
    assert checkout is not None
    return checkout


def lock_checkout(session: Session, checkout_id: uuid.UUID) -> Checkout:
    checkout: Checkout = session.execute(
        select(Checkout).where(Checkout.checkout_id == checkout_id).with_for_update()
    ).scalar_one()
    return checkout


def load_lines(session: Session, checkout_id: uuid.UUID) -> list[CheckoutLine]:
    return list(
        session.scalars(
            select(CheckoutLine)
            .where(CheckoutLine.checkout_id == checkout_id)
            .order_by(CheckoutLine.line_no)
        )
    )
