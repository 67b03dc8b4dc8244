"""JSON over HTTP to another Primoro module, on urllib3: what every adapter here shares.

One keep-alive pool per adapter, connect and read timeouts on every call, and urllib3's `Retry`
as the one retry layer. Only requests that are safe to repeat — reads, PUTs, and POSTs that carry
an Idempotency-Key (the module answers a resend with the first result) — are resent after a
connection error, a timeout or a 408/429/5xx answer, with a short backoff or the answer's
`Retry-After` (at most `RETRY_AFTER_MAX_SECONDS`): at most three sends per call. Any other
request is sent again only when its connection could not be opened (nothing was sent).

`JsonHttpClient.call` answers a 2xx's JSON object, or raises `NoAnswer` (no answer, or 408/429/
5xx after the retries, or an answer outside 2xx-4xx: the outcome is unknown) or `Refused` (a
definite 4xx, with the module's problem `code` and `detail`). Each adapter maps these to its
port's errors.

Each call is counted per integration and outcome (`insights.metrics.INTEGRATION_CALLS`: success,
refused, failure) and the time of the last success and failure kept (`INTEGRATION_LAST`), for
`/metrics` and the operations status.
"""

from __future__ import annotations

import json
import time
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from product_shop.insights.metrics import INTEGRATION_CALLS, INTEGRATION_LAST

RETRIES = 2  # after the first send: at most three sends per call
BACKOFF_FACTOR = 0.1  # urllib3: no wait before the first retry, 0.2 s before the second
RETRY_AFTER_MAX_SECONDS = 1  # a longer Retry-After is waited for this long (a patient is waiting)
POOL_SIZE = 32  # idle keep-alive connections kept; more threads open (and then drop) extra ones
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

# Requests that are safe to repeat: retried after a connection that could not be opened, broke or
# timed out, and after a 408/429/5xx answer.
_RETRY = urllib3.Retry(
    total=RETRIES,
    other=0,  # an error urllib3 cannot place (e.g. TLS) is not one a resend would cure
    redirect=False,  # a 3xx is an answer, not an instruction to follow
    allowed_methods=None,  # any method: `call` chooses this policy only for repeatable requests
    status_forcelist=RETRY_STATUSES,
    backoff_factor=BACKOFF_FACTOR,
    respect_retry_after_header=True,
    retry_after_max=RETRY_AFTER_MAX_SECONDS,
    raise_on_status=False,  # the last 5xx is returned, and mapped like any other
)
# Requests that may not be repeated once they may have reached the server: only a connection
# that could not be opened (nothing was sent) is tried again.
_SEND_ONCE = _RETRY.new(read=False, status=0, allowed_methods=_IDEMPOTENT_METHODS)  # no POST


class NoAnswer(Exception):
    """The module did not answer usefully; the message says how (Timeout, HTTP 503, ...)."""


class Refused(Exception):
    def __init__(self, status: int, code: str | None, detail: str | None) -> None:
        super().__init__(f"HTTP {status}: {code}")
        self.status = status
        self.code = code
        self.detail = detail


class JsonHttpClient:
    def __init__(
        self, base_url: str, *, integration: str, api_key: str, timeout_seconds: float = 5.0
    ) -> None:
        """`integration`: the module's name in metrics (`integrated_payments`, ...)."""
        url = urllib3.util.parse_url(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self._prefix = url.path or ""
        self._headers = {
            "Accept": "application/json",
            "Authorization": f"Bearer {api_key}",
            "User-Agent": "primoro-product-shop",
        }
        self._pool = urllib3.connection_from_url(
            base_url,
            maxsize=POOL_SIZE,
            block=False,
            timeout=urllib3.Timeout(connect=min(2.0, timeout_seconds), read=timeout_seconds),
            retries=_SEND_ONCE,
            # https: the server's certificate is verified against the system's trust store and
            # its host name (urllib3's default, stated so it is never lost).
            **({"cert_reqs": "CERT_REQUIRED"} if url.scheme == "https" else {}),
        )
        self._counted = _Outcomes(integration)

    def close(self) -> None:
        self._pool.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One call, retried by urllib3 only if it is safe to repeat; a 2xx answer's JSON object
        ({} when the body is not one, which the caller then finds malformed)."""
        headers = self._headers
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        if idempotency_key is not None:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        repeatable = method in _IDEMPOTENT_METHODS or idempotency_key is not None
        try:
            response = self._pool.urlopen(
                method,
                self._prefix + path,
                body=body,
                headers=headers,
                retries=_RETRY if repeatable else _SEND_ONCE,
                redirect=False,
            )
        except MaxRetryError as exc:
            self._counted.failure()
            raise NoAnswer(describe(exc.reason)) from exc
        except HTTPError as exc:
            self._counted.failure()
            raise NoAnswer(describe(exc)) from exc
        if response.status >= 500 or response.status in RETRY_STATUSES:
            self._counted.failure()
            raise NoAnswer(f"HTTP {response.status}")
        if response.status >= 400:
            self._counted.refused()
            problem = _json(response.data)
            code, detail = problem.get("code"), problem.get("detail")
            raise Refused(
                response.status,
                str(code) if code is not None else None,
                str(detail) if detail is not None else None,
            )
        if not 200 <= response.status < 300:
            self._counted.failure()
            raise NoAnswer(f"HTTP {response.status}")
        self._counted.success()
        return _json(response.data)


class _Outcomes:
    """One integration's call counters and last-outcome times, their label children made once."""

    def __init__(self, integration: str) -> None:
        self._success = INTEGRATION_CALLS.labels(integration, "success")
        self._refused = INTEGRATION_CALLS.labels(integration, "refused")
        self._failure = INTEGRATION_CALLS.labels(integration, "failure")
        self._last_success = INTEGRATION_LAST.labels(integration, "success")
        self._last_failure = INTEGRATION_LAST.labels(integration, "failure")

    def success(self) -> None:
        self._success.inc()
        self._last_success.set(time.time())

    def refused(self) -> None:
        """A definite 4xx: the module answered (neither a success nor an outage)."""
        self._refused.inc()

    def failure(self) -> None:
        self._failure.inc()
        self._last_failure.set(time.time())


def describe(error: BaseException | str | None) -> str:
    """'Timeout', 'HTTP 503', or the name of the socket-level error (ConnectionRefusedError,
    RemoteDisconnected, ...)."""
    if error is None or isinstance(error, str):
        return error or "no answer"
    if isinstance(error, NewConnectionError):  # a subclass of ConnectTimeoutError
        return type(error.__cause__ or error).__name__
    if isinstance(error, ReadTimeoutError | ConnectTimeoutError):
        return "Timeout"
    if isinstance(error, ProtocolError) and len(error.args) > 1:
        cause = error.args[1]
        return type(cause).__name__ if isinstance(cause, BaseException) else str(cause)
    return type(error).__name__


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
