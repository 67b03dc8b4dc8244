"""Catalogue rules, free of web and database code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from product_shop.core.errors import InvalidTransition


class FulfilmentType(StrEnum):
    DROP_SHIP = "Drop-Ship"
    IN_CLINIC = "In-Clinic"
    DIGITAL = "Digital"


class AvailabilityStatus(StrEnum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    DEPRECATED = "deprecated"


# Who may move where. Deprecation is final: a deprecated product is retired from the catalogue.
AVAILABILITY_TRANSITIONS: dict[AvailabilityStatus, frozenset[AvailabilityStatus]] = {
    AvailabilityStatus.AVAILABLE: frozenset(
        {AvailabilityStatus.UNAVAILABLE, AvailabilityStatus.DEPRECATED}
    ),
    AvailabilityStatus.UNAVAILABLE: frozenset(
        {AvailabilityStatus.AVAILABLE, AvailabilityStatus.DEPRECATED}
    ),
    AvailabilityStatus.DEPRECATED: frozenset(),
}


def check_availability_transition(before: AvailabilityStatus, after: AvailabilityStatus) -> None:
    if before == after:
        return
    if after not in AVAILABILITY_TRANSITIONS[before]:
        raise InvalidTransition(
            f"A product cannot go from '{before.value}' to '{after.value}'.",
            code="product_deprecated" if before is AvailabilityStatus.DEPRECATED else None,
        )


@dataclass(frozen=True, slots=True)
class PracticeOffer:
    """What one practice has set for one product."""

    retail_price_minor: int
    practice_note: str | None
    visible: bool
    in_clinic_stock_available: bool


class PurchaseBlocker(StrEnum):
    """Why a product cannot be bought at a practice right now (stable codes for clients)."""

    PRODUCT_UNAVAILABLE = "product_unavailable"
    PRODUCT_DEPRECATED = "product_deprecated"
    NOT_OFFERED = "product_not_offered"
    NOT_VISIBLE = "product_not_visible"
    IN_CLINIC_STOCK_UNAVAILABLE = "in_clinic_stock_unavailable"


def purchase_blocker(
    availability: AvailabilityStatus,
    fulfilment_type: FulfilmentType,
    offer: PracticeOffer | None,
) -> PurchaseBlocker | None:
    """None when a patient of the practice may buy the product now (spec §4.2 gating)."""
    if availability is AvailabilityStatus.DEPRECATED:
        return PurchaseBlocker.PRODUCT_DEPRECATED
    if availability is not AvailabilityStatus.AVAILABLE:
        return PurchaseBlocker.PRODUCT_UNAVAILABLE
    if offer is None:
        return PurchaseBlocker.NOT_OFFERED
    if not offer.visible:
        return PurchaseBlocker.NOT_VISIBLE
    if fulfilment_type is FulfilmentType.IN_CLINIC and not offer.in_clinic_stock_available:
        return PurchaseBlocker.IN_CLINIC_STOCK_UNAVAILABLE
    return None


def is_purchasable(
    availability: AvailabilityStatus, fulfilment_type: FulfilmentType, offer: PracticeOffer | None
) -> bool:
    return purchase_blocker(availability, fulfilment_type, offer) is None
