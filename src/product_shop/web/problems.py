"""Errors as problem+json (RFC 9457) with a stable `code`, for every failure a client can see."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from product_shop.core.errors import ProductShopError
from product_shop.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://docs.primoro.local/product-shop/problems/"

log = get_logger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details with a stable machine-readable `code`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the problem type")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine code; clients branch on this")
    instance: str | None = Field(default=None, description="The request path")
    request_id: str | None = None


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not permitted"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("too_many_requests", "Too many requests"),
}


def problem_response(
    request: Request | None,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update(extra)
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(
        body, status_code=status, headers=all_headers, media_type=PROBLEM_MEDIA_TYPE
    )


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProductShopError)
    return problem_response(
        request, status=exc.status, code=exc.code, title=exc.title, detail=exc.detail, **exc.extra
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(
            request,
            status=400,
            code="malformed_json",
            title="Malformed JSON",
            detail="The request body is not valid JSON.",
        )
    # Input values are not echoed back: they may hold personal data.
    return problem_response(
        request,
        status=422,
        code="validation_failed",
        title="Validation failed",
        detail="The request does not match the schema: see `errors`.",
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404:
        detail = "No such resource."
    return problem_response(
        request,
        status=exc.status_code,
        code=code,
        title=title,
        detail=detail,
        headers=dict(exc.headers or {}),
    )


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("integrity_conflict", error=type(exc).__name__)
    return problem_response(
        request,
        status=409,
        code="concurrent_change",
        title="Conflict",
        detail="Another change to the same record happened at the same time; retry the request.",
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database_unavailable", error=type(exc).__name__)
    return problem_response(
        request,
        status=503,
        code="database_unavailable",
        title="Service unavailable",
        detail="The database is not reachable right now; retry shortly.",
        headers={"Retry-After": "5"},
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProductShopError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_unavailable)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems a route can answer with."""
    descriptions = {
        400: "Bad request (problem+json)",
        401: "No valid bearer token (problem+json)",
        403: "The caller's role may not do this (problem+json)",
        404: "Not found, or not visible to this caller (problem+json)",
        409: "Conflict with the current state (problem+json)",
        412: "If-Match did not match the current version (problem+json)",
        422: "The request failed validation (problem+json)",
        500: "Unexpected server error (problem+json, no internals)",
        503: "A dependency is unavailable (problem+json)",
    }
    return {s: {"model": Problem, "description": descriptions[s]} for s in statuses}
