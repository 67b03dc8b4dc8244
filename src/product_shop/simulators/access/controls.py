"""Test controls under /_simulator: counters, reset, and token failures (the next n token
requests answered with an error status, so a client's failure handling can be tested). No
authentication: tests and the demo only.

Plain functions (run on the thread pool), under the state's lock."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from product_shop.simulators.access.common import Sim
from product_shop.simulators.access.state import TokenFailures

router = APIRouter(prefix="/_simulator")


class TokenFailuresIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=1, ge=0, le=1000)
    status: int = Field(default=503, ge=400, le=599)
    # The RFC 6749 §5.2 `error` of the answer; by default one that fits the status.
    error: str | None = Field(default=None, pattern=r"^[a-z_]{1,64}$")
    delay_seconds: float = Field(default=0.0, ge=0, le=60)


def _default_error(status: int) -> str:
    if status == 401:
        return "invalid_client"
    if status < 500:
        return "invalid_request"
    return "server_error" if status == 500 else "temporarily_unavailable"


@router.get("/state")
def simulator_state(state: Sim) -> JSONResponse:
    """What happened since start (or the last reset)."""
    with state.lock:
        counters = state.counters
        return JSONResponse(
            {
                "authorizations": counters.authorizations,
                "codes_issued": counters.codes_issued,
                "tokens_issued": counters.tokens_issued,
                "failed_mfa_attempts": counters.failed_mfa_attempts,
                "pending_authorizations": len(state.pending),
                "token_failures_queued": state.token_failures.count,
            }
        )


@router.post("/reset", status_code=204)
def reset(state: Sim) -> None:
    """Authorizations under way, unused codes, queued failures and counters all gone. Tokens
    already issued stay valid (they are self-contained JWTs)."""
    state.reset()


@router.post("/token-failures")
def token_failures(body: TokenFailuresIn, state: Sim) -> JSONResponse:
    """The next `count` token requests fail with `status` (replacing what was queued)."""
    queued = TokenFailures(
        count=body.count,
        status=body.status,
        error=body.error or _default_error(body.status),
        delay_seconds=body.delay_seconds,
    )
    with state.lock:
        state.token_failures = queued
    return JSONResponse({"count": queued.count, "status": queued.status, "error": queued.error})
