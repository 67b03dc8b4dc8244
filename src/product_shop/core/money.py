"""The one money type: integer minor units plus an ISO 4217 currency. Never floats."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_MINOR = 10**11  # a hundred million major units: far beyond any dental product

# The currencies products are priced in: ISO 4217 codes of currencies with two decimal places,
# since the staff portal, the patient app and the payment page show minor units as hundredths.
# Amounts other modules send (a refund, a points value) only need an ISO 4217-shaped code.
Currency = Literal["GBP", "EUR", "USD"]
CURRENCY_SYMBOLS: Final[dict[str, str]] = {"GBP": "£", "EUR": "€", "USD": "$"}


def validate_currency(currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise ValueError(f"currency must be an ISO 4217 code such as GBP, got {currency!r}")
    return currency


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError("amount_minor must be an int of minor units")
        if not 0 <= self.amount_minor <= MAX_MINOR:
            raise ValueError("amount_minor out of range")
        validate_currency(self.currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def times(self, quantity: int) -> Money:
        return Money(self.amount_minor * quantity, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")
