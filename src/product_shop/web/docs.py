"""Interactive API docs served entirely by us: Swagger UI assets from the installed package,
no CDN, so /docs works with no internet."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"

# Response headers the server sends, declared once (components/headers, installed by
# web/app.py) and referenced from the operations that send them.
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "Location": {
        "description": "Where the created resource is: a path on this API.",
        "required": True,
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": 'The version of this representation, e.g. `"3"`: send it back as '
        "`If-Match` on a write (a stale one is 412).",
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response to an earlier request with the "
        "same Idempotency-Key and body, replayed (nothing was created again); absent otherwise.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Idempotency-Replayed": {
        "description": "The same as `Idempotent-Replayed`, under the name the Idempotency-Key "
        "draft's implementers also use; both are sent on a replay.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Request-Id": {
        "description": "This request's id (the caller's own `X-Request-Id` when it is safe, "
        "else a new one); quote it when reporting a problem.",
        "required": True,
        "schema": {"type": "string"},
    },
}


def response_headers(*names: str) -> dict[str, Any]:
    """A `responses` entry declaring the headers it carries (by reference)."""
    unknown = set(names) - RESPONSE_HEADERS.keys()
    if unknown:
        raise ValueError(f"undeclared response headers: {sorted(unknown)}")
    return {"headers": {name: {"$ref": f"#/components/headers/{name}"} for name in names}}


# The Swagger UI page, the same for every request: built once.
SWAGGER_UI_HTML = bytes(
    get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Product Shop API",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": True},
    ).body
)


def _inline_script_hashes(html: bytes) -> str:
    """CSP sources allowing exactly the page's inline scripts (its SwaggerUIBundle call)."""
    scripts = re.findall(rb"<script>(.*?)</script>", html, flags=re.DOTALL)
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in scripts
    )


# The docs page and its assets: scripts, styles, images and the OpenAPI document (and "Try it
# out") from this origin only, plus the page's own inline script by hash. Swagger UI sets some
# styles inline and draws icons from data: URLs.
DOCS_CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src 'self' {_inline_script_hashes(SWAGGER_UI_HTML)}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def install_docs(app: FastAPI) -> None:
    assets = resources.files("fastapi_offline").joinpath("static")
    app.mount(ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(SWAGGER_UI_HTML)
