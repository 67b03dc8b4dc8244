"""The Rewards Manager HTTP adapter against its simulator, over real HTTP on local ports; and
`product-shop simulate rewards`.

The simulator is this module's own (`module_rewards_simulator`, not the session's): a point is
worth 1p at `PRACTICE` and 5p at `FIVE_PENCE_PRACTICE`, every other practice has no rewards; a
patient first seen starts with 5,000 points; redemptions confirm by themselves 0.05 s after they
are made; no duplicate callbacks. After each test its faults, configuration and callback URL are
reset (accounts and redemptions stay: every test uses patients and references of its own). Its
signed callbacks are captured by a small stdlib receiver on 127.0.0.1 (port 0) that each test
starts and stops; waits poll against a deadline.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from product_shop.cli import main
from product_shop.core import signing
from product_shop.integrations.rewards import (
    Redemption,
    RewardsAccount,
    RewardsRejected,
    RewardsUnavailable,
)
from product_shop.integrations.rewards_http import HttpRewardsManager
from product_shop.simulators.rewards import RewardsSimulatorConfig, create_rewards_simulator
from product_shop.simulators.server import BackgroundServer, serve_in_background

# Its own Standard Webhooks secret (32 bytes), not the payments or the suppliers one.
REWARDS_WEBHOOK_SECRET = "whsec_dGVzdC1yZXdhcmRzLXdlYmhvb2stc2VjcmV0LTMyYnk="
REWARDS_API_KEY = "test-rewards-api-key"
PRACTICE = "practice-with-rewards"  # a point is worth 1p
FIVE_PENCE_PRACTICE = "practice-with-5p-points"
NO_REWARDS_PRACTICE = "practice-without-rewards"
DEFAULT_BALANCE = 5000
DEADLINE_SECONDS = 5.0
MAX_CAPTURED = 200  # the receiver keeps no more than this
POLL_SECONDS = 0.02  # how soon a local server notices it is asked to stop


def wait_for(check: Callable[[], Any], what: str) -> Any:
    """Poll `check` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---- the simulator and its controls -----------------------------------------------------------


@pytest.fixture(scope="module")
def module_rewards_simulator() -> Iterator[BackgroundServer]:
    app = create_rewards_simulator(
        RewardsSimulatorConfig(
            api_key=REWARDS_API_KEY,
            webhook_secret=REWARDS_WEBHOOK_SECRET,
            callback_url=None,
            enabled_practices={PRACTICE: 1, FIVE_PENCE_PRACTICE: 5},
            default_balance_points=DEFAULT_BALANCE,
            auto_confirm=True,
            confirm_delay_seconds=0.05,
            duplicate_callback_rate=0.0,
        )
    )
    server = serve_in_background(app)
    yield server
    server.stop()


@dataclass
class Controls:
    url: str
    http: httpx.Client

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        response = self.http.request(method, f"{self.url}/_simulator{path}", json=body)
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def add_fault(self, **fault: Any) -> None:
        self.call("POST", "/faults", fault, expect=204)

    def configure(self, **config: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("POST", "/config", config)
        return answer

    def set_balance(self, patient_id: str, practice_id: str, points: int) -> dict[str, Any]:
        body = {"practice_id": practice_id, "balance_points": points}
        answer: dict[str, Any] = self.call("PUT", f"/accounts/{patient_id}", body)
        return answer

    def inspect(self, redemption_ref: str) -> dict[str, Any]:
        document: dict[str, Any] = self.get(f"/redemptions/{redemption_ref}")
        return document

    def redemptions(self, reference: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get(f"/redemptions?reference={reference}")["redemptions"]
        return found

    def reversals(self, redemption_ref: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get(f"/reversals?redemption_ref={redemption_ref}")[
            "reversals"
        ]
        return found

    def confirm(self, redemption_ref: str, copies: int = 1) -> dict[str, Any]:
        answer: dict[str, Any] = self.call(
            "POST", f"/redemptions/{redemption_ref}/confirm", {"copies": copies}
        )
        return answer


@pytest.fixture
def sim(module_rewards_simulator: BackgroundServer) -> Iterator[Controls]:
    """The module's simulator; every fault a test queues must be used by its end."""
    with httpx.Client(timeout=5.0) as http:
        controls = Controls(module_rewards_simulator.url, http)
        try:
            yield controls
            assert controls.get("/faults") == {"faults": {}}
        finally:
            http.post(f"{module_rewards_simulator.url}/_simulator/reset")


@pytest.fixture
def rewards(sim: Controls) -> Iterator[HttpRewardsManager]:
    adapter = HttpRewardsManager(sim.url, api_key=REWARDS_API_KEY, timeout_seconds=2.0)
    yield adapter
    adapter.close()


@pytest.fixture
def impatient_rewards(sim: Controls) -> Iterator[HttpRewardsManager]:
    adapter = HttpRewardsManager(sim.url, api_key=REWARDS_API_KEY, timeout_seconds=0.5)
    yield adapter
    adapter.close()


def new_patient() -> str:
    return f"patient-{uuid.uuid4()}"


def redeem(
    rewards: HttpRewardsManager,
    patient_id: str,
    points: int = 500,
    *,
    practice_id: str = PRACTICE,
    amount_minor: int | None = None,
    currency: str = "GBP",
    reference: str | None = None,
    key: str | None = None,
) -> Redemption:
    value = 5 if practice_id == FIVE_PENCE_PRACTICE else 1
    return rewards.redeem(
        patient_id=patient_id,
        practice_id=practice_id,
        points=points,
        amount_minor=points * value if amount_minor is None else amount_minor,
        currency=currency,
        reference=reference or str(uuid.uuid4()),
        idempotency_key=key or str(uuid.uuid4()),
    )


def balance(rewards: HttpRewardsManager, patient_id: str, practice_id: str = PRACTICE) -> int:
    return rewards.account(patient_id, practice_id).balance_points


# ---- a callback receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    deliveries: list[Delivery] = field(default_factory=list)
    # Answer statuses to give, in turn, before answering 204 to everything.
    script: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/rewards"

    def take(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            if len(self.deliveries) < MAX_CAPTURED:
                self.deliveries.append(Delivery(headers, body))
            return self.script.pop(0) if self.script else 204

    def wait(self, count: int) -> list[Delivery]:
        def enough() -> list[Delivery] | None:
            with self.lock:
                return list(self.deliveries) if len(self.deliveries) >= count else None

        found: list[Delivery] = wait_for(enough, f"{count} callbacks")
        return found

    def received(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5.0  # an idle keep-alive connection does not hold a handler thread for ever
    server: _ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(length, 1_000_000))
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.server.receiver.take(headers, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


@pytest.fixture
def receiver(sim: Controls) -> Iterator[Receiver]:
    """A local receiver the simulator's callbacks go to, for this test only."""
    server = _ReceiverServer(("127.0.0.1", 0), _Handler)
    receiver = Receiver(server=server)
    server.receiver = receiver
    thread = threading.Thread(
        target=server.serve_forever, args=(POLL_SECONDS,), name="callback-receiver", daemon=True
    )
    thread.start()
    sim.configure(callback_url=receiver.url)
    yield receiver
    sim.configure(callback_url=None)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def verified(delivery: Delivery) -> dict[str, Any]:
    """The callback's event after checking its Standard Webhooks signature with the shared
    secret, by the reference library and by `core.signing` (raises if it is not authentic)."""
    signed = {k: v for k, v in delivery.headers.items() if k.startswith("webhook-")}
    event: dict[str, Any] = Webhook(REWARDS_WEBHOOK_SECRET).verify(delivery.body, signed)
    message_id = signing.verify(
        REWARDS_WEBHOOK_SECRET, delivery.headers, delivery.body, now=int(time.time())
    )
    assert message_id == signed["webhook-id"] == event["id"]
    return event


# ---- accounts --------------------------------------------------------------------------------


def test_an_account_at_a_practice_with_rewards_starts_with_the_default_balance(
    rewards: HttpRewardsManager,
) -> None:
    patient = new_patient()

    account = rewards.account(patient, PRACTICE)
    at_five_pence = rewards.account(patient, FIVE_PENCE_PRACTICE)

    assert account == RewardsAccount(
        patient_id=patient,
        practice_id=PRACTICE,
        enabled=True,
        balance_points=DEFAULT_BALANCE,
        value_minor_per_point=1,
        currency="GBP",
    )
    assert (at_five_pence.enabled, at_five_pence.value_minor_per_point) == (True, 5)
    assert at_five_pence.value_of(100) == 500


def test_an_account_at_a_practice_without_rewards_is_disabled_and_holds_no_points(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient = new_patient()

    account = rewards.account(patient, NO_REWARDS_PRACTICE)

    assert (account.enabled, account.balance_points, account.value_minor_per_point) == (
        False,
        0,
        0,
    )
    assert account.currency == "GBP"
    # A balance set there shows only once the practice has rewards.
    assert sim.set_balance(patient, NO_REWARDS_PRACTICE, 900)["balance_points"] == 0
    assert balance(rewards, patient, NO_REWARDS_PRACTICE) == 0
    sim.configure(enabled_practices={PRACTICE: 1, NO_REWARDS_PRACTICE: 2})
    now = rewards.account(patient, NO_REWARDS_PRACTICE)
    assert (now.enabled, now.balance_points, now.value_minor_per_point) == (True, 900, 2)


def test_ids_are_sent_quoted(sim: Controls, rewards: HttpRewardsManager) -> None:
    patient = f"patient {uuid.uuid4()}?practice_id={NO_REWARDS_PRACTICE}&x=1#f"
    practice = "practice & co"
    sim.configure(enabled_practices={practice: 3})

    account = rewards.account(patient, practice)

    assert (account.patient_id, account.practice_id) == (patient, practice)
    assert (account.enabled, account.value_minor_per_point) == (True, 3)


# ---- redemptions -----------------------------------------------------------------------------


def test_a_redemption_deducts_the_points_at_once_and_is_confirmed_by_a_signed_callback(
    sim: Controls, rewards: HttpRewardsManager, receiver: Receiver
) -> None:
    patient, reference = new_patient(), str(uuid.uuid4())

    redemption = redeem(rewards, patient, 500, reference=reference)

    assert redemption.redemption_ref.startswith("RM-RD-")
    assert (redemption.status, redemption.points, redemption.amount_minor) == ("pending", 500, 500)
    assert balance(rewards, patient) == DEFAULT_BALANCE - 500
    [delivery] = receiver.wait(1)
    event = verified(delivery)
    assert event["type"] == "redemption.confirmed"
    settlement_ref = event["data"]["settlement_ref"]
    assert settlement_ref.startswith("RM-ST-")
    assert event["data"] == {
        "redemption_ref": redemption.redemption_ref,
        "reference": reference,
        "patient_id": patient,
        "practice_id": PRACTICE,
        "points": 500,
        "amount_minor": 500,
        "currency": "GBP",
        "settlement_ref": settlement_ref,
    }
    assert rewards.get_redemption(redemption.redemption_ref).status == "confirmed"
    inspected = wait_for(
        lambda: (found := sim.inspect(redemption.redemption_ref))["callbacks_sent"] and found,
        "the delivery to be counted",
    )
    assert (inspected["status"], inspected["settlement_ref"]) == ("confirmed", settlement_ref)
    assert (inspected["points_reversed"], inspected["reversal_count"]) == (0, 0)
    assert inspected["callbacks_sent"] == 1
    assert len(receiver.received()) == 1  # no duplicate at a duplicate rate of 0
    assert balance(rewards, patient) == DEFAULT_BALANCE - 500  # deducted once


def test_points_at_five_pence_redeem_for_five_times_their_number(
    rewards: HttpRewardsManager,
) -> None:
    patient = new_patient()

    redemption = redeem(rewards, patient, 300, practice_id=FIVE_PENCE_PRACTICE)

    assert (redemption.points, redemption.amount_minor) == (300, 1500)
    assert balance(rewards, patient, FIVE_PENCE_PRACTICE) == DEFAULT_BALANCE - 300
    assert balance(rewards, patient, PRACTICE) == DEFAULT_BALANCE  # one account per practice


def test_repeating_a_redemption_with_its_key_returns_the_same_redemption(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient, reference, key = new_patient(), str(uuid.uuid4()), str(uuid.uuid4())

    first = redeem(rewards, patient, 500, reference=reference, key=key)
    again = redeem(rewards, patient, 500, reference=reference, key=key)

    assert again.redemption_ref == first.redemption_ref
    [made] = sim.redemptions(reference)
    assert made["requests"] == 2
    assert balance(rewards, patient) == DEFAULT_BALANCE - 500


def test_the_same_key_with_another_redemption_is_rejected_as_reused(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient, reference, key = new_patient(), str(uuid.uuid4()), str(uuid.uuid4())
    redeem(rewards, patient, 500, reference=reference, key=key)

    with pytest.raises(RewardsRejected) as raised:
        redeem(rewards, patient, 600, reference=reference, key=key)

    assert raised.value.code == "idempotency_key_reused"
    assert len(sim.redemptions(reference)) == 1
    assert balance(rewards, patient) == DEFAULT_BALANCE - 500


def test_a_lost_redemption_answer_is_resent_and_makes_one_redemption(
    sim: Controls, impatient_rewards: HttpRewardsManager
) -> None:
    patient, reference = new_patient(), str(uuid.uuid4())
    sim.add_fault(operation="redeem", mode="delay_after", seconds=1.0, times=1)

    redemption = redeem(impatient_rewards, patient, 500, reference=reference)

    [made] = sim.redemptions(reference)
    assert made["redemption_ref"] == redemption.redemption_ref
    assert made["requests"] == 2  # the first send (answered too late) and the resend
    assert balance(impatient_rewards, patient) == DEFAULT_BALANCE - 500


@pytest.mark.parametrize(
    ("code", "practice_id", "points", "amount_minor", "currency"),
    [
        ("insufficient_points", PRACTICE, 101, 101, "GBP"),
        ("rewards_disabled", NO_REWARDS_PRACTICE, 50, 50, "GBP"),
        ("amount_mismatch", FIVE_PENCE_PRACTICE, 50, 50, "GBP"),
        ("amount_mismatch", PRACTICE, 50, 50, "EUR"),
    ],
)
def test_a_redemption_rewards_manager_cannot_make_is_rejected_with_its_code(
    sim: Controls,
    rewards: HttpRewardsManager,
    code: str,
    practice_id: str,
    points: int,
    amount_minor: int,
    currency: str,
) -> None:
    patient, reference = new_patient(), str(uuid.uuid4())
    sim.set_balance(patient, practice_id, 100)

    with pytest.raises(RewardsRejected) as raised:
        redeem(
            rewards,
            patient,
            points,
            practice_id=practice_id,
            amount_minor=amount_minor,
            currency=currency,
            reference=reference,
        )

    assert raised.value.code == code
    assert raised.value.message  # the module's detail
    assert sim.redemptions(reference) == []
    expected = 0 if practice_id == NO_REWARDS_PRACTICE else 100
    assert balance(rewards, patient, practice_id) == expected


def test_a_refusal_is_not_kept_under_its_key(sim: Controls, rewards: HttpRewardsManager) -> None:
    patient, key = new_patient(), str(uuid.uuid4())
    sim.set_balance(patient, PRACTICE, 100)
    with pytest.raises(RewardsRejected, match="fewer than 500"):
        redeem(rewards, patient, 500, reference="checkout-1", key=key)
    sim.set_balance(patient, PRACTICE, 800)

    redemption = redeem(rewards, patient, 500, reference="checkout-1", key=key)

    assert redemption.status in ("pending", "confirmed")
    assert balance(rewards, patient) == 300


def test_a_redemption_without_an_idempotency_key_is_refused(sim: Controls) -> None:
    body = {
        "patient_id": new_patient(),
        "practice_id": PRACTICE,
        "points": 10,
        "amount_minor": 10,
        "currency": "GBP",
        "reference": "checkout-1",
    }
    response = sim.http.post(
        f"{sim.url}/v1/redemptions",
        json=body,
        headers={"Authorization": f"Bearer {REWARDS_API_KEY}"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"


# ---- reversals -------------------------------------------------------------------------------


def test_a_reversal_reinstates_the_points_and_is_reported_by_a_signed_callback(
    sim: Controls, rewards: HttpRewardsManager, receiver: Receiver
) -> None:
    patient, reference = new_patient(), str(uuid.uuid4())
    redemption = redeem(rewards, patient, 500, reference=reference)
    receiver.wait(1)  # confirmed

    reversal = rewards.request_reversal(
        redemption.redemption_ref, points=200, reason="refund", idempotency_key=str(uuid.uuid4())
    )

    assert reversal.reversal_ref.startswith("RM-RV-")
    assert (reversal.redemption_ref, reversal.points, reversal.status) == (
        redemption.redemption_ref,
        200,
        "pending",
    )
    assert balance(rewards, patient) == DEFAULT_BALANCE - 300
    confirmed, reversed_ = receiver.wait(2)
    assert verified(confirmed)["type"] == "redemption.confirmed"
    event = verified(reversed_)
    assert event["type"] == "redemption.reversed"
    assert event["data"] == {
        "redemption_ref": redemption.redemption_ref,
        "reversal_ref": reversal.reversal_ref,
        "points": 200,
        "reference": reference,
    }
    inspected = sim.inspect(redemption.redemption_ref)
    assert (inspected["points_reversed"], inspected["reversal_count"]) == (200, 1)
    [made] = wait_for(
        lambda: [r for r in sim.reversals(redemption.redemption_ref) if r["callbacks_sent"]],
        "the reversal's delivery to be counted",
    )
    assert (made["status"], made["points_requested"], made["reason"]) == (
        "confirmed",
        200,
        "refund",
    )


def test_reversals_never_reinstate_more_than_was_redeemed(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient = new_patient()
    redemption = redeem(rewards, patient, 500)

    def reverse(points: int) -> int:
        return rewards.request_reversal(
            redemption.redemption_ref,
            points=points,
            reason="refund",
            idempotency_key=str(uuid.uuid4()),
        ).points

    assert [reverse(300), reverse(300), reverse(50)] == [300, 200, 0]
    assert balance(rewards, patient) == DEFAULT_BALANCE
    inspected = sim.inspect(redemption.redemption_ref)
    assert (inspected["points_reversed"], inspected["reversal_count"]) == (500, 3)

    other = redeem(rewards, patient, 400)
    too_many = rewards.request_reversal(
        other.redemption_ref, points=900, reason="refund", idempotency_key=str(uuid.uuid4())
    )
    assert too_many.points == 400
    assert balance(rewards, patient) == DEFAULT_BALANCE


def test_repeating_a_reversal_with_its_key_reinstates_once(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient, key = new_patient(), str(uuid.uuid4())
    redemption = redeem(rewards, patient, 500)

    first = rewards.request_reversal(
        redemption.redemption_ref, points=200, reason="refund", idempotency_key=key
    )
    again = rewards.request_reversal(
        redemption.redemption_ref, points=200, reason="refund", idempotency_key=key
    )

    assert again.reversal_ref == first.reversal_ref
    [made] = sim.reversals(redemption.redemption_ref)
    assert made["requests"] == 2
    assert balance(rewards, patient) == DEFAULT_BALANCE - 300
    with pytest.raises(RewardsRejected) as raised:
        rewards.request_reversal(
            redemption.redemption_ref, points=100, reason="refund", idempotency_key=key
        )
    assert raised.value.code == "idempotency_key_reused"
    assert balance(rewards, patient) == DEFAULT_BALANCE - 300


def test_an_unknown_redemption_is_rejected_as_not_found(rewards: HttpRewardsManager) -> None:
    with pytest.raises(RewardsRejected) as reversing:
        rewards.request_reversal(
            "RM-RD-NOSUCH", points=10, reason="refund", idempotency_key=str(uuid.uuid4())
        )
    with pytest.raises(RewardsRejected) as reading:
        rewards.get_redemption("RM-RD-NOSUCH")

    assert reversing.value.code == reading.value.code == "redemption_not_found"


# ---- faults ----------------------------------------------------------------------------------


def test_a_single_5xx_on_a_redemption_is_retried_transparently(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient, reference = new_patient(), str(uuid.uuid4())
    sim.add_fault(operation="redeem", mode="error", status=503, times=1)

    redemption = redeem(rewards, patient, 500, reference=reference)

    [made] = sim.redemptions(reference)
    assert (made["redemption_ref"], made["requests"]) == (redemption.redemption_ref, 1)
    assert balance(rewards, patient) == DEFAULT_BALANCE - 500


def test_a_single_5xx_on_a_reversal_is_retried_transparently(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient = new_patient()
    redemption = redeem(rewards, patient, 500)
    sim.add_fault(operation="reverse", mode="error", status=502, times=1)

    reversal = rewards.request_reversal(
        redemption.redemption_ref, points=500, reason="refund", idempotency_key=str(uuid.uuid4())
    )

    assert reversal.points == 500
    assert len(sim.reversals(redemption.redemption_ref)) == 1
    assert balance(rewards, patient) == DEFAULT_BALANCE


def test_three_503_answers_are_rewards_unavailable(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient, reference = new_patient(), str(uuid.uuid4())
    sim.add_fault(operation="redeem", mode="error", status=503, times=3)

    with pytest.raises(RewardsUnavailable, match="HTTP 503"):
        redeem(rewards, patient, 500, reference=reference)
    # (the `sim` fixture checks all three faulty answers were used: three sends, no more)
    assert sim.redemptions(reference) == []
    assert balance(rewards, patient) == DEFAULT_BALANCE


@pytest.mark.parametrize("operation", ["account", "get_redemption"])
def test_reads_slower_than_the_timeout_are_rewards_unavailable(
    sim: Controls, impatient_rewards: HttpRewardsManager, operation: str
) -> None:
    patient = new_patient()
    redemption = redeem(impatient_rewards, patient, 10)
    sim.add_fault(operation=operation, mode="delay", seconds=1.0, times=3)

    read: Callable[[], object] = (
        (lambda: impatient_rewards.account(patient, PRACTICE))
        if operation == "account"
        else (lambda: impatient_rewards.get_redemption(redemption.redemption_ref))
    )

    with pytest.raises(RewardsUnavailable, match="Timeout"):
        read()


def test_a_reversal_that_keeps_failing_is_rewards_unavailable_and_reinstates_nothing(
    sim: Controls, rewards: HttpRewardsManager
) -> None:
    patient = new_patient()
    redemption = redeem(rewards, patient, 500)
    sim.add_fault(operation="reverse", mode="error", status=500, times=3)

    with pytest.raises(RewardsUnavailable, match="HTTP 500"):
        rewards.request_reversal(
            redemption.redemption_ref, points=500, reason="refund", idempotency_key="k-1"
        )

    assert sim.reversals(redemption.redemption_ref) == []
    assert balance(rewards, patient) == DEFAULT_BALANCE - 500


def test_no_rewards_manager_at_all_is_rewards_unavailable() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as closed:
        port = closed.server_address[1]  # bound then closed: nothing listens there
    adapter = HttpRewardsManager(f"http://127.0.0.1:{port}", api_key="k", timeout_seconds=0.5)
    try:
        with pytest.raises(RewardsUnavailable, match="did not answer"):
            adapter.account(new_patient(), PRACTICE)
    finally:
        adapter.close()


def test_a_wrong_api_key_is_rejected_on_every_route(sim: Controls) -> None:
    wrong = HttpRewardsManager(sim.url, api_key="not-the-key", timeout_seconds=2.0)
    try:
        with pytest.raises(RewardsRejected) as raised:
            redeem(wrong, new_patient(), 10)
    finally:
        wrong.close()
    assert raised.value.code == "unauthorised"

    routes = [
        ("GET", f"/v1/accounts/{new_patient()}?practice_id={PRACTICE}"),
        ("POST", "/v1/redemptions"),
        ("GET", "/v1/redemptions/RM-RD-1"),
        ("POST", "/v1/redemptions/RM-RD-1/reversals"),
    ]
    for method, path in routes:
        response = sim.http.request(
            method,
            f"{sim.url}{path}",
            headers={"Authorization": "Bearer not-the-key", "Idempotency-Key": "k"},
            json={} if method == "POST" else None,
        )
        assert response.status_code == 401, path
        assert response.headers["content-type"] == "application/problem+json", path
        assert response.json()["code"] == "unauthorised", path


# ---- answers that are not the contract's -----------------------------------------------------


@contextmanager
def garbage_server(answer: bytes, status: int = 200) -> Iterator[str]:
    """A local server answering every GET and POST with `answer`; yields its URL."""

    class Garbage(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(POLL_SECONDS,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'["a", "list"]',
        b'{"patient_id": "p-1"}',
        b'{"patient_id": "p-1", "practice_id": "pr-1", "enabled": "yes", "balance_points": 1,'
        b' "value_minor_per_point": 1, "currency": "GBP"}',
        b'{"patient_id": "p-1", "practice_id": "pr-1", "enabled": true, "balance_points": "10",'
        b' "value_minor_per_point": 1, "currency": "GBP"}',
        b'{"patient_id": "p-1", "practice_id": "pr-1", "enabled": true, "balance_points": -5,'
        b' "value_minor_per_point": 1, "currency": "GBP"}',
        b'{"patient_id": "p-1", "practice_id": "pr-1", "enabled": true, "balance_points": 10,'
        b' "value_minor_per_point": 0, "currency": "GBP"}',
        b'{"patient_id": "p-1", "practice_id": "pr-1", "enabled": true, "balance_points": 10,'
        b' "value_minor_per_point": 1.5, "currency": "GBP"}',
        b'{"patient_id": "p-1", "practice_id": "pr-1", "enabled": true, "balance_points": 10,'
        b' "value_minor_per_point": 1, "currency": "pounds"}',
        b'{"patient_id": "p-2", "practice_id": "pr-1", "enabled": true, "balance_points": 10,'
        b' "value_minor_per_point": 1, "currency": "GBP"}',
    ],
)
def test_an_answer_that_is_not_an_account_is_rewards_unavailable(answer: bytes) -> None:
    with garbage_server(answer) as url:
        adapter = HttpRewardsManager(url, api_key="k", timeout_seconds=1.0)
        try:
            with pytest.raises(RewardsUnavailable, match="account"):
                adapter.account("p-1", "pr-1")
        finally:
            adapter.close()


REDEMPTION = {
    "redemption_ref": "RM-RD-1",
    "status": "pending",
    "reference": "checkout-1",
    "points": 100,
    "amount_minor": 100,
    "currency": "GBP",
}


@pytest.mark.parametrize(
    "answer",
    [
        {**REDEMPTION, "status": "teleported"},
        {**REDEMPTION, "points": 99},  # another redemption than the one asked for
        {**REDEMPTION, "reference": "checkout-2"},
        {**REDEMPTION, "amount_minor": "100"},
        {k: v for k, v in REDEMPTION.items() if k != "redemption_ref"},
    ],
)
def test_an_answer_that_is_not_the_redemption_asked_for_is_rewards_unavailable(
    answer: dict[str, Any],
) -> None:
    with garbage_server(json.dumps(answer).encode(), status=202) as url:
        adapter = HttpRewardsManager(url, api_key="k", timeout_seconds=1.0)
        try:
            with pytest.raises(RewardsUnavailable, match="redemption"):
                adapter.redeem(
                    patient_id="p-1",
                    practice_id="pr-1",
                    points=100,
                    amount_minor=100,
                    currency="GBP",
                    reference="checkout-1",
                    idempotency_key="k-1",
                )
        finally:
            adapter.close()


@pytest.mark.parametrize(
    "answer",
    [
        {"reversal_ref": "RM-RV-1", "redemption_ref": "RM-RD-2", "points": 10, "status": "pending"},
        {"reversal_ref": "RM-RV-1", "redemption_ref": "RM-RD-1", "points": 11, "status": "pending"},
        {"reversal_ref": "RM-RV-1", "redemption_ref": "RM-RD-1", "points": 10, "status": "done"},
        {"redemption_ref": "RM-RD-1", "points": 10, "status": "pending"},
    ],
)
def test_an_answer_that_is_not_the_reversal_asked_for_is_rewards_unavailable(
    answer: dict[str, Any],
) -> None:
    with garbage_server(json.dumps(answer).encode(), status=202) as url:
        adapter = HttpRewardsManager(url, api_key="k", timeout_seconds=1.0)
        try:
            with pytest.raises(RewardsUnavailable, match=r"reversal|reinstated"):
                adapter.request_reversal(
                    "RM-RD-1", points=10, reason="refund", idempotency_key="k-1"
                )
        finally:
            adapter.close()


# ---- confirmation, duplicates and retried callbacks --------------------------------------------


def test_with_auto_confirm_off_no_callback_comes_until_the_control_confirms(
    sim: Controls, rewards: HttpRewardsManager, receiver: Receiver
) -> None:
    sim.configure(auto_confirm=False)
    patient, reference = new_patient(), str(uuid.uuid4())
    redemption = redeem(rewards, patient, 500, reference=reference)

    time.sleep(0.3)  # six times the confirmation delay
    assert receiver.received() == []
    assert rewards.get_redemption(redemption.redemption_ref).status == "pending"
    assert balance(rewards, patient) == DEFAULT_BALANCE - 500  # deducted already

    answer = sim.confirm(redemption.redemption_ref)

    assert answer["delivered"] == 1
    assert answer["redemption"]["status"] == "confirmed"
    [delivery] = receiver.received()  # sent before the control answered
    event = verified(delivery)
    assert event["type"] == "redemption.confirmed"
    assert event["data"]["reference"] == reference
    assert event["data"]["settlement_ref"] == answer["redemption"]["settlement_ref"]
    assert rewards.get_redemption(redemption.redemption_ref).status == "confirmed"


def test_a_confirmation_may_arrive_twice_under_one_event_id(
    sim: Controls, rewards: HttpRewardsManager, receiver: Receiver
) -> None:
    sim.configure(duplicate_callback_rate=1.0)

    redemption = redeem(rewards, new_patient(), 500)

    first, second = receiver.wait(2)
    assert verified(first) == verified(second)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    wait_for(
        lambda: sim.inspect(redemption.redemption_ref)["callbacks_sent"] == 2,
        "both deliveries to be counted",
    )
    # The control sends the same confirmation again, as often as asked.
    assert sim.confirm(redemption.redemption_ref, copies=2)["delivered"] == 2
    assert {verified(d)["id"] for d in receiver.received()} == {verified(first)["id"]}


def test_a_callback_the_receiver_fails_is_sent_again(
    sim: Controls, rewards: HttpRewardsManager, receiver: Receiver
) -> None:
    receiver.script = [503]

    redemption = redeem(rewards, new_patient(), 500)

    first, second = receiver.wait(2)
    assert first.body == second.body
    inspected = wait_for(
        lambda: (found := sim.inspect(redemption.redemption_ref))["callbacks_sent"] and found,
        "the delivery to be counted",
    )
    assert (inspected["callbacks_sent"], inspected["callbacks_failed"]) == (1, 0)


# ---- product-shop simulate rewards -----------------------------------------------------------


def test_simulate_rewards_serves_the_manager_with_the_given_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi import FastAPI

    served: dict[str, Any] = {}

    def run(app: FastAPI, **options: Any) -> None:  # instead of serving for ever
        served.update(app=app, **options)

    monkeypatch.setattr("product_shop.cli_simulators.uvicorn.run", run)
    secret = signing.new_secret()
    argv = ["simulate", "rewards", "--port", "9124", "--webhook-secret", secret]
    argv += ["--callback-url", "http://127.0.0.1:8000/v1/webhooks/rewards"]
    argv += ["--api-key", "k-1", "--practice", "pr-1", "--practice", "pr-2=5"]
    argv += ["--balance", "1200"]

    assert main(argv) == 0

    assert (served["host"], served["port"]) == ("127.0.0.1", 9124)
    config = served["app"].state.sim.config
    assert (config.api_key, config.webhook_secret) == ("k-1", secret)
    assert config.callback_url == "http://127.0.0.1:8000/v1/webhooks/rewards"
    assert config.enabled_practices == {"pr-1": 1, "pr-2": 5}
    assert config.default_balance_points == 1200
    assert config.auto_confirm is True


def test_simulate_rewards_defaults_to_the_apis_demo_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from product_shop.config import Settings

    served: dict[str, Any] = {}
    monkeypatch.setattr(
        "product_shop.cli_simulators.uvicorn.run", lambda app, **o: served.update(app=app, **o)
    )

    assert main(["simulate", "rewards"]) == 0

    config = served["app"].state.sim.config
    defaults = Settings.model_fields
    assert served["port"] == 8103
    assert defaults["rewards_base_url"].default == "http://127.0.0.1:8103"
    assert config.api_key == defaults["rewards_api_key"].default.get_secret_value()
    assert config.webhook_secret == signing.DEMO_REWARDS_WEBHOOK_SECRET
    assert config.webhook_secret == defaults["rewards_webhook_secret"].default.get_secret_value()
    assert (config.callback_url, config.enabled_practices) == (None, {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--webhook-secret", "plain-text"], "webhook secret must be"),
        (["--practice", "pr-1=lots"], "not a whole number"),
        (["--practice", "pr-1=0"], "at least 1"),
        (["--duplicate-rate", "2"], "between 0 and 1"),
    ],
)
def test_simulate_rewards_refuses_bad_settings(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setattr(
        "product_shop.cli_simulators.uvicorn.run", lambda *a, **k: pytest.fail("served")
    )

    assert main(["simulate", "rewards", *argv]) == 2

    assert message in capsys.readouterr().err
