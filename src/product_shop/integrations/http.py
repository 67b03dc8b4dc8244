"""A small keep-alive HTTP/1.1 client for our adapters' JSON calls, on the standard library.

Why not httpx here: a GET through httpx costs about 630 us of CPU on our 2-core machine; the same
GET through `http.client` about 160 us. Every checkout completion makes two such calls (the sync
capture confirmation, and the relay's order reference), so the adapter speaks through this
instead (figures in docs/benchmarks.md). It does only what the adapters need: JSON in and out,
connect and read timeouts (per socket read), a pool of idle keep-alive connections shared by
threads, and one immediate retry when a reused connection turns out to have been closed by the
server before it answered. That retry resends the request, which is only harmless for a request
that may be repeated: GET, PUT and DELETE, or any request with an Idempotency-Key (every POST our
adapters send has one); other requests are never resent. Every other failure is a
`TransportError`, and the adapter decides whether to try again.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# A reused keep-alive connection the server had already closed fails with one of these before
# any byte of a response arrives.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_REPEATABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class TransportError(Exception):
    """No usable answer: could not connect, timed out, or the connection broke."""


class _NotSent(Exception):
    """Writing the request failed on a connection the server had closed: nothing was sent."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpJsonClient:
    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        timeout_seconds: float,
        connect_timeout_seconds: float,
        max_idle: int = 32,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        self._headers = _merge({"Accept": "application/json"}, headers)
        self._timeout = timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._ssl = ssl.create_default_context() if self._https else None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        body = None if json_body is None else json.dumps(json_body).encode()
        all_headers = _merge(self._headers, headers or {})
        if body is not None:
            all_headers = _merge(all_headers, {"Content-Type": "application/json"})
        target = self._prefix + path
        repeatable = method.upper() in _REPEATABLE_METHODS or any(
            name.lower() == "idempotency-key" for name in all_headers
        )
        connection, reused = self._checkout()
        try:
            return self._exchange(connection, method, target, body, all_headers)
        except _NotSent as exc:
            if not reused:
                raise TransportError(_describe(exc.__cause__ or exc)) from exc
        except _STALE as exc:
            # The request may have reached the server: resend only what may be repeated.
            if not (reused and repeatable):
                raise TransportError(_describe(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(_describe(exc)) from exc
        # The server had closed the idle connection: once more on a new one.
        try:
            return self._exchange(self._connect(), method, target, body, all_headers)
        except _NotSent as exc:
            raise TransportError(_describe(exc.__cause__ or exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(_describe(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # ---- connections --------------------------------------------------------------------------

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> HttpResponse:
        try:
            try:
                connection.request(method, target, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _NotSent from exc
            if connection.sock is not None:
                connection.sock.settimeout(self._timeout)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._checkin(connection)
        return HttpResponse(response.status, data)

    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)


def _describe(exc: BaseException) -> str:
    return "Timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


def _merge(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """Headers of `base` overridden by `extra`; field names compare case-insensitively."""
    overridden = {name.lower() for name in extra}
    return {**{k: v for k, v in base.items() if k.lower() not in overridden}, **extra}
