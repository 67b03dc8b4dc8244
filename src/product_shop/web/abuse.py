"""Abuse limits and the card-data wall (docs/security.md "Card data", "Abuse limits").

`RequestGuardMiddleware` (pure ASGI, inside the request-context middleware so its refusals carry
the request id and security headers and are logged by status only) reads each request body once,
before any route runs, and replays it downstream:
- a body above `max_body_bytes` is refused with 413 `payload_too_large`: at once when its
  Content-Length says so, else as soon as the streamed (e.g. chunked) bytes pass the limit;
- a body holding a payment card number (see `find_card_number`) is refused with 422
  `card_data_refused`; the number is never echoed, logged or passed on;
- each webhook endpoint (`POST /v1/webhooks/...`) is rate limited per client address.

Checkout creation is rate limited per caller by `checkout_rate_limit`, a route dependency (the
caller is known only once the token is verified). Limits use the `limits` library's moving
window, in memory per process or in a shared storage (`rate_limit_storage_url`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from product_shop.access.actor import Actor
from product_shop.config import Settings
from product_shop.core.errors import ProductShopError
from product_shop.web.deps import current_actor
from product_shop.web.problems import problem_response

WEBHOOKS_PREFIX = "/v1/webhooks/"

# A run of digits, single spaces or dashes allowed between them, the whole run (not touching a
# letter, another digit group or a `+`, which starts an E.164 phone number): its digits are a
# card number when there are 13 to 19 of them, the first is a payment card's major industry
# identifier (2-6: Mastercard, Amex, Diners, JCB, Visa, Discover, UnionPay, Maestro; so an epoch
# in milliseconds is not one) and they pass the Luhn check.
_DIGIT_RUN = re.compile(
    r"(?<![0-9A-Za-z+])(?<![0-9][ -])[2-6](?:[ -]?[0-9]){12,18}(?![0-9A-Za-z]|[ -][0-9])"
)
# The cheap first look: 13 characters of digits, spaces and dashes from a digit on (every run
# above has them, and so has a card number written with an exponent, 4.111111111111111e+15,
# which `_EXPONENT` then finds).
_DIGIT_RUN_BYTES = re.compile(rb"[0-9][0-9 -]{12}")
_EXPONENT = re.compile(rb"[0-9]{12}[eE][+-]?[0-9]")
# An id in the canonical UUID form (8-4-4-4-12 hexadecimal digits) is an id, however many of its
# characters are digits: about one random UUID in 70,000 starts with a Luhn-valid run of 16
# digits and dashes (its first three groups), and a product's id must not make every checkout of
# that product a 422. UUIDs are masked with a letter before the runs are looked for, so what
# stands beside one is read as it would be beside any other id.
_UUID = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"(?![0-9A-Fa-f])"
)
# Carriers' tracking numbers are often runs of 13 to 19 digits (DPD's have 14), and one in ten
# such runs that starts with 2-6 passes the Luhn check: a value under one of these keys (a JSON
# key at any depth, or a form field) is a carrier's identifier, never read as a card number, so
# a supplier's shipment update or a staff member's dispatch is not refused for its parcel
# number. Both fields are encrypted at rest (migration 0019) whatever they hold.
CARRIER_IDENTIFIERS = frozenset({"tracking_number", "tracking_url"})


class RateLimited(ProductShopError):
    status = 429
    code = "too_many_requests"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class BodyTooLarge(Exception):
    pass


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_in_text(text: str) -> bool:
    if "-" in text:
        text = _UUID.sub("u", text)
    for match in _DIGIT_RUN.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def _json_texts(value: Any) -> Iterator[str]:
    """Every string, number and key in a decoded JSON document, at any depth (not the plain
    values of `CARRIER_IDENTIFIERS`)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        yield str(value)
    elif isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            yield str(int(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            if key in CARRIER_IDENTIFIERS and not isinstance(item, dict | list):
                continue  # a carrier's identifier itself, not a structure under its name
            yield from _json_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_texts(item)


def _json_document(body: bytes) -> tuple[bool, Any]:
    """(True, the document) when `body` is JSON, else (False, None)."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return False, None
    try:
        return True, json.loads(body)
    except ValueError:
        return False, None


def find_card_number(body: bytes, content_type: str = "") -> bool:
    """True when `body` holds a Luhn-valid payment card number anywhere: in any JSON string,
    number or key at any depth (escapes and exponents decoded), a form field, or plain text;
    carriers' identifiers (`CARRIER_IDENTIFIERS`) aside."""
    if not body:
        return False
    escaped = b"\\u" in body
    form = "form-urlencoded" in content_type
    percent = form or b"%" in body
    if not (escaped or percent) and _DIGIT_RUN_BYTES.search(body) is None:
        return False  # the usual case: not 13 digits in a row anywhere
    if form:
        fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return any(
            _card_in_text(name) or (name not in CARRIER_IDENTIFIERS and _card_in_text(value))
            for name, value in fields
        )
    is_json, document = _json_document(body)
    if is_json:  # read as the client meant it: escapes and exponents decoded, keys known
        return any(
            _card_in_text(piece) or ("%" in piece and _card_in_text(unquote(piece)))
            for piece in _json_texts(document)
        )
    text = body.decode("utf-8", "replace")
    return _card_in_text(text) or (percent and _card_in_text(unquote(text)))


class RateLimits:
    """The rate limits of one app: one storage, one moving-window limiter."""

    def __init__(self, settings: Settings) -> None:
        self.storage_url = settings.rate_limit_storage_url
        self._limiter = MovingWindowRateLimiter(storage_from_string(self.storage_url))
        self.checkout: RateLimitItem = parse(settings.checkout_rate_limit)
        self.webhook: RateLimitItem = parse(settings.webhook_rate_limit)
        # Memory is a dict lookup: done on the event loop. A network storage is not.
        self._in_memory = self.storage_url.startswith("memory://")

    def _hit(self, item: RateLimitItem, key: str) -> int | None:
        """Count a hit; None when allowed, else the seconds until one is allowed again."""
        if self._limiter.hit(item, key):
            return None
        reset_at = self._limiter.get_window_stats(item, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    async def hit(self, item: RateLimitItem, key: str) -> int | None:
        if self._in_memory:
            return self._hit(item, key)
        return await run_in_threadpool(self._hit, item, key)


async def checkout_rate_limit(
    request: Request, actor: Annotated[Actor, Depends(current_actor)]
) -> None:
    """`POST /v1/checkouts`: at most `checkout_rate_limit` per caller (429 `too_many_requests`)."""
    limits: RateLimits = request.app.state.rate_limits
    wait = await limits.hit(limits.checkout, f"checkout:{actor.actor_id}")
    if wait is not None:
        raise RateLimited("Too many checkouts started; try again later.", retry_after=wait)


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, rate_limits: RateLimits) -> None:
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        self.rate_limits = rate_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith(WEBHOOKS_PREFIX) and scope.get("method") == "POST":
            client = scope.get("client")
            key = f"webhook:{path}:{client[0] if client else '-'}"
            wait = await self.rate_limits.hit(self.rate_limits.webhook, key)
            if wait is not None:
                await self._refuse(
                    scope,
                    receive,
                    send,
                    status=429,
                    code="too_many_requests",
                    title="Too many requests",
                    detail="Too many webhook calls from this address; try again later.",
                    headers={"Retry-After": str(wait)},
                )
                return
        content_type = ""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_body_bytes:
                    await self._too_large(scope, receive, send)
                    return
            elif name == b"content-type":
                content_type = value.decode("latin-1").lower()
        try:
            body, first = await self._read_body(receive)
        except BodyTooLarge:
            await self._too_large(scope, receive, send)
            return
        if first is None:  # the client went away before its body came: nobody to answer
            return
        if body and find_card_number(body, content_type):
            await self._refuse(
                scope,
                receive,
                send,
                status=422,
                code="card_data_refused",
                title="Card data refused",
                detail="The request holds what looks like a payment card number. Card details "
                "are entered only on the payment page; never send them to this API.",
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> tuple[bytes, Message | None]:
        chunks: list[bytes] = []
        size = 0
        first: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks), None
            first = first or message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), first

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse(
            scope,
            receive,
            send,
            status=413,
            code="payload_too_large",
            title="Request body too large",
            detail=f"Request bodies may be at most {self.max_body_bytes} bytes.",
        )

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        status: int,
        code: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = problem_response(
            Request(scope),
            status=status,
            code=code,
            title=title,
            detail=detail,
            headers={"Connection": "close", **(headers or {})} if status == 413 else headers,
        )
        await response(scope, receive, send)
