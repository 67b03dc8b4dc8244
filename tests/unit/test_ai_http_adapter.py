"""The platform AI service adapter (`recommendations.ai.http`) against the AI service simulator,
served on a local port: the contract's happy path, what the service is (and is not) sent, and
every way an answer can break the contract or fail to come, each a SuggestionEngineError.

One simulator for the module; its configuration, faults and recorded requests are reset after
each test. Timeouts are kept short, so the whole file runs in a few seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from product_shop.cli import _parser
from product_shop.recommendations.ai.http import HttpSuggestionEngine
from product_shop.recommendations.ai.port import (
    AppointmentFacts,
    CandidateProduct,
    EngineInfo,
    SuggestionEngineError,
)
from product_shop.simulators.ai import (
    ENGINE,
    MALFORMED_MODES,
    AiSimulatorConfig,
    create_ai_simulator,
)
from product_shop.simulators.server import BackgroundServer, free_port, serve_in_background

API_KEY = "test-ai-service-api-key"

WHITENING = CandidateProduct(
    product_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
    name="Whitening gel",
    description="A gentle whitening gel for home use after a whitening treatment.",
    category="whitening",
    practice_note="Recommended by Dr Patel",
)
SENSITIVE = CandidateProduct(
    product_id=uuid.UUID("00000000-0000-4000-8000-000000000002"),
    name="Sensitive toothpaste",
    description="Eases sensitivity, for teeth that are sensitive to cold.",
    category="toothpaste",
)
FLOSS = CandidateProduct(
    product_id=uuid.UUID("00000000-0000-4000-8000-000000000003"),
    name="Floss picks",
    description="Clean between the teeth.",
    category="interdental",
)
CANDIDATES = [FLOSS, SENSITIVE, WHITENING]
FACTS = AppointmentFacts(
    treatment_codes=("WHITENING",),
    reason="Whitening gel top-up; the patient mentioned sensitivity",
)


@pytest.fixture(scope="module")
def simulator() -> Iterator[BackgroundServer]:
    server = serve_in_background(create_ai_simulator(AiSimulatorConfig(api_key=API_KEY, seed=1)))
    yield server
    server.stop()


@pytest.fixture
def controls(simulator: BackgroundServer) -> Iterator[Controls]:
    with httpx.Client(base_url=f"{simulator.url}/_simulator", timeout=5) as http:
        yield Controls(http)
        http.post("/reset").raise_for_status()


@pytest.fixture
def engine(simulator: BackgroundServer) -> Iterator[HttpSuggestionEngine]:
    adapter = HttpSuggestionEngine(simulator.url, api_key=API_KEY, timeout_seconds=2.0)
    yield adapter
    adapter.close()


class Controls:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def configure(self, **config: Any) -> None:
        self.http.post("/config", json=config).raise_for_status()

    def fault(self, **fault: Any) -> None:
        self.http.post("/faults", json=fault).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.http.get("/requests").json()["requests"]
        return found


# ---- the contract ------------------------------------------------------------------------------


def test_suggests_the_overlapping_products_best_first_with_rationales(
    engine: HttpSuggestionEngine, controls: Controls
) -> None:
    suggestions = engine.suggest(FACTS, CANDIDATES, limit=3)

    assert [s.product_id for s in suggestions] == [WHITENING.product_id, SENSITIVE.product_id]
    # 1000 x the appointment's words shared (whitening, gel; sensitivity) / its six words.
    assert [s.score for s in suggestions] == [333, 166]
    assert "whitening" in suggestions[0].rationale
    assert "sensitivity" in suggestions[1].rationale
    assert engine.info == EngineInfo(name="platform-ai", version="v1")
    assert engine.last_engine == EngineInfo(ENGINE["name"], ENGINE["version"])
    # Deterministic: the same question, the same answer.
    assert engine.suggest(FACTS, CANDIDATES, limit=3) == suggestions


def test_sends_the_contract_and_no_identity(
    engine: HttpSuggestionEngine, controls: Controls
) -> None:
    engine.suggest(FACTS, CANDIDATES, limit=2)

    [request] = controls.requests()
    assert request["authorised"] is True
    assert request["content_type"] == "application/json"
    assert request["idempotency_key"]  # one per call: the client may resend it
    body = request["body"]
    assert set(body) == {"appointment", "candidates", "limit"}
    assert body["appointment"] == {
        "treatment_codes": ["WHITENING"],
        "reason": "Whitening gel top-up; the patient mentioned sensitivity",
    }
    assert body["limit"] == 2
    assert body["candidates"][2] == {
        "product_id": str(WHITENING.product_id),
        "name": "Whitening gel",
        "description": WHITENING.description,
        "category": "whitening",
        "practice_note": "Recommended by Dr Patel",
    }
    for candidate in body["candidates"]:
        assert set(candidate) == {"product_id", "name", "description", "category", "practice_note"}
    text = str(body).lower()
    assert "patient_id" not in text
    assert "practice_id" not in text
    assert API_KEY not in str(request)  # the key is checked, never recorded


def test_limit_and_nothing_relevant(engine: HttpSuggestionEngine, controls: Controls) -> None:
    [best] = engine.suggest(FACTS, CANDIDATES, limit=1)
    assert best.product_id == WHITENING.product_id

    assert engine.suggest(AppointmentFacts(("X-RAY",), None), CANDIDATES, limit=3) == []


def test_nothing_to_rank_makes_no_call(engine: HttpSuggestionEngine, controls: Controls) -> None:
    assert engine.suggest(FACTS, [], limit=3) == []
    assert engine.suggest(FACTS, CANDIDATES, limit=0) == []
    assert controls.requests() == []
    with pytest.raises(ValueError, match="more than once"):
        engine.suggest(FACTS, [WHITENING, WHITENING], limit=3)


def test_the_simulator_refuses_a_request_carrying_identity(simulator: BackgroundServer) -> None:
    body = {
        "appointment": {"treatment_codes": [], "reason": None, "patient_id": str(uuid.uuid4())},
        "candidates": [],
        "limit": 3,
    }
    answer = httpx.post(
        f"{simulator.url}/v1/suggestions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "invalid_request"


# ---- answers that break the contract ------------------------------------------------------------

EXPECTED_MESSAGES = {
    "unknown_product": "not among the candidates",
    "bad_product_id": "not a UUID",
    "duplicate": "a second time",
    "too_many": "more than the limit",
    "score_out_of_range": "not a whole number 0..1000",
    "score_not_int": "not a whole number 0..1000",
    "unordered": "not best first",
    "empty_rationale": "no rationale",
    "missing_rationale": "no rationale",
    "long_rationale": "more than 1000",
    "no_engine": "no `engine`",
    "not_json": "not a JSON object",
    "not_an_object": "not a JSON object",
}


def test_every_malformed_mode_is_covered() -> None:
    assert set(EXPECTED_MESSAGES) == set(MALFORMED_MODES)


@pytest.mark.parametrize("mode", sorted(EXPECTED_MESSAGES))
def test_a_malformed_answer_is_an_error(
    mode: str, engine: HttpSuggestionEngine, controls: Controls
) -> None:
    controls.configure(malformed=mode)
    with pytest.raises(SuggestionEngineError, match="unexpected answer") as caught:
        engine.suggest(FACTS, CANDIDATES, limit=2)
    assert EXPECTED_MESSAGES[mode] in str(caught.value)


@pytest.mark.parametrize("mode", ["duplicate", "unknown_product", "too_many"])
def test_a_malformed_answer_is_an_error_with_nothing_relevant(
    mode: str, engine: HttpSuggestionEngine, controls: Controls
) -> None:
    controls.configure(malformed=mode)
    with pytest.raises(SuggestionEngineError):
        engine.suggest(AppointmentFacts((), "x-ray"), CANDIDATES, limit=1)


# ---- failures ----------------------------------------------------------------------------------


def test_a_failing_service_is_an_error_after_the_retries(
    engine: HttpSuggestionEngine, controls: Controls
) -> None:
    controls.configure(failure_rate=1.0)
    with pytest.raises(SuggestionEngineError, match=r"did not answer \(HTTP 503\)"):
        engine.suggest(FACTS, CANDIDATES, limit=3)
    requests = controls.requests()
    assert len(requests) == 3  # the first send and two retries, under one key
    assert len({r["idempotency_key"] for r in requests}) == 1


def test_one_503_is_retried(engine: HttpSuggestionEngine, controls: Controls) -> None:
    controls.fault(mode="error", status=503, times=1)
    assert [s.product_id for s in engine.suggest(FACTS, CANDIDATES, limit=1)] == [
        WHITENING.product_id
    ]
    assert len(controls.requests()) == 2


def test_a_4xx_is_an_error_and_not_retried(
    engine: HttpSuggestionEngine, controls: Controls
) -> None:
    controls.fault(mode="error", status=400, times=1)
    with pytest.raises(SuggestionEngineError, match="refused the request"):
        engine.suggest(FACTS, CANDIDATES, limit=1)
    assert len(controls.requests()) == 1


def test_a_request_the_service_will_not_take_is_an_error(
    engine: HttpSuggestionEngine, controls: Controls
) -> None:
    with pytest.raises(SuggestionEngineError, match="HTTP 422 invalid_request: limit"):
        engine.suggest(FACTS, CANDIDATES, limit=51)


def test_a_bad_api_key_is_an_error(simulator: BackgroundServer, controls: Controls) -> None:
    adapter = HttpSuggestionEngine(simulator.url, api_key="wrong", timeout_seconds=2.0)
    try:
        with pytest.raises(SuggestionEngineError, match="HTTP 401 unauthorised"):
            adapter.suggest(FACTS, CANDIDATES, limit=3)
    finally:
        adapter.close()
    [request] = controls.requests()
    assert request["authorised"] is False


def test_a_slow_service_times_out_quickly(simulator: BackgroundServer, controls: Controls) -> None:
    controls.configure(latency_seconds=1.0)
    adapter = HttpSuggestionEngine(simulator.url, api_key=API_KEY, timeout_seconds=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(SuggestionEngineError, match=r"did not answer \(Timeout\)"):
            adapter.suggest(FACTS, CANDIDATES, limit=3)
    finally:
        adapter.close()
    # Three sends of at most 0.2 s each and the client's 0.2 s backoff: well under the latency
    # of the three answers it did not wait for.
    assert time.monotonic() - started < 1.5


def test_no_service_is_an_error() -> None:
    adapter = HttpSuggestionEngine(
        f"http://127.0.0.1:{free_port()}", api_key=API_KEY, timeout_seconds=0.5
    )
    try:
        with pytest.raises(SuggestionEngineError, match="did not answer"):
            adapter.suggest(FACTS, CANDIDATES, limit=3)
    finally:
        adapter.close()


def test_not_an_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpSuggestionEngine("ftp://example.test", api_key=API_KEY)


def test_simulate_ai_command_defaults() -> None:
    args = _parser().parse_args(["simulate", "ai"])
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 8105, "demo-ai-service-api-key")
    assert (args.failure_rate, args.latency) == (0.0, 0.0)
