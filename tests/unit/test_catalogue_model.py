import pytest
from hypothesis import given
from hypothesis import strategies as st

from product_shop.catalogue.model import (
    AVAILABILITY_TRANSITIONS,
    AvailabilityStatus,
    FulfilmentType,
    PracticeOffer,
    PurchaseBlocker,
    check_availability_transition,
    purchase_blocker,
)
from product_shop.core.errors import InvalidTransition

A, U, D = (
    AvailabilityStatus.AVAILABLE,
    AvailabilityStatus.UNAVAILABLE,
    AvailabilityStatus.DEPRECATED,
)
OFFER = PracticeOffer(
    retail_price_minor=1000, practice_note=None, visible=True, in_clinic_stock_available=True
)


def test_availability_transition_table_matches_the_deprecation_workflow() -> None:
    assert {A: {U, D}, U: {A, D}, D: set()} == AVAILABILITY_TRANSITIONS


@given(st.sampled_from(list(AvailabilityStatus)), st.sampled_from(list(AvailabilityStatus)))
def test_only_tabled_availability_transitions_are_allowed(
    before: AvailabilityStatus, after: AvailabilityStatus
) -> None:
    if before == after or after in AVAILABILITY_TRANSITIONS[before]:
        check_availability_transition(before, after)
    else:
        with pytest.raises(InvalidTransition):
            check_availability_transition(before, after)


def test_a_deprecated_product_never_comes_back() -> None:
    with pytest.raises(InvalidTransition) as raised:
        check_availability_transition(D, A)
    assert raised.value.code == "product_deprecated"


@pytest.mark.parametrize(
    ("availability", "fulfilment", "offer", "blocker"),
    [
        (A, FulfilmentType.DROP_SHIP, OFFER, None),
        (U, FulfilmentType.DROP_SHIP, OFFER, PurchaseBlocker.PRODUCT_UNAVAILABLE),
        (D, FulfilmentType.DROP_SHIP, OFFER, PurchaseBlocker.PRODUCT_DEPRECATED),
        (A, FulfilmentType.DIGITAL, None, PurchaseBlocker.NOT_OFFERED),
        (
            A,
            FulfilmentType.DROP_SHIP,
            PracticeOffer(1000, None, visible=False, in_clinic_stock_available=True),
            PurchaseBlocker.NOT_VISIBLE,
        ),
        (
            A,
            FulfilmentType.IN_CLINIC,
            PracticeOffer(1000, None, visible=True, in_clinic_stock_available=False),
            PurchaseBlocker.IN_CLINIC_STOCK_UNAVAILABLE,
        ),
        (
            A,
            FulfilmentType.DROP_SHIP,
            PracticeOffer(1000, None, visible=True, in_clinic_stock_available=False),
            None,
        ),
    ],
)
def test_purchase_gating(
    availability: AvailabilityStatus,
    fulfilment: FulfilmentType,
    offer: PracticeOffer | None,
    blocker: PurchaseBlocker | None,
) -> None:
    assert purchase_blocker(availability, fulfilment, offer) == blocker
