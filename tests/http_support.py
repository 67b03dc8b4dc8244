"""HTTP clients for the tests' own calls to the simulators (their `/_simulator/...` controls,
the hosted payment page, Access Manager's pages).

A new httpx client builds an SSL context (tens of milliseconds; `httpx.post` and friends make one
per call), which the resets after every test would pay several times over. The clients here share
one transport, made once per test process; it keeps no idle connections, so no call ever finds
one a server has closed: each request opens its own (cheap on the loopback)."""

from __future__ import annotations

from typing import Any

import httpx


class _SharedTransport(httpx.BaseTransport):
    """One process-wide transport; closing a client that uses it leaves it open."""

    def __init__(self) -> None:
        self._transport = httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._transport.handle_request(request)

    def close(self) -> None:
        pass


_TRANSPORT = _SharedTransport()


def http_client(**options: Any) -> httpx.Client:
    """A client of its own (cookies, defaults) on the shared transport: `with http_client() as
    browser:` where a test would write `with httpx.Client() as browser:`."""
    return httpx.Client(transport=_TRANSPORT, **{"timeout": 10, **options})


SIMULATORS = http_client()
