"""The Integrated Payments adapter's one retry layer (urllib3's `Retry`), against a scripted server.

The server is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (port 0) in a background thread,
stopped by its fixture. Each request it receives takes the next step of the test's script (an
answer, a dropped connection, or no answer at all) and is recorded, so a test counts the sends of
one call and sees what each carried. The simulator-backed tests of the same adapter are in
tests/integration/test_payments_adapter.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from product_shop.integrations.payments import (
    PaymentRejected,
    PaymentState,
    PaymentsUnavailable,
)
from product_shop.integrations.payments_http import (
    RETRY_AFTER_MAX_SECONDS,
    HttpIntegratedPayments,
)

API_KEY = "retries-test-api-key"
MAX_SENDS = 3  # the first send and two retries


@dataclass(frozen=True)
class Answer:
    status: int = 200
    json_body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent instead of `json_body` when set


DROP = "drop"  # read the request, then close the connection without answering
HANG = "hang"  # read the request, then answer nothing until the test ends
Step = Answer | str

STATUS = {
    "intent_id": "pi_1",
    "status": "requires_payment",
    "amount_minor": 5999,
    "currency": "GBP",
    "merchant_reference": "PS-1",
}
INTENT = {**STATUS, "payment_url": "http://payments.example/pay/pi_1"}


@dataclass(frozen=True)
class Seen:
    """One request as the server's handler read it."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    client_port: int
    at: float  # time.monotonic() when it was read


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5.0  # an idle keep-alive connection does not hold a handler thread for ever
    disable_nagle_algorithm = True
    server: ScriptedServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        step = self.server.take(
            Seen(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                client_port=self.client_address[1],
                at=time.monotonic(),
            )
        )
        if step == HANG:
            self.server.release.wait(5.0)
        if isinstance(step, str):
            self.close_connection = True
            return
        payload = step.raw if step.raw is not None else json.dumps(step.json_body).encode()
        self.send_response(step.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in step.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._script: list[Step] = []
        self._then: Step = Answer()
        self._seen: list[Seen] = []

    def play(self, *steps: Step, then: Step = Answer()) -> None:
        """Answer the next requests with `steps`, and every one after them with `then`."""
        with self._lock:
            self._script, self._then = list(steps), then

    def take(self, seen: Seen) -> Step:
        with self._lock:
            self._seen.append(seen)
            return self._script.pop(0) if self._script else self._then

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (read timeout) makes a late answer fail: expected


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01})
    thread.daemon = True
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def make_payments(server: ScriptedServer) -> Iterator[Callable[..., HttpIntegratedPayments]]:
    adapters: list[HttpIntegratedPayments] = []

    def make(timeout_seconds: float = 2.0, url: str | None = None) -> HttpIntegratedPayments:
        adapter = HttpIntegratedPayments(
            url or server.url, api_key=API_KEY, timeout_seconds=timeout_seconds
        )
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        adapter.close()


@pytest.fixture
def payments(make_payments: Callable[..., HttpIntegratedPayments]) -> HttpIntegratedPayments:
    return make_payments()


def create_intent(payments: HttpIntegratedPayments) -> Any:
    return payments.create_intent(
        amount_minor=5999, currency="GBP", merchant_reference="PS-1", idempotency_key="key-1"
    )


def get_payment(payments: HttpIntegratedPayments) -> Any:
    return payments.get_payment("pi_1")


def set_order_reference(payments: HttpIntegratedPayments) -> Any:
    return payments.set_order_reference("pi_1", "order-1")


def cancel_intent(payments: HttpIntegratedPayments) -> Any:
    return payments.cancel_intent("pi_1")


def refund(payments: HttpIntegratedPayments) -> Any:
    return payments.refund(
        transaction_ref="DNA-1",
        amount_minor=100,
        currency="GBP",
        reason_code="customer_request",
        initiated_by="staff:1",
        idempotency_key="refund-1",
    )


REFUND = {
    "refund_ref": "DNA-RF-1",
    "transaction_ref": "DNA-1",
    "amount_minor": 100,
    "currency": "GBP",
    "status": "succeeded",
}
# Every call the adapter makes, with the answer it expects: all of them are safe to repeat.
REPEATABLE_CALLS = [
    pytest.param(create_intent, Answer(201, INTENT), id="create_intent POST with key"),
    pytest.param(cancel_intent, Answer(200, {**STATUS, "status": "cancelled"}), id="cancel POST"),
    pytest.param(refund, Answer(201, REFUND), id="refund POST with key"),
    pytest.param(get_payment, Answer(200, STATUS), id="get_payment GET"),
    pytest.param(set_order_reference, Answer(200, STATUS), id="set_order_reference PUT"),
]


# ---- which requests are resent ------------------------------------------------------------------


def test_a_post_without_an_idempotency_key_is_sent_once_when_the_connection_drops(
    server: ScriptedServer, payments: HttpIntegratedPayments
) -> None:
    # No public call sends a POST without a key today; every call goes through `_call`.
    server.play(DROP)

    with pytest.raises(PaymentsUnavailable, match="RemoteDisconnected"):
        payments._call("POST", "/v1/notes", json_body={"note": 1})

    assert [(seen.method, seen.path) for seen in server.seen] == [("POST", "/v1/notes")]


@pytest.mark.parametrize(
    "step",
    [Answer(503), Answer(429, headers={"Retry-After": "0"}), HANG],
    ids=["503", "429", "timeout"],
)
def test_a_post_without_an_idempotency_key_is_not_resent_after_a_5xx_429_or_timeout(
    server: ScriptedServer,
    make_payments: Callable[..., HttpIntegratedPayments],
    step: Step,
) -> None:
    server.play(step)
    payments = make_payments(timeout_seconds=0.1)

    with pytest.raises(PaymentsUnavailable):
        payments._call("POST", "/v1/notes", json_body={"note": 1})

    assert len(server.seen) == 1


@pytest.mark.parametrize(("call", "answer"), REPEATABLE_CALLS)
def test_each_call_is_resent_after_a_dropped_connection_with_the_same_request(
    server: ScriptedServer,
    payments: HttpIntegratedPayments,
    call: Callable[[HttpIntegratedPayments], Any],
    answer: Answer,
) -> None:
    server.play(DROP, then=answer)

    call(payments)

    first, second = server.seen
    assert (second.method, second.path, second.body) == (first.method, first.path, first.body)
    assert second.headers.get("idempotency-key") == first.headers.get("idempotency-key")
    if first.method == "POST":
        assert first.headers["idempotency-key"]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_a_5xx_408_or_429_then_success_is_retried(
    server: ScriptedServer, payments: HttpIntegratedPayments, status: int
) -> None:
    server.play(Answer(status), then=Answer(200, STATUS))

    assert payments.get_payment("pi_1").state is PaymentState.REQUIRES_PAYMENT

    assert len(server.seen) == 2


def test_retry_after_is_honoured_up_to_its_bound(
    server: ScriptedServer, payments: HttpIntegratedPayments
) -> None:
    # given a 503 asking for an hour's wait, then a good answer
    server.play(Answer(503, headers={"Retry-After": "3600"}), then=Answer(200, STATUS))
    outcome: list[Any] = []
    caller = threading.Thread(target=lambda: outcome.append(payments.get_payment("pi_1")))
    caller.daemon = True
    # when the adapter reads the payment
    caller.start()
    caller.join(timeout=RETRY_AFTER_MAX_SECONDS + 4)
    # then it waited (the first retry has no backoff of its own), but only up to the bound
    assert not caller.is_alive(), "Retry-After was not bounded"
    assert outcome[0].intent_id == "pi_1"
    first, second = server.seen
    assert second.at - first.at >= RETRY_AFTER_MAX_SECONDS * 0.9


# ---- what a call ends with ------------------------------------------------------------------


def test_a_timeout_gives_payments_unavailable_after_the_bounded_retries(
    server: ScriptedServer, make_payments: Callable[..., HttpIntegratedPayments]
) -> None:
    server.play(then=HANG)
    payments = make_payments(timeout_seconds=0.1)

    with pytest.raises(PaymentsUnavailable, match="Timeout"):
        payments.get_payment("pi_1")

    assert len(server.seen) == MAX_SENDS


def test_a_refused_connection_gives_payments_unavailable(
    make_payments: Callable[..., HttpIntegratedPayments],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    payments = make_payments(url=f"http://127.0.0.1:{closed_port}")

    with pytest.raises(PaymentsUnavailable, match="ConnectionRefusedError"):
        payments.get_payment("pi_1")


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        pytest.param(
            Answer(422, {"code": "refund_exceeds_capture", "detail": "Too much."}),
            "refund_exceeds_capture",
            "Too much.",
            id="problem",
        ),
        pytest.param(
            Answer(404, raw=b"<html>not found</html>"),
            "http_404",
            "Integrated Payments refused the request.",
            id="not json",
        ),
    ],
)
def test_a_4xx_gives_payment_rejected_with_its_code_and_is_not_retried(
    server: ScriptedServer,
    payments: HttpIntegratedPayments,
    answer: Answer,
    code: str,
    message: str,
) -> None:
    server.play(then=answer)

    with pytest.raises(PaymentRejected) as raised:
        refund(payments)

    assert (raised.value.code, raised.value.message) == (code, message)
    assert len(server.seen) == 1


def test_a_malformed_status_answer_gives_payments_unavailable(
    server: ScriptedServer, payments: HttpIntegratedPayments
) -> None:
    server.play(then=Answer(200, raw=b"not json"))

    with pytest.raises(PaymentsUnavailable, match="unexpected payment status answer"):
        payments.get_payment("pi_1")

    assert len(server.seen) == 1


@pytest.mark.parametrize(("call", "answer"), REPEATABLE_CALLS)
def test_the_sends_of_one_call_are_bounded_whatever_the_failures(
    server: ScriptedServer,
    payments: HttpIntegratedPayments,
    call: Callable[[HttpIntegratedPayments], Any],
    answer: Answer,
) -> None:
    # Failures of different kinds draw on one budget: three sends in all, not three of each.
    server.play(DROP, Answer(503), then=Answer(429, headers={"Retry-After": "0"}))

    with pytest.raises(PaymentsUnavailable, match="HTTP 429"):
        call(payments)

    assert len(server.seen) == MAX_SENDS


# ---- the requests themselves -------------------------------------------------------------------


def test_calls_share_one_keep_alive_connection_and_carry_the_adapters_headers(
    server: ScriptedServer, make_payments: Callable[..., HttpIntegratedPayments]
) -> None:
    server.play(then=Answer(200, {**STATUS, "status": "cancelled"}))
    payments = make_payments(url=server.url + "/ip/")

    payments.get_payment("pi_1")
    payments.cancel_intent("pi_1")

    read, cancel = server.seen
    assert read.client_port == cancel.client_port
    assert (read.method, read.path, read.body) == ("GET", "/ip/v1/payment-intents/pi_1", b"")
    assert (cancel.method, cancel.path) == ("POST", "/ip/v1/payment-intents/pi_1/cancel")
    assert json.loads(cancel.body) == {}
    for seen in (read, cancel):
        assert seen.headers["authorization"] == f"Bearer {API_KEY}"
        assert seen.headers["accept"] == "application/json"
    assert cancel.headers["content-type"] == "application/json"
    assert cancel.headers["idempotency-key"] == "cancel:pi_1"
    assert "idempotency-key" not in read.headers


def test_a_base_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpIntegratedPayments("ftp://127.0.0.1:1", api_key=API_KEY)
