"""uvicorn's TLS and proxy options from the settings (`serve.transport_options`): forwarded
headers are believed only from `trusted_proxies`, and not at all without them (issue 17)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from product_shop.config import Settings
from product_shop.serve import transport_options


def _seen(options: dict[str, Any], client: str) -> tuple[str, str]:
    """(scheme, client address) the app sees for a request from `client` claiming to be
    https from 203.0.113.9, behind uvicorn's proxy handling as configured by `options`."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        seen.update(scope)

    wrapped: Any = app
    if options["proxy_headers"]:
        wrapped = ProxyHeadersMiddleware(app, trusted_hosts=options["forwarded_allow_ips"])
    scope = {
        "type": "http",
        "scheme": "http",
        "client": (client, 40000),
        "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.9")],
    }
    asyncio.run(wrapped(scope, None, None))
    return seen["scheme"], seen["client"][0]


def test_without_trusted_proxies_forwarded_headers_are_ignored() -> None:
    options = transport_options(Settings())
    assert options["proxy_headers"] is False
    assert "ssl_certfile" not in options
    assert _seen(options, "127.0.0.1") == ("http", "127.0.0.1")


def test_forwarded_headers_are_believed_only_from_the_trusted_proxies() -> None:
    options = transport_options(Settings(trusted_proxies=["10.0.0.0/8"]))
    assert _seen(options, "10.1.2.3") == ("https", "203.0.113.9")
    assert _seen(options, "192.168.1.5") == ("http", "192.168.1.5")


def test_tls_files_are_passed_to_uvicorn() -> None:
    settings = Settings(ssl_certfile=Path("/tls/cert.pem"), ssl_keyfile=Path("/tls/key.pem"))
    options = transport_options(settings)
    assert (options["ssl_certfile"], options["ssl_keyfile"]) == ("/tls/cert.pem", "/tls/key.pem")
