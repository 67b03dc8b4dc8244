"""What every route shares: the state as a dependency, OAuth error answers (RFC 6749 §4.1.2.1
redirects and §5.2 JSON bodies) and the headers of the pages and token answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from product_shop.simulators.access.state import State

__all__ = ["Sim", "html_page", "no_store_json", "oauth_error", "redirect_to", "simulator"]

# Pages carry no script and load nothing; they may not be framed (clickjacking the sign-in).
# No form-action: browsers apply it to the redirect back to the client after a form post.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def simulator(request: Request) -> State:
    """The app's simulator state. A coroutine, so resolving it costs no thread hand-off."""
    state: State = request.app.state.sim
    return state


Sim = Annotated[State, Depends(simulator)]


def html_page(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def no_store_json(
    body: Mapping[str, object], status_code: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        dict(body), status_code=status_code, headers={**NO_STORE, **(headers or {})}
    )


def oauth_error(
    status_code: int, error: str, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An RFC 6749 §5.2 error body, never cached."""
    body = {"error": error, "error_description": description}
    return no_store_json(body, status_code, headers)


def redirect_to(uri: str, params: dict[str, str | None]) -> RedirectResponse:
    """302 to `uri` with `params` (those not None) added to its query, keeping its own."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(key, value) for key, value in params.items() if value is not None]
    target = urlunsplit(parts._replace(query=urlencode(query)))
    return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})
