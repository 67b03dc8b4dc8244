"""Request context: a request id on every log line and response, one access log line per
request, its latency in the metrics (by route template, never the concrete path), security
headers, and the last-resort 500 problem (no stack trace ever leaves)."""

from __future__ import annotations

import json
import re
import time
import traceback
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from product_shop.core.ids import new_id
from product_shop.core.timing import begin_request, header_value
from product_shop.db import tenancy
from product_shop.insights.metrics import REQUEST_SECONDS
from product_shop.logging import get_logger
from product_shop.web.docs import ASSETS_PATH, DOCS_CONTENT_SECURITY_POLICY
from product_shop.web.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = get_logger("product_shop.http")

# On every response (docs/security.md "Transport"). HSTS too: browsers ignore it over plain HTTP
# and keep it from the first HTTPS answer. API responses may load and embed nothing; the docs
# page (/docs and its assets) may load its own scripts, styles and the OpenAPI document.
_COMMON_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"permissions-policy",
        b"accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
        b"microphone=(), payment=(), usb=(), interest-cohort=()",
    ),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
# The server-rendered sites (the staff portal, the patient app preview): their pages carry their
# own policy and are never cached.
PAGE_PREFIXES = ("/portal", "/app")
_PAGE_PATHS = tuple(f"{prefix}/" for prefix in PAGE_PREFIXES)
_PAGE_ASSETS = tuple(f"{prefix}/static/" for prefix in PAGE_PREFIXES)
SECURITY_HEADERS = (
    *_COMMON_SECURITY_HEADERS,
    (b"content-security-policy", API_CONTENT_SECURITY_POLICY.encode()),
)
DOCS_SECURITY_HEADERS = (
    *_COMMON_SECURITY_HEADERS,
    (b"content-security-policy", DOCS_CONTENT_SECURITY_POLICY.encode()),
)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or str(new_id())
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        # No rows until the caller is known (web/deps.py) or the webhook authentic
        # (web/webhooks.py): a route that never says whose it is reads nothing (db/tenancy.py).
        tenancy.enter(tenancy.NOBODY)
        started = time.perf_counter()
        timings = begin_request()
        status_holder: dict[str, Any] = {"status": None}
        path: str = scope.get("path", "")
        is_docs = path == "/docs" or path.startswith(ASSETS_PATH + "/")
        is_portal = path in PAGE_PREFIXES or path.startswith(_PAGE_PATHS)
        is_asset = path.startswith(_PAGE_ASSETS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if is_portal:
                    # The portal's and the app's pages send their own policy (their
                    # render.py: the sign-in provider is a form target); anything else there
                    # gets the API's.
                    headers.extend(_COMMON_SECURITY_HEADERS)
                    if not any(name == b"content-security-policy" for name, _ in headers):
                        headers.append(
                            (b"content-security-policy", API_CONTENT_SECURITY_POLICY.encode())
                        )
                else:
                    headers.extend(DOCS_SECURITY_HEADERS if is_docs else SECURITY_HEADERS)
                if path.startswith("/v1/") or (is_portal and not is_asset):
                    headers.append((b"cache-control", b"no-store"))
                if timings:
                    headers.append((b"server-timing", header_value(timings).encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            try:
                # Never the exception's message or arguments: they may hold the values that
                # failed (a database error quotes its parameters). Its class, where, code path.
                log.error(
                    "unhandled_error",
                    error=_error_classes(exc),
                    method=scope.get("method"),
                    route=_route(scope),
                    code_path=_code_path(exc),
                )
            finally:
                if status_holder["status"] is None:
                    await _send_internal_error(send_with_headers, path, request_id)
                    status_holder["status"] = 500
        finally:
            elapsed = time.perf_counter() - started
            _observe(scope, status_holder["status"], elapsed)
            log.info(
                "request",
                method=scope.get("method"),
                path=path,
                status=status_holder["status"],
                duration_ms=round(elapsed * 1000, 2),
            )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The histogram's label children by (method, route, status class): bounded (methods above, the
# app's route templates, five classes), so the lookup per request is one dict get.
_observers: dict[tuple[str, str, str], Any] = {}


def _observe(scope: Scope, status: int | None, seconds: float) -> None:
    method = scope.get("method", "")
    if method not in _METHODS:
        method = "other"
    key = (method, _route(scope), f"{status // 100}xx" if status else "none")
    observer = _observers.get(key)
    if observer is None:
        observer = _observers.setdefault(key, REQUEST_SECONDS.labels(*key))
    observer.observe(seconds)


def _route(scope: Scope) -> str:
    """The matched route's template (`/v1/orders/{order_id}`), never the concrete path."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "unmatched"


def _error_classes(exc: BaseException) -> str:
    """The exception's class and those of its causes, outermost first."""
    names: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(names) < 5:
        names.append(f"{type(seen).__module__}.{type(seen).__qualname__}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(names)


def _code_path(exc: BaseException) -> list[str]:
    """Where it failed: file, line and function of each frame, without values or messages."""
    frames = traceback.extract_tb(exc.__traceback__)[-12:]
    return [f"{frame.filename}:{frame.lineno} {frame.name}" for frame in frames]


def _incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == REQUEST_ID_HEADER.encode():
            candidate = value.decode("latin-1")
            return candidate if _SAFE_REQUEST_ID.match(candidate) else None
    return None


async def _send_internal_error(send: Send, path: str, request_id: str) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_TYPE_BASE + "internal_error",
            "title": "Internal server error",
            "status": 500,
            "detail": "Something went wrong on our side. Quote the request id if you report it.",
            "code": "internal_error",
            "instance": path,
            "request_id": request_id,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
