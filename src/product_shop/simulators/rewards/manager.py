"""The module's API, as `integrations.rewards_http` speaks it (Bearer API key on every route):
read a points account, redeem points (Idempotency-Key required), reverse a redemption
(Idempotency-Key required), read a redemption. Refusals are 4xx problem+json with a `code`:
`rewards_disabled`, `amount_mismatch` (points times the practice's value per point is not the
amount, or the currency is not GBP), `insufficient_points`, `invalid_redemption` /
`invalid_reversal` (the body is not one), `invalid_request` (no `practice_id`),
`idempotency_key_required` (400), `idempotency_key_reused` (another body, or another operation,
under a key already used), `redemption_not_found` (404), `unauthorised` (401).

Idempotency-Keys are one namespace for redemptions and reversals; a refusal is never kept under
its key (the same request later may succeed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from product_shop.simulators.faults import parse_body
from product_shop.simulators.rewards.callbacks import schedule_confirmation, schedule_reversed
from product_shop.simulators.rewards.common import (
    Sim,
    after,
    before,
    problem,
    redemption_not_found,
    unauthorised,
)
from product_shop.simulators.rewards.state import (
    CURRENCY,
    RedemptionRecord,
    ReversalRecord,
    new_ref,
    now_iso,
)

router = APIRouter()

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Points = Annotated[StrictInt, Field(ge=1, le=100_000_000)]


_NOT_JSON = "The body is not a JSON object of the contract."


class RedemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: Id
    practice_id: Id
    points: Points
    amount_minor: Annotated[StrictInt, Field(ge=1)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    reference: Id


class ReversalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: Points
    reason: Text


def _key_reused() -> JSONResponse:
    return problem(422, "idempotency_key_reused", "Idempotency-Key reused with another request.")


def _key_required() -> JSONResponse:
    return problem(400, "idempotency_key_required", "Send an Idempotency-Key header.")


@router.get("/v1/accounts/{patient_id}")
async def get_account(
    patient_id: str,
    state: Sim,
    practice_id: str | None = None,
    authorization: str | None = Header(default=None),
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    if not practice_id:
        return problem(422, "invalid_request", "Give the practice_id query parameter.")
    stop, late = await before(state, "account")
    if stop:
        return stop
    document = state.account(patient_id, practice_id)
    await after(late)
    return JSONResponse(document)


@router.post("/v1/redemptions", status_code=202)
async def redeem(
    request: Request,
    state: Sim,
    authorization: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    """Deduct the points at once and answer the redemption `pending`; its confirmation (status
    `confirmed`, a settlement ref, the signed callback) follows."""
    if not state.authorised(authorization):
        return unauthorised()
    if not idempotency_key:
        return _key_required()
    body = parse_body(RedemptionIn, await request.body(), "invalid_redemption", _NOT_JSON)
    if isinstance(body, JSONResponse):
        return body
    stop, late = await before(state, "redeem")
    if stop:
        return stop
    document: dict[str, Any]
    with state.lock:  # re-entrant: the key check, the deduction and the key's store are one
        digest, seen = state.idempotent(idempotency_key, "redeem", body.model_dump())
        if seen == "mismatch":
            return _key_reused()
        if seen is not None:
            redemption = state.redemptions[seen]
            redemption.requests += 1
        else:
            value = state.value_per_point(body.practice_id)
            if value is None:
                return problem(422, "rewards_disabled", "This practice has no rewards.")
            if body.currency != CURRENCY or body.points * value != body.amount_minor:
                return problem(
                    422,
                    "amount_mismatch",
                    f"{body.points} points are worth {body.points * value} {CURRENCY} minor "
                    f"units at this practice, not {body.amount_minor} {body.currency}.",
                )
            balance = state.balance(body.patient_id, body.practice_id)
            if balance < body.points:
                return problem(
                    422,
                    "insufficient_points",
                    f"The patient has {balance} points, fewer than {body.points}.",
                )
            state.accounts[(body.patient_id, body.practice_id)] = balance - body.points
            redemption = RedemptionRecord(
                redemption_ref=new_ref("RM-RD"),
                reference=body.reference,
                patient_id=body.patient_id,
                practice_id=body.practice_id,
                points=body.points,
                amount_minor=body.amount_minor,
                currency=body.currency,
                created_at=now_iso(),
            )
            state.redemptions[redemption.redemption_ref] = redemption
            state.idempotency[idempotency_key] = (digest, redemption.redemption_ref)
            schedule_confirmation(state, redemption.redemption_ref)
        document = redemption.public()
    await after(late)
    return JSONResponse(document, status_code=202)


@router.get("/v1/redemptions/{redemption_ref}")
async def get_redemption(
    redemption_ref: str, state: Sim, authorization: str | None = Header(default=None)
) -> JSONResponse:
    if not state.authorised(authorization):
        return unauthorised()
    stop, late = await before(state, "get_redemption")
    if stop:
        return stop
    with state.lock:
        redemption = state.redemptions.get(redemption_ref)
        document = redemption.public() if redemption else None
    await after(late)
    if document is None:
        return redemption_not_found()
    return JSONResponse(document)


@router.post("/v1/redemptions/{redemption_ref}/reversals", status_code=202)
async def reverse(
    redemption_ref: str,
    request: Request,
    state: Sim,
    authorization: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    """Reinstate the points asked for, never more than are still redeemed (the reversal's
    `points` says how many: possibly fewer, or 0); its signed callback follows."""
    if not state.authorised(authorization):
        return unauthorised()
    if not idempotency_key:
        return _key_required()
    body = parse_body(ReversalIn, await request.body(), "invalid_reversal", _NOT_JSON)
    if isinstance(body, JSONResponse):
        return body
    stop, late = await before(state, "reverse")
    if stop:
        return stop
    document: dict[str, Any]
    with state.lock:  # re-entrant: the key check, the reinstatement and the key's store are one
        digest, seen = state.idempotent(
            idempotency_key, f"reverse:{redemption_ref}", body.model_dump()
        )
        if seen == "mismatch":
            return _key_reused()
        if seen is not None:
            reversal = state.reversals[seen]
            reversal.requests += 1
        else:
            redemption = state.redemptions.get(redemption_ref)
            if redemption is None:
                return redemption_not_found()
            points = max(0, min(body.points, redemption.points - redemption.points_reversed))
            redemption.points_reversed += points
            account = (redemption.patient_id, redemption.practice_id)
            state.accounts[account] = state.accounts.get(account, 0) + points
            reversal = ReversalRecord(
                reversal_ref=new_ref("RM-RV"),
                redemption_ref=redemption_ref,
                reference=redemption.reference,
                points=points,
                points_requested=body.points,
                reason=body.reason,
                created_at=now_iso(),
            )
            state.reversals[reversal.reversal_ref] = reversal
            state.idempotency[idempotency_key] = (digest, reversal.reversal_ref)
            schedule_reversed(state, reversal.reversal_ref)
        document = reversal.public()
    await after(late)
    return JSONResponse(document, status_code=202)
