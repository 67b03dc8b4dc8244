"""The Integrated Payments HTTP adapter against the simulator, over real HTTP on a local port.

Retries in detail (which requests are resent, how often, Retry-After) are pinned against a scripted
local server in tests/unit/test_payments_http_retries.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from product_shop.integrations.payments import (
    PaymentIntent,
    PaymentRejected,
    PaymentState,
    PaymentsUnavailable,
)
from product_shop.integrations.payments_http import HttpIntegratedPayments
from product_shop.simulators.payments import SimulatorConfig, State, create_payments_simulator
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background

API_KEY = "adapter-test-api-key"
GOOD_CARD = "4242424242424242"


@dataclass
class Simulator:
    server: BackgroundServer
    state: State

    @property
    def url(self) -> str:
        return self.server.url

    def add_fault(self, **fault: Any) -> None:
        response = httpx.post(f"{self.url}/_simulator/faults", json=fault)
        assert response.status_code == 204

    def inspect(self, intent_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_simulator/intents/{intent_id}")
        assert response.status_code == 200
        document: dict[str, Any] = response.json()
        return document


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    port = free_port()
    app = create_payments_simulator(
        SimulatorConfig(api_key=API_KEY, public_url=f"http://127.0.0.1:{port}", callback_url=None)
    )
    server = serve_in_background(app, port)
    yield Simulator(server=server, state=app.state.sim)
    server.stop()


@pytest.fixture
def sim(simulator: Simulator) -> Iterator[Simulator]:
    """The shared simulator; every fault a test adds must have been used up by its end."""
    yield simulator
    assert simulator.state.faults == {}


@pytest.fixture
def payments(sim: Simulator) -> Iterator[HttpIntegratedPayments]:
    adapter = HttpIntegratedPayments(sim.url, api_key=API_KEY, timeout_seconds=2.0)
    yield adapter
    adapter.close()


@pytest.fixture
def impatient_payments(sim: Simulator) -> Iterator[HttpIntegratedPayments]:
    adapter = HttpIntegratedPayments(sim.url, api_key=API_KEY, timeout_seconds=0.5)
    yield adapter
    adapter.close()


def new_intent(payments: HttpIntegratedPayments, amount_minor: int = 5999) -> PaymentIntent:
    return payments.create_intent(
        amount_minor=amount_minor,
        currency="GBP",
        merchant_reference=f"PS-{uuid.uuid4().hex[:12]}",
        idempotency_key=str(uuid.uuid4()),
    )


def pay(intent: PaymentIntent, **body: str) -> httpx.Response:
    return httpx.post(intent.payment_url, json=body)


def captured_intent(payments: HttpIntegratedPayments, amount_minor: int = 5999) -> PaymentIntent:
    intent = new_intent(payments, amount_minor)
    assert pay(intent, card_number=GOOD_CARD).status_code == 200
    return intent


# ---- intents and idempotency -------------------------------------------------------------------


def test_create_intent_returns_a_payment_page_on_the_simulator(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = payments.create_intent(
        amount_minor=5999, currency="GBP", merchant_reference="PS-0001", idempotency_key="k-page"
    )
    assert intent.intent_id.startswith("pi_")
    assert intent.payment_url == f"{sim.url}/pay/{intent.intent_id}"
    assert (intent.amount_minor, intent.currency, intent.merchant_reference) == (
        5999,
        "GBP",
        "PS-0001",
    )
    status = payments.get_payment(intent.intent_id)
    assert status.state is PaymentState.REQUIRES_PAYMENT
    assert status.transaction_ref is None


def test_repeating_create_intent_with_the_same_key_returns_the_same_intent(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    key = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "amount_minor": 1250,
        "currency": "GBP",
        "merchant_reference": "PS-0002",
    }
    first = payments.create_intent(**fields, idempotency_key=key)
    intents_before = len(sim.state.intents)

    again = payments.create_intent(**fields, idempotency_key=key)

    assert again == first
    assert len(sim.state.intents) == intents_before


def test_the_same_key_with_another_amount_is_refused_and_creates_nothing(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    key = str(uuid.uuid4())
    first = payments.create_intent(
        amount_minor=1250, currency="GBP", merchant_reference="PS-0003", idempotency_key=key
    )
    intents_before = len(sim.state.intents)

    with pytest.raises(PaymentRejected) as raised:
        payments.create_intent(
            amount_minor=9999, currency="GBP", merchant_reference="PS-0003", idempotency_key=key
        )

    assert raised.value.code == "idempotency_key_reused"
    assert len(sim.state.intents) == intents_before
    assert sim.inspect(first.intent_id)["amount_minor"] == 1250


def test_a_lost_create_response_is_retried_without_creating_a_second_intent(
    sim: Simulator, impatient_payments: HttpIntegratedPayments
) -> None:
    # given the module creates the intent but its answer arrives after the adapter's timeout
    sim.add_fault(operation="create_intent", mode="delay_after", seconds=1.0, times=1)
    intents_before = len(sim.state.intents)
    # when the adapter creates an intent
    intent = new_intent(impatient_payments)
    # then its retry (same Idempotency-Key) got the first intent back: exactly one was created
    assert len(sim.state.intents) == intents_before + 1
    assert intent.intent_id in sim.state.intents


# ---- the hosted payment page ---------------------------------------------------------------


def test_a_card_payment_is_captured_with_scheme_and_last_four(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = new_intent(payments)

    response = pay(intent, card_number=GOOD_CARD)

    assert response.status_code == 200
    status = payments.get_payment(intent.intent_id)
    assert status.state is PaymentState.CAPTURED
    assert status.transaction_ref is not None
    assert status.transaction_ref.startswith("DNA-")
    assert (status.method, status.card_scheme, status.card_last4) == ("card", "visa", "4242")
    assert (status.failure_code, status.failure_message) == (None, None)
    assert sim.inspect(intent.intent_id)["capture_count"] == 1


def test_a_wallet_payment_is_captured(sim: Simulator, payments: HttpIntegratedPayments) -> None:
    intent = new_intent(payments)

    response = pay(intent, method="apple_pay")

    assert response.status_code == 200
    status = payments.get_payment(intent.intent_id)
    assert status.state is PaymentState.CAPTURED
    assert status.method == "apple_pay"
    assert status.transaction_ref is not None
    assert sim.inspect(intent.intent_id)["capture_count"] == 1


def test_direct_debit_is_refused_and_the_intent_still_awaits_payment(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = new_intent(payments)

    response = pay(intent, method="direct_debit")

    assert response.status_code == 422
    assert response.json()["code"] == "method_not_supported"
    status = payments.get_payment(intent.intent_id)
    assert status.state is PaymentState.REQUIRES_PAYMENT
    assert (status.method, status.transaction_ref) == (None, None)
    assert sim.inspect(intent.intent_id)["capture_count"] == 0


@pytest.mark.parametrize(
    ("card_number", "failure_code"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000002500003155", "authentication_failed"),
        ("4000000000000119", "processing_error"),
    ],
)
def test_each_failing_test_card_fails_the_payment_with_its_code(
    sim: Simulator, payments: HttpIntegratedPayments, card_number: str, failure_code: str
) -> None:
    intent = new_intent(payments)

    response = pay(intent, card_number=card_number)

    assert response.status_code == 402
    status = payments.get_payment(intent.intent_id)
    assert status.state is PaymentState.FAILED
    assert status.failure_code == failure_code
    assert status.failure_message
    assert status.transaction_ref is None
    assert sim.inspect(intent.intent_id)["capture_count"] == 0


def test_paying_a_captured_intent_again_is_refused_and_never_charges_twice(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = captured_intent(payments)
    transaction_ref = payments.get_payment(intent.intent_id).transaction_ref

    response = pay(intent, card_number="5555555555554444")

    assert response.status_code == 409
    assert response.json()["code"] == "intent_closed"
    inspected = sim.inspect(intent.intent_id)
    assert inspected["capture_count"] == 1
    assert (inspected["transaction_ref"], inspected["card_last4"]) == (transaction_ref, "4242")


# ---- failures of the module ----------------------------------------------------------------


def test_a_single_5xx_is_retried_transparently(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = new_intent(payments)
    sim.add_fault(operation="get_payment", mode="error", status=503, times=1)

    status = payments.get_payment(intent.intent_id)

    assert status.intent_id == intent.intent_id
    assert status.state is PaymentState.REQUIRES_PAYMENT


def test_repeated_5xx_raise_payments_unavailable(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = new_intent(payments)
    sim.add_fault(operation="get_payment", mode="error", status=503, times=3)

    with pytest.raises(PaymentsUnavailable, match="HTTP 503"):
        payments.get_payment(intent.intent_id)
    # (the `sim` fixture checks all three faulty answers were used: three attempts, no more)


def test_answers_slower_than_the_timeout_raise_payments_unavailable(
    sim: Simulator, impatient_payments: HttpIntegratedPayments
) -> None:
    intent = new_intent(impatient_payments)
    sim.add_fault(operation="get_payment", mode="delay", seconds=1.0, times=3)

    with pytest.raises(PaymentsUnavailable, match="Timeout"):
        impatient_payments.get_payment(intent.intent_id)


def test_a_wrong_api_key_is_rejected_and_creates_nothing(sim: Simulator) -> None:
    wrong = HttpIntegratedPayments(sim.url, api_key="not-the-key", timeout_seconds=2.0)
    intents_before = len(sim.state.intents)
    try:
        with pytest.raises(PaymentRejected) as raised:
            new_intent(wrong)
    finally:
        wrong.close()
    assert raised.value.code == "unauthorised"
    assert len(sim.state.intents) == intents_before


# ---- order reference -------------------------------------------------------------------------


def test_the_order_reference_is_set_after_capture(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = captured_intent(payments)
    order_id = uuid.uuid4()

    payments.set_order_reference(intent.intent_id, order_id)
    payments.set_order_reference(intent.intent_id, order_id)  # a repeat is harmless

    assert sim.inspect(intent.intent_id)["order_reference"] == str(order_id)


def test_the_order_reference_is_refused_before_capture(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = new_intent(payments)

    with pytest.raises(PaymentRejected) as raised:
        payments.set_order_reference(intent.intent_id, uuid.uuid4())

    assert raised.value.code == "not_captured"
    assert sim.inspect(intent.intent_id)["order_reference"] is None


# ---- refunds ---------------------------------------------------------------------------------


def test_a_refund_within_the_captured_amount_succeeds(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = captured_intent(payments, amount_minor=5999)
    transaction_ref = payments.get_payment(intent.intent_id).transaction_ref
    assert transaction_ref is not None

    result = payments.refund(
        transaction_ref=transaction_ref,
        amount_minor=2000,
        currency="GBP",
        reason_code="customer_request",
        initiated_by="staff:refunds-test",
        idempotency_key=str(uuid.uuid4()),
    )

    assert result.refund_ref.startswith("DNA-RF-")
    assert (result.transaction_ref, result.amount_minor, result.currency, result.status) == (
        transaction_ref,
        2000,
        "GBP",
        "succeeded",
    )
    assert sim.inspect(intent.intent_id)["refunded_minor"] == 2000


def test_a_refund_over_the_captured_amount_is_rejected_and_refunds_nothing(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = captured_intent(payments, amount_minor=5999)
    transaction_ref = payments.get_payment(intent.intent_id).transaction_ref
    assert transaction_ref is not None
    refund = {
        "transaction_ref": transaction_ref,
        "currency": "GBP",
        "reason_code": "damaged_item",
        "initiated_by": "staff:refunds-test",
    }
    payments.refund(**refund, amount_minor=5000, idempotency_key=str(uuid.uuid4()))
    refunds_before = len(sim.state.refunds)

    with pytest.raises(PaymentRejected) as raised:
        payments.refund(**refund, amount_minor=1000, idempotency_key=str(uuid.uuid4()))

    assert raised.value.code == "refund_exceeds_capture"
    assert sim.inspect(intent.intent_id)["refunded_minor"] == 5000
    assert len(sim.state.refunds) == refunds_before


def test_a_lost_refund_response_is_retried_and_refunds_once(
    sim: Simulator, impatient_payments: HttpIntegratedPayments
) -> None:
    intent = captured_intent(impatient_payments, amount_minor=5999)
    transaction_ref = impatient_payments.get_payment(intent.intent_id).transaction_ref
    assert transaction_ref is not None
    # given the module refunds but its answer arrives after the adapter's timeout
    sim.add_fault(operation="refund", mode="delay_after", seconds=1.0, times=1)
    refunds_before = len(sim.state.refunds)
    # when the adapter refunds
    result = impatient_payments.refund(
        transaction_ref=transaction_ref,
        amount_minor=2000,
        currency="GBP",
        reason_code="customer_request",
        initiated_by="staff:refunds-test",
        idempotency_key=str(uuid.uuid4()),
    )
    # then its retry (same Idempotency-Key) got the first refund back: money went back once
    assert len(sim.state.refunds) == refunds_before + 1
    assert result.refund_ref in sim.state.refunds
    assert sim.inspect(intent.intent_id)["refunded_minor"] == 2000


def test_a_refund_is_found_by_our_reference_and_an_unknown_reference_finds_none(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = captured_intent(payments, amount_minor=5999)
    transaction_ref = payments.get_payment(intent.intent_id).transaction_ref
    assert transaction_ref is not None
    reference = str(uuid.uuid4())
    made = payments.refund(
        transaction_ref=transaction_ref,
        amount_minor=1500,
        currency="GBP",
        reason_code="damaged_item",
        initiated_by="staff:refunds-test",
        idempotency_key=f"refund:{reference}",
        merchant_reference=reference,
    )

    found = payments.get_refund(reference)

    assert found is not None
    assert (found.refund_ref, found.amount_minor, found.merchant_reference) == (
        made.refund_ref,
        1500,
        reference,
    )
    assert found.method == "card"  # back to the original payment method
    assert payments.get_refund(str(uuid.uuid4())) is None


def test_a_refund_with_another_currency_is_refused(
    sim: Simulator, payments: HttpIntegratedPayments
) -> None:
    intent = captured_intent(payments, amount_minor=5999)
    transaction_ref = payments.get_payment(intent.intent_id).transaction_ref
    assert transaction_ref is not None
    with pytest.raises(PaymentRejected) as raised:
        payments.refund(
            transaction_ref=transaction_ref,
            amount_minor=100,
            currency="EUR",
            reason_code="damaged_item",
            initiated_by="staff:refunds-test",
            idempotency_key=str(uuid.uuid4()),
        )
    assert raised.value.code == "currency_mismatch"
    assert sim.inspect(intent.intent_id)["refunded_minor"] == 0


def test_refund_reasons_include_customer_request(payments: HttpIntegratedPayments) -> None:
    reasons = payments.refund_reasons()

    codes = [reason.code for reason in reasons]
    assert "customer_request" in codes
    assert len(codes) == len(set(codes))
    assert all(reason.description for reason in reasons)
