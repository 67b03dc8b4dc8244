import time
import uuid
from typing import get_args

import pytest

from product_shop.core.ids import new_id
from product_shop.core.money import CURRENCY_SYMBOLS, Currency, Money


def test_new_id_is_a_version_7_rfc_9562_uuid() -> None:
    value = new_id()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_new_ids_are_time_ordered_across_milliseconds() -> None:
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert first < second
    assert len({new_id() for _ in range(1000)}) == 1000


def test_money_adds_in_minor_units() -> None:
    assert Money(1999, "GBP") + Money(1, "GBP") == Money(2000, "GBP")
    assert Money(250, "GBP").times(3) == Money(750, "GBP")


@pytest.mark.parametrize("amount", [12.5, 12.0, True, "100"])
def test_money_refuses_anything_but_integer_minor_units(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "GBP")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["gbp", "GB", "POUND", ""])
def test_money_refuses_a_currency_that_is_not_iso_4217(currency: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(100, currency)


def test_money_refuses_mixing_currencies_and_negative_amounts() -> None:
    with pytest.raises(ValueError, match="cannot combine"):
        Money(100, "GBP") + Money(100, "EUR")
    with pytest.raises(ValueError, match="out of range"):
        Money(100, "GBP") - Money(200, "GBP")


def test_every_currency_products_are_priced_in_has_its_symbol() -> None:
    assert set(get_args(Currency)) == set(CURRENCY_SYMBOLS)
