"""The service's API, as `recommendations.ai.http` speaks it: POST /v1/suggestions (Bearer API
key). Every request is recorded first (`/_simulator/requests`), authorised or not; then, in this
order: 401 `unauthorised` for a bad key; a queued fault (delay, error, delay_after); the
configured latency; 503 `simulated_failure` at the failure rate; 422 `invalid_request` for a
body that is not the contract's (an unknown field, such as a patient or practice id, is one);
then the ranking (`ranking`), broken on purpose when `malformed` is set."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from product_shop.simulators.ai.common import Sim
from product_shop.simulators.ai.ranking import MAX_SCORE, rank
from product_shop.simulators.ai.state import ENGINE, Malformed, now_iso
from product_shop.simulators.faults import after, before, parse_body, problem, unauthorised

router = APIRouter()

MAX_LIMIT = 50
MAX_CANDIDATES = 2000
MAX_RECORDED_TEXT = 10_000  # of a body that is not JSON
# The product ids malformed answers make up (this one, and uuid5s under it): not a candidate's.
_MADE_UP = uuid.UUID("6f1c8c1e-0000-4000-8000-00000000a1a1")

Code = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class AppointmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    treatment_codes: Annotated[list[Code], Field(max_length=20)]
    reason: Annotated[str, StringConstraints(max_length=500)] | None


class CandidateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: uuid.UUID
    name: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    description: Annotated[str, StringConstraints(max_length=10_000)]
    category: Annotated[str, StringConstraints(max_length=200)]
    practice_note: Annotated[str, StringConstraints(max_length=2000)] | None


class SuggestionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    appointment: AppointmentIn
    candidates: Annotated[list[CandidateIn], Field(max_length=MAX_CANDIDATES)]
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_LIMIT)]


@router.post("/v1/suggestions")
async def suggest(
    request: Request,
    state: Sim,
    authorization: str | None = Header(default=None),
) -> Response:
    raw = await request.body()
    authorised = state.authorised(authorization)
    state.record(_entry(request, raw, authorised))
    if not authorised:
        return unauthorised()
    stop, late = await before(state, "suggest")
    if stop:
        return stop
    with state.lock:
        latency, malformed = state.config.latency_seconds, state.config.malformed
    if latency > 0:
        await asyncio.sleep(latency)
    if state.fails():
        return problem(503, "simulated_failure", "Simulated failure.")
    body = parse_body(SuggestionsIn, raw, "invalid_request")
    if isinstance(body, JSONResponse):
        return body
    ids = [candidate.product_id for candidate in body.candidates]
    if len(set(ids)) != len(ids):
        return problem(422, "invalid_request", "candidates: a product appears more than once.")
    candidates = [candidate.model_dump(mode="json") for candidate in body.candidates]
    ranked = rank(body.appointment.treatment_codes, body.appointment.reason, candidates, body.limit)
    answer: dict[str, Any] = {
        "engine": dict(ENGINE),
        "suggestions": [
            {"product_id": r.product_id, "score": r.score, "rationale": r.rationale} for r in ranked
        ],
    }
    response = (
        _broken(answer, malformed, [str(i) for i in ids], body.limit)
        if malformed
        else JSONResponse(answer)
    )
    await after(late)
    return response


def _entry(request: Request, raw: bytes, authorised: bool) -> dict[str, Any]:
    """What the request carried, as GET /_simulator/requests shows it: the body (parsed, or its
    text), whether the key was right (never the key) and the headers that say how it was sent."""
    body: Any
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw[:MAX_RECORDED_TEXT].decode("utf-8", errors="replace")
    return {
        "received_at": now_iso(),
        "authorised": authorised,
        "content_type": request.headers.get("content-type"),
        "idempotency_key": request.headers.get("idempotency-key"),
        "user_agent": request.headers.get("user-agent"),
        "body": body,
    }


def _broken(answer: dict[str, Any], mode: Malformed, ids: list[str], limit: int) -> Response:
    """The answer, broken the way `mode` says (see `state.Malformed`)."""
    if mode == "not_json":
        return Response("<html><body>Bad gateway</body></html>", media_type="text/html")
    suggestions: list[dict[str, Any]] = answer["suggestions"]
    if mode == "too_many":
        suggestions[:] = _made_up_list(ids, limit + 1)
    elif mode == "unordered":
        suggestions[:] = _made_up_list(ids, 2)
        suggestions.sort(key=lambda item: item["score"])
    elif mode == "no_engine":
        del answer["engine"]
    elif mode == "not_an_object":
        return JSONResponse(suggestions)
    else:
        if not suggestions:
            suggestions.extend(_made_up_list(ids, 1))
        first = suggestions[0]
        if mode == "unknown_product":
            first["product_id"] = str(_MADE_UP)
        elif mode == "bad_product_id":
            first["product_id"] = "not-a-uuid"
        elif mode == "duplicate":  # in place of the second, so the count stays within limit
            suggestions[1:2] = [dict(first)]
        elif mode == "score_out_of_range":
            first["score"] = MAX_SCORE + 1
        elif mode == "score_not_int":
            first["score"] = 500.5
        elif mode == "empty_rationale":
            first["rationale"] = "  "
        elif mode == "missing_rationale":
            del first["rationale"]
        elif mode == "long_rationale":
            first["rationale"] = "x" * 1001
    return JSONResponse(answer)


def _made_up_list(ids: list[str], count: int) -> list[dict[str, Any]]:
    """`count` suggestions, best first with distinct scores: the candidates first, then made-up
    products once they run out."""
    chosen = ids[:count]
    chosen += [str(uuid.uuid5(_MADE_UP, str(n))) for n in range(count - len(chosen))]
    return [
        {"product_id": product_id, "score": max(1, 900 - n), "rationale": "Simulated."}
        for n, product_id in enumerate(chosen)
    ]
