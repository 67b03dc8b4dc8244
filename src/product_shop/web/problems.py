"""Errors as problem+json (RFC 9457) with a stable `code`, for every failure a client can see.

Every `code` the service answers with, its status and meaning: docs/problems.md (a unit test
fails when a code used in src/ is missing there). Database errors are told apart here: a
concurrent change of the same record (409), a busy database (503, retry), an unreachable one
(503), and everything else, which is a bug (500, constraint name and SQLSTATE logged).
"""

from __future__ import annotations

import re
import sqlite3
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import UniqueConstraint
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from product_shop.core.errors import ProductShopError
from product_shop.db.models import metadata
from product_shop.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"


def page_renderer(request: Request) -> Any:
    """The problem page renderer of the site (portal, patient app) the path belongs to; None for
    the JSON API."""
    path = request.url.path
    pages: dict[str, Any] = getattr(request.app.state, "problem_pages", {})
    for prefix, render in pages.items():
        if path == prefix or path.startswith(prefix + "/"):
            return render
    return None


# Problem types are relative URI references (RFC 9457 §3.1.1), resolved against the API's own
# address: `/problems/<code>`. Each code is documented in docs/problems.md; the path is an
# identifier, the API serves no page there.
PROBLEM_TYPE_BASE = "/problems/"

log = get_logger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details with a stable machine-readable `code`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="Relative URI naming the problem type: `/problems/<code>`",
        examples=["/problems/version_mismatch"],
    )
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine code; clients branch on this")
    instance: str | None = Field(default=None, description="The request path")
    request_id: str | None = None


# The codes of the framework's own HTTP errors (unknown route, wrong method, ...), by status.
HTTP_ERROR_CODES = {
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
HTTP_ERROR_FALLBACK = ("http_error", "HTTP error")


def problem_response(
    request: Request | None,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    if request is not None:
        # The staff portal and the patient app show a problem as a page of their own
        # (`app.state.problem_pages`: path prefix -> renderer; web/portal/render.py).
        render = page_renderer(request)
        if render is not None:
            response: Response = render(
                request, status=status, code=code, title=title, detail=detail, headers=headers
            )
            return response
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


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProductShopError)
    return problem_response(
        request, status=exc.status, code=exc.code, title=exc.title, detail=exc.detail, **exc.extra
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = HTTP_ERROR_CODES.get(exc.status_code, HTTP_ERROR_FALLBACK)
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


# ---- database errors -----------------------------------------------------------------------

# The unique constraints whose violation means that another request changed the same record at
# the same time: the caller gets 409 `concurrent_change` and may retry (the retry sees the other
# request's result). Named as PostgreSQL reports them (`diag.constraint_name`; the migrations'
# names). Every other integrity error (check, foreign key, not null, any other unique, such as a
# generated id colliding) is a bug: 500 `internal_error`, with the constraint name logged.
CONCURRENT_CHANGE_CONSTRAINTS: Mapping[str, str] = {
    # Settings are created on first write: two admins of one practice setting the same product
    # at once both find no row to lock, and both insert it.
    "pk_practice_product_settings": "the same practice's settings for a product, created twice",
    # A stream's next entry is numbered from its head, read without a lock when no row of the
    # change serialises the writers (two settings changes of one practice, different products).
    "uq_audit_entries_stream_type_stream_id_stream_seq": "two entries appended to one stream",
    # Two requests with one Idempotency-Key (the claim inserts ON CONFLICT DO NOTHING today, and
    # retries a lost race; a plain insert racing another is still this).
    "pk_idempotency_keys": "one Idempotency-Key claimed twice",
    # A webhook redelivered while the first delivery is being handled (recorded ON CONFLICT DO
    # NOTHING today; a plain insert racing a redelivery is still this).
    "pk_inbox_messages": "one inbound message recorded twice",
    # The patient's completion and the payment webhook complete one checkout at once; the loser
    # retries, and if it still loses, it is this: the order exists, the retry returns it.
    "uq_orders_checkout_id": "one checkout's order created twice",
    "uq_orders_payment_ref": "one capture paying two orders (a completion racing another)",
    "pk_payment_captures": "one capture (transaction reference) recorded twice",
    "uq_payment_captures_checkout_id": "one checkout's capture recorded twice",
    "uq_payment_captures_intent_id": "one payment intent's capture recorded twice",
}

UNIQUE_VIOLATION = "23505"
# SQLSTATEs of a connection that is gone or cannot be made: class 08 (connection exception),
# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now.
_UNREACHABLE_STATES = frozenset({"57P01", "57P02", "57P03"})
# A transaction that lost to another and may simply run again: 40P01 deadlock_detected, 40001
# serialization_failure (retried by the unit of work a bounded number of times before they
# reach us), 55P03 lock_not_available (a lock wait that timed out; SQLite's "database is
# locked").
_BUSY_STATES = frozenset({"40P01", "40001", "55P03"})
RETRY_AFTER_BUSY = "1"
RETRY_AFTER_UNAVAILABLE = "5"

DatabaseErrorKind = Literal["concurrent_change", "busy", "unavailable", "bug"]


@dataclass(frozen=True, slots=True)
class DatabaseFailure:
    """What a database error says, read the same way on both engines: names, never values."""

    # PostgreSQL's SQLSTATE; for SQLite, the SQLSTATE of the same condition, where one exists.
    sqlstate: str | None
    # The violated constraint or unique index, as the migrations name it.
    constraint: str | None = None
    # `table.column` the engine names instead of a constraint (NOT NULL; an unnamed unique).
    columns: str | None = None


def database_failure(exc: BaseException) -> DatabaseFailure:
    """The SQLSTATE and constraint of a database error: psycopg 3 reports them (`sqlstate`,
    `diag`); SQLite names them in its message, which quotes no values for these errors."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error):
        return _sqlite_failure(str(orig), getattr(exc, "statement", None))
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    table, column = getattr(diag, "table_name", None), getattr(diag, "column_name", None)
    return DatabaseFailure(
        sqlstate=sqlstate if isinstance(sqlstate, str) else None,
        constraint=constraint if isinstance(constraint, str) else None,
        columns=f"{table}.{column}" if table and column else None,
    )


_SQLITE_UNIQUE_INDEX = re.compile(r"UNIQUE constraint failed: index '(?P<name>[^']+)'")
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w.]+(?:, [\w.]+)*)")
_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (?P<name>\w+)")
_SQLITE_NOT_NULL = re.compile(r"NOT NULL constraint failed: (?P<column>[\w.]+)")
_INSERT_INTO = re.compile(r"\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+\"?(?P<table>\w+)", re.IGNORECASE)


def _sqlite_failure(message: str, statement: str | None) -> DatabaseFailure:
    if found := _SQLITE_UNIQUE_INDEX.match(message):
        return DatabaseFailure(UNIQUE_VIOLATION, found["name"])
    if found := _SQLITE_UNIQUE.match(message):
        columns = found["columns"]
        return DatabaseFailure(UNIQUE_VIOLATION, _unique_named(columns), columns)
    if found := _SQLITE_CHECK.match(message):
        return DatabaseFailure("23514", found["name"])
    if message.startswith("FOREIGN KEY constraint failed"):
        return DatabaseFailure("23503", _only_foreign_key(statement))
    if found := _SQLITE_NOT_NULL.match(message):
        return DatabaseFailure("23502", columns=found["column"])
    if message.startswith(("database is locked", "database table is locked")):
        return DatabaseFailure("55P03")
    if message.startswith("unable to open database"):
        return DatabaseFailure("08001")
    return DatabaseFailure(None)


@cache
def _unique_keys() -> dict[tuple[str, frozenset[str]], str]:
    """(table, columns) of every primary key, unique constraint and unique index, to its name."""
    keys: dict[tuple[str, frozenset[str]], str] = {}
    for table in metadata.tables.values():
        uniques: list[Any] = [table.primary_key]
        uniques += [c for c in table.constraints if isinstance(c, UniqueConstraint)]
        uniques += [index for index in table.indexes if index.unique]
        for unique in uniques:
            if unique.name:
                columns = frozenset(column.name for column in unique.columns)
                keys[(table.name, columns)] = str(unique.name)
    return keys


def _unique_named(columns: str) -> str | None:
    """The constraint SQLite means by "t.a, t.b" (it names the columns, not the constraint)."""
    pairs = [column.partition(".") for column in columns.split(", ")]
    tables = {table for table, _, _ in pairs}
    if len(tables) != 1:
        return None
    return _unique_keys().get((tables.pop(), frozenset(name for _, _, name in pairs)))


def _only_foreign_key(statement: str | None) -> str | None:
    """SQLite does not name the foreign key that failed. An INSERT can only break a foreign key
    of the table it inserts into: when that table has exactly one, it is the one."""
    found = _INSERT_INTO.match(statement or "")
    table = metadata.tables.get(found["table"]) if found else None
    keys = [key for key in table.foreign_key_constraints if key.name] if table is not None else []
    return str(keys[0].name) if len(keys) == 1 else None


def database_error_kind(exc: BaseException, failure: DatabaseFailure) -> DatabaseErrorKind:
    """What a database error means for the caller (see the module docstring)."""
    if isinstance(exc, DisconnectionError):
        return "unavailable"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "unavailable"
    state = failure.sqlstate or ""
    if isinstance(exc, IntegrityError):
        concurrent = (
            state == UNIQUE_VIOLATION and failure.constraint in CONCURRENT_CHANGE_CONSTRAINTS
        )
        return "concurrent_change" if concurrent else "bug"
    if state.startswith("08") or state in _UNREACHABLE_STATES:
        return "unavailable"
    if state in _BUSY_STATES:
        return "busy"
    return "bug"


async def _database_error(request: Request, exc: Exception) -> Response:
    # Never the error's message or parameters: they quote the values that failed.
    failure = database_failure(exc)
    kind = database_error_kind(exc, failure)
    names = {
        "error": _error_classes(exc),
        "sqlstate": failure.sqlstate,
        "constraint": failure.constraint,
    }
    if kind == "concurrent_change":
        log.warning("concurrent_change", **names)
        return problem_response(
            request,
            status=409,
            code="concurrent_change",
            title="Conflict",
            detail="Another change to the same record happened at the same time; retry the "
            "request.",
        )
    if kind == "busy":
        log.warning("database_busy", **names)
        return problem_response(
            request,
            status=503,
            code="database_busy",
            title="Service unavailable",
            detail="The database was too busy to finish this request; nothing was changed. "
            "Retry shortly.",
            headers={"Retry-After": RETRY_AFTER_BUSY},
        )
    if kind == "unavailable":
        log.error("database_unavailable", **names)
        return problem_response(
            request,
            status=503,
            code="database_unavailable",
            title="Service unavailable",
            detail="The database is not reachable right now; retry shortly.",
            headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
        )
    log.error(
        "database_error",
        **names,
        columns=failure.columns,
        method=request.method,
        route=getattr(request.scope.get("route"), "path", "unmatched"),
        code_path=[
            f"{frame.filename}:{frame.lineno} {frame.name}"
            for frame in traceback.extract_tb(exc.__traceback__)[-12:]
        ],
    )
    return problem_response(
        request,
        status=500,
        code="internal_error",
        title="Internal server error",
        detail="Something went wrong on our side. Quote the request id if you report it.",
    )


def _error_classes(exc: BaseException) -> str:
    """`sqlalchemy.exc.IntegrityError <- psycopg.errors.CheckViolation`: classes, no message."""
    causes = [exc, *([exc.orig] if isinstance(exc, DBAPIError) and exc.orig else [])]
    return " <- ".join(f"{type(e).__module__}.{type(e).__qualname__}" for e in causes)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProductShopError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for database_error in (IntegrityError, OperationalError, InterfaceError, DisconnectionError):
        app.add_exception_handler(database_error, _database_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems a route can answer with."""
    descriptions = {
        400: "Bad request (problem+json)",
        401: "No valid bearer token (problem+json)",
        403: "The caller's role may not do this (problem+json)",
        404: "Not found, or not visible to this caller (problem+json)",
        409: "Conflict with the current state (problem+json)",
        412: "If-Match did not match the current version (problem+json)",
        413: "The request body is larger than allowed (problem+json, `payload_too_large`)",
        422: "The request failed validation (problem+json)",
        429: "Too many requests from this caller; Retry-After says when to try again "
        "(problem+json, `too_many_requests`)",
        500: "Unexpected server error (problem+json, no internals)",
        503: "A dependency is unavailable (problem+json)",
    }
    return {s: {"model": Problem, "description": descriptions[s]} for s in statuses}
