"""The SuggestionEngine port over HTTP: the platform AI service ranks the candidates.

Contract (Bearer API key; `integrations.json_http`, the client every adapter here shares):

    POST {base}/v1/suggestions
    {"appointment": {"treatment_codes": ["<code>", ...], "reason": "<text>" | null},
     "candidates": [{"product_id": "<uuid>", "name": str, "description": str,
                     "category": str, "practice_note": str | null}, ...],
     "limit": n}

    200 {"engine": {"name": str, "version": str},
         "suggestions": [{"product_id": "<uuid>", "score": 0..1000, "rationale": str}, ...]}

The request carries the appointment's treatment codes and reason and the practice's candidate
products, nothing else: no patient, practice, clinician or appointment id goes to the service.

The call has no effect at the service, so it is safe to repeat: it carries an Idempotency-Key
(one per `suggest` call), which lets the client resend it after a connection error, a timeout or
a 408/429/5xx answer (at most three sends, each within `timeout_seconds`, so a call that gets no
answer fails within about three times the timeout).

The answer is checked strictly; `SuggestionEngineError`, with a message that says what was wrong,
when it is not the contract's: not a JSON object, no `engine` name and version, `suggestions`
not a list, more than `limit` of them, one for a product that is not among the candidates or
whose id is not a UUID, the same product twice, a score that is not a whole number 0..1000 (a
float or a boolean is not one), scores that rise (best first is the contract), a missing, blank
or over-long (more than 1000 characters) rationale. So are no answer, a timeout, a 5xx after the
retries and any 4xx (a bad API key is 401 `unauthorised`, a request the service will not take is
a 422). A valid answer is returned as it came, best first, rationales stripped of surrounding
white space.

`info` is fixed (`platform-ai`, `v1`: this adapter and its contract); `last_engine` tells which
engine and version the service said answered the last valid call (for logs, not for decisions).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from product_shop.integrations.json_http import JsonHttpClient, NoAnswer, Refused
from product_shop.recommendations.ai.port import (
    AppointmentFacts,
    CandidateProduct,
    EngineInfo,
    EngineSuggestion,
    SuggestionEngineError,
)

INTEGRATION = "ai_service"  # its label in the integration metrics

SUGGESTIONS_PATH = "/v1/suggestions"
MIN_SCORE = 0
MAX_SCORE = 1000
MAX_RATIONALE_LENGTH = 1000
MAX_ENGINE_FIELD_LENGTH = 200
INFO = EngineInfo(name="platform-ai", version="v1")
_SERVICE = "the platform AI service"


class HttpSuggestionEngine:
    def __init__(self, base_url: str, *, api_key: str, timeout_seconds: float = 5.0) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._client = JsonHttpClient(
            base_url, integration=INTEGRATION, api_key=api_key, timeout_seconds=timeout_seconds
        )
        self._last_engine: EngineInfo | None = None

    @property
    def info(self) -> EngineInfo:
        return INFO

    @property
    def last_engine(self) -> EngineInfo | None:
        """The engine the service named in its last valid answer; None before any."""
        return self._last_engine

    def close(self) -> None:
        self._client.close()

    def suggest(
        self,
        facts: AppointmentFacts,
        candidates: Sequence[CandidateProduct],
        *,
        limit: int,
    ) -> list[EngineSuggestion]:
        """At most `limit` suggestions, best first, each for one of `candidates` and none twice.
        Nothing to rank (no candidates, or a limit below 1) is an empty list, without a call.
        Raises SuggestionEngineError; ValueError when the candidates name a product twice (the
        caller's mistake, not the service's)."""
        if limit < 1 or not candidates:
            return []
        known = {candidate.product_id for candidate in candidates}
        if len(known) != len(candidates):
            raise ValueError("the candidates name a product more than once")
        body = {
            "appointment": {
                "treatment_codes": list(facts.treatment_codes),
                "reason": facts.reason,
            },
            "candidates": [
                {
                    "product_id": str(candidate.product_id),
                    "name": candidate.name,
                    "description": candidate.description,
                    "category": candidate.category,
                    "practice_note": candidate.practice_note,
                }
                for candidate in candidates
            ],
            "limit": limit,
        }
        try:
            answer = self._client.call(
                "POST",
                SUGGESTIONS_PATH,
                json_body=body,
                idempotency_key=f"suggest-{uuid.uuid4()}",
            )
        except NoAnswer as exc:
            raise SuggestionEngineError(f"{_SERVICE} did not answer ({exc})") from exc
        except Refused as exc:
            detail = f": {exc.detail}" if exc.detail else ""
            raise SuggestionEngineError(
                f"{_SERVICE} refused the request (HTTP {exc.status} {exc.code or 'no code'}"
                f"{detail})"
            ) from exc
        try:
            engine, suggestions = _answer(answer, known, limit)
        except _Unexpected as exc:
            raise SuggestionEngineError(f"unexpected answer from {_SERVICE}: {exc}") from exc
        self._last_engine = engine
        return suggestions


class _Unexpected(Exception):
    """What in the answer is not the contract's."""


def _answer(
    data: dict[str, Any], known: set[uuid.UUID], limit: int
) -> tuple[EngineInfo, list[EngineSuggestion]]:
    if not data:
        raise _Unexpected("not a JSON object of the contract")
    engine = data.get("engine")
    if not isinstance(engine, dict):
        raise _Unexpected("no `engine` object")
    info = EngineInfo(
        name=_short_text(engine.get("name"), "engine.name"),
        version=_short_text(engine.get("version"), "engine.version"),
    )
    items = data.get("suggestions")
    if not isinstance(items, list):
        raise _Unexpected("`suggestions` is not a list")
    if len(items) > limit:
        raise _Unexpected(f"{len(items)} suggestions, more than the limit of {limit}")
    suggestions: list[EngineSuggestion] = []
    seen: set[uuid.UUID] = set()
    for position, item in enumerate(items):
        where = f"suggestions[{position}]"
        if not isinstance(item, dict):
            raise _Unexpected(f"{where} is not an object")
        product_id = _product_id(item.get("product_id"), where)
        if product_id not in known:
            raise _Unexpected(f"{where} is for product {product_id}, not among the candidates")
        if product_id in seen:
            raise _Unexpected(f"{where} suggests product {product_id} a second time")
        seen.add(product_id)
        score = item.get("score")
        if type(score) is not int or not MIN_SCORE <= score <= MAX_SCORE:
            raise _Unexpected(
                f"{where}.score is {_shown(score)}, not a whole number {MIN_SCORE}..{MAX_SCORE}"
            )
        if suggestions and score > suggestions[-1].score:
            raise _Unexpected(
                f"{where}.score {score} is higher than the one before: not best first"
            )
        rationale = item.get("rationale")
        if not isinstance(rationale, str) or not rationale.strip():
            raise _Unexpected(f"{where} has no rationale")
        rationale = rationale.strip()
        if len(rationale) > MAX_RATIONALE_LENGTH:
            raise _Unexpected(
                f"{where}.rationale has {len(rationale)} characters, more than "
                f"{MAX_RATIONALE_LENGTH}"
            )
        suggestions.append(EngineSuggestion(product_id, score, rationale))
    return info, suggestions


def _short_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ENGINE_FIELD_LENGTH:
        raise _Unexpected(f"`{where}` is {_shown(value)}, not a non-empty string")
    return value


def _product_id(value: Any, where: str) -> uuid.UUID:
    if not isinstance(value, str):
        raise _Unexpected(f"{where}.product_id is {_shown(value)}, not a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise _Unexpected(f"{where}.product_id is {_shown(value)}, not a UUID") from exc


def _shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
