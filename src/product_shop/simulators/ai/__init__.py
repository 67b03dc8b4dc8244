"""Platform AI service simulator (the suggestion engine the platform runs, spec §7).

Contract (what `recommendations.ai.http` speaks; Bearer API key):

    POST /v1/suggestions
    {"appointment": {"treatment_codes": [<code, 1-32 characters>, ...] (at most 20),
                     "reason": <text, at most 500 characters> | null},
     "candidates": [{"product_id": <uuid>, "name", "description", "category",
                     "practice_note": <text> | null}, ...] (at most 2000, each product once),
     "limit": 1..50}
    -> 200 {"engine": {"name": "platform-ai-simulator", "version": "1"},
            "suggestions": [{"product_id", "score": 0..1000, "rationale"}, ...]}

Nothing else belongs in the request: an unknown field (a patient or practice id, say) is a 422
`invalid_request`, like any body that is not the contract's. A bad key is 401 `unauthorised`.
Ranking is a deterministic word overlap between the appointment's codes and reason and each
candidate's name, description and category (`ranking`); the rationale names the shared words.

Faults, set in `AiSimulatorConfig` or by the controls: `failure_rate` (503 `simulated_failure`),
`latency_seconds` (every answer), `malformed` (every answer breaks the contract one way:
`state.Malformed`), and one-off faults queued for operation `suggest`.

Test controls under /_simulator (no API key): GET/POST `config` (failure_rate, latency_seconds,
malformed), POST/GET `faults`, GET `requests` (what was received: each body as sent, whether the
key was right), POST `reset`.

Layout: `state` (configuration, requests, faults), `ranking`, `service` (the API), `controls`
(/_simulator). Routes reach the state through `common.Sim` (the app's `state.sim`).
"""

from __future__ import annotations

from fastapi import FastAPI

from product_shop.simulators.ai import controls, service
from product_shop.simulators.ai.state import (
    ENGINE,
    MALFORMED_MODES,
    AiSimulatorConfig,
    Malformed,
    State,
)

__all__ = [
    "ENGINE",
    "MALFORMED_MODES",
    "AiSimulatorConfig",
    "Malformed",
    "State",
    "create_ai_simulator",
]


def create_ai_simulator(config: AiSimulatorConfig | None = None) -> FastAPI:
    config = config or AiSimulatorConfig()
    if not config.api_key:
        raise ValueError("give the API key the service expects")
    if not 0 <= config.failure_rate <= 1:
        raise ValueError("failure_rate must be between 0 and 1")
    if config.latency_seconds < 0:
        raise ValueError("latency_seconds may not be negative")
    if config.malformed is not None and config.malformed not in MALFORMED_MODES:
        raise ValueError(f"malformed must be one of {', '.join(MALFORMED_MODES)}")
    app = FastAPI(title="Platform AI service simulator", docs_url=None, redoc_url=None)
    app.state.sim = State(config=config)
    app.include_router(service.router)
    app.include_router(controls.router)
    return app
