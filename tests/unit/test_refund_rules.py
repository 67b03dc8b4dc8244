"""What a refund request comes to (refunds/model.py) and the reason-code cache (refunds/reasons.py),
without a database or a network."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from product_shop.core.errors import Conflict, ServiceUnavailable, Unprocessable
from product_shop.integrations.payments import PaymentsUnavailable, RefundReason
from product_shop.refunds.model import LineHolding, RefundPlan, plan_refund, refundable
from product_shop.refunds.reasons import RefundReasons, check_reason

A, B = uuid.uuid4(), uuid.uuid4()
LINES = [LineHolding(A, 2, 5999, 0, 0), LineHolding(B, 1, 24900, 0, 0)]  # 36898


def _plan(**kwargs: Any) -> RefundPlan:
    defaults: dict[str, Any] = {
        "refundable_minor": 36898,
        "captured_minor": 36898,
        "total_minor": 36898,
        "lines": LINES,
        "amount_minor": None,
        "requested": None,
    }
    return plan_refund(**{**defaults, **kwargs})


def test_the_balance_refunds_what_is_left_and_every_unit_not_refunded() -> None:
    plan = _plan(refundable_minor=33898, lines=[LineHolding(A, 2, 5999, 1, 0), LINES[1]])
    assert plan.kind == "balance"
    assert plan.amount_minor == 33898
    assert [(p.line_item_id, p.quantity) for p in plan.lines] == [(A, 1), (B, 1)]


def test_lines_refund_their_unit_price_times_quantity() -> None:
    plan = _plan(requested=[(A, 1)])
    assert (plan.kind, plan.amount_minor) == ("lines", 5999)


def test_more_units_than_are_left_on_a_line_is_refused() -> None:
    with pytest.raises(Unprocessable) as raised:
        _plan(lines=[LineHolding(A, 2, 5999, 1, 1), LINES[1]], requested=[(A, 1)])
    assert raised.value.code == "refund_exceeds_quantity"


def test_a_line_of_another_order_is_refused() -> None:
    with pytest.raises(Unprocessable) as raised:
        _plan(requested=[(uuid.uuid4(), 1)])
    assert raised.value.code == "unknown_order_line"


def test_nothing_left_is_a_conflict() -> None:
    with pytest.raises(Conflict) as raised:
        _plan(refundable_minor=0, amount_minor=1)
    assert raised.value.code == "nothing_to_refund"


def test_a_line_of_an_order_paid_partly_with_points_refunds_its_share_of_the_money() -> None:
    # 36898 total, 18449 captured (half paid with points): a 5999 toothbrush refunds 2999
    plan = _plan(captured_minor=18449, refundable_minor=18449, requested=[(A, 1)])
    assert plan.amount_minor == 2999


@given(
    captured=st.integers(min_value=1, max_value=10**7),
    refunded=st.integers(min_value=0, max_value=10**7),
    pending=st.integers(min_value=0, max_value=10**7),
    amount=st.integers(min_value=1, max_value=2 * 10**7),
)
def test_an_amount_is_planned_only_within_what_is_left(
    captured: int, refunded: int, pending: int, amount: int
) -> None:
    left = refundable(captured, refunded, pending)
    try:
        plan = _plan(
            refundable_minor=left,
            captured_minor=captured,
            total_minor=captured,
            amount_minor=amount,
        )
    except (Conflict, Unprocessable):
        assert left <= 0 or amount > left
    else:
        assert 0 < plan.amount_minor == amount <= left


class FakePayments:
    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def refund_reasons(self) -> list[RefundReason]:
        self.calls += 1
        if self.down:
            raise PaymentsUnavailable("down")
        return [RefundReason("damaged_item", "Damaged")]


def test_reason_codes_are_read_once_per_ttl_and_a_known_set_outlives_an_outage() -> None:
    now = [0.0]
    payments = FakePayments()
    reasons = RefundReasons(payments, ttl_seconds=300, monotonic=lambda: now[0])  # type: ignore[arg-type]

    assert reasons.codes() == {"damaged_item"}
    now[0] = 299
    reasons.codes()
    assert payments.calls == 1
    now[0] = 301
    payments.down = True
    assert reasons.codes() == {"damaged_item"}  # read again, unanswered: the known set
    assert payments.calls == 2


def test_with_no_known_set_an_outage_is_503() -> None:
    payments = FakePayments()
    payments.down = True
    with pytest.raises(ServiceUnavailable):
        RefundReasons(payments, ttl_seconds=300).codes()  # type: ignore[arg-type]


def test_an_unknown_reason_code_is_422_listing_the_set() -> None:
    with pytest.raises(Unprocessable) as raised:
        check_reason("felt_like_it", {"damaged_item"})
    assert raised.value.code == "unknown_reason_code"
    assert raised.value.extra["reason_codes"] == ["damaged_item"]
    check_reason("damaged_item", {"damaged_item"})
