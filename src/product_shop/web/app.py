"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from product_shop import __version__
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.events.relay import RelayThread
from product_shop.web import catalogue, checkout, health, orders
from product_shop.web.docs import install_docs
from product_shop.web.middleware import RequestContextMiddleware
from product_shop.web.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers

DESCRIPTION = """
Product Shop is Primoro's clinician-recommended commerce module: patients buy the products their
care team recommended; practices set prices; Primoro handles payment (Integrated Payments, DNA
Payments), drop-ship fulfilment and refunds.

Every route except `/healthz`, `/readyz`, `/openapi.json` and these docs needs an Access Manager
bearer token. Errors are `application/problem+json` (RFC 9457) with a stable `code`.
Money is in integer minor units with an ISO 4217 currency.
"""


def create_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    settings = settings or (context.settings if context else Settings())
    settings.check()
    context = context or AppContext.build(settings)
    app = FastAPI(
        lifespan=_lifespan,
        title="Product Shop",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(catalogue.router)
    app.include_router(checkout.router)
    app.include_router(orders.router)
    install_docs(app)
    _problem_json_in_openapi(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The embedded default runs the outbox relay in the background of the API process."""
    context: AppContext = app.state.context
    relay = None
    if context.settings.relay_in_process:
        relay = RelayThread(context.relay, context.settings.relay_interval_seconds)
        relay.start()
    try:
        yield
    finally:
        if relay is not None:
            relay.stop()


def _problem_json_in_openapi(app: FastAPI) -> None:
    """Declare error bodies as application/problem+json, and validation errors as Problem."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default_openapi()
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                for code, response in operation.get("responses", {}).items():
                    if not code.isdigit() or int(code) < 400:
                        continue
                    content = response.get("content", {})
                    body = content.pop("application/json", None)
                    ref = body.get("schema") if body else None
                    if not ref or "HTTPValidationError" in str(ref):
                        ref = problem_ref
                    content[PROBLEM_MEDIA_TYPE] = {"schema": ref}
                    response["content"] = content
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
