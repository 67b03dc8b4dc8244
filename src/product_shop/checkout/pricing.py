"""Server-side pricing (invariant 7): prices and availability come from the catalogue now,
never from the client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from product_shop.catalogue import repository
from product_shop.catalogue.model import (
    AvailabilityStatus,
    FulfilmentType,
    PracticeOffer,
    PurchaseBlocker,
    purchase_blocker,
)
from product_shop.checkout.schemas import CheckoutLineIn
from product_shop.core.errors import Unprocessable


@dataclass(frozen=True, slots=True)
class PricedLine:
    line_no: int
    product_id: uuid.UUID
    name: str
    quantity: int
    unit_price_minor: int
    fulfilment_type: FulfilmentType
    recommendation_id: uuid.UUID | None = None

    @property
    def total_minor(self) -> int:
        return self.unit_price_minor * self.quantity


# What a patient is told. Not offered, hidden and unknown read the same: a patient never learns
# what another practice sells or what their practice hides.
_PATIENT_REASON = {
    PurchaseBlocker.NOT_OFFERED: "product_not_found",
    PurchaseBlocker.NOT_VISIBLE: "product_not_found",
    PurchaseBlocker.PRODUCT_DEPRECATED: "product_unavailable",
    PurchaseBlocker.PRODUCT_UNAVAILABLE: "product_unavailable",
    PurchaseBlocker.IN_CLINIC_STOCK_UNAVAILABLE: "in_clinic_stock_unavailable",
}


def price_lines(
    session: Session, practice_id: uuid.UUID, lines: list[CheckoutLineIn]
) -> tuple[list[PricedLine], str]:
    """Priced lines and their currency; Unprocessable naming every line that cannot be bought."""
    ids = [line.product_id for line in lines]
    if len(set(ids)) != len(ids):
        raise Unprocessable(
            "Each product may appear on one line only; set its quantity instead.",
            code="duplicate_product_line",
        )
    found = repository.offers(session, practice_id, ids)
    priced: list[PricedLine] = []
    problems: list[dict[str, str]] = []
    currencies: set[str] = set()
    for line_no, line in enumerate(lines, start=1):
        row = found.get(line.product_id)
        if row is None:
            problems.append({"product_id": str(line.product_id), "reason": "product_not_found"})
            continue
        offer = (
            PracticeOffer(
                row["retail_price_minor"],
                row["practice_note"],
                row["visible"],
                row["in_clinic_stock_available"],
            )
            if row["visible"] is not None  # NOT NULL in a settings row: None, no settings
            else None
        )
        fulfilment = FulfilmentType(row["fulfilment_type"])
        blocker = purchase_blocker(
            AvailabilityStatus(row["availability_status"]), fulfilment, offer
        )
        if blocker is not None or offer is None:
            reason = _PATIENT_REASON[blocker] if blocker else "product_not_found"
            problems.append({"product_id": str(line.product_id), "reason": reason})
            continue
        currencies.add(row["currency"])
        priced.append(
            PricedLine(
                line_no,
                line.product_id,
                row["name"],
                line.quantity,
                offer.retail_price_minor,
                fulfilment,
                line.recommendation_id,
            )
        )
    if problems:
        raise Unprocessable(
            "Some products cannot be bought right now; nothing was charged.",
            code="product_not_purchasable",
            lines=problems,
        )
    if len(currencies) != 1:
        raise Unprocessable(
            "All products in one checkout must share a currency.", code="mixed_currency"
        )
    return priced, currencies.pop()
