"""The application factory."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from product_shop import __version__
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.core.errors import ServiceUnavailable
from product_shop.events.relay_thread import RelayThread
from product_shop.jobs.schedule import JobScheduler, jobs_in_process, scheduled_jobs
from product_shop.web import (
    audit,
    catalogue,
    checkout,
    dashboards,
    events,
    finance,
    fulfilment,
    health,
    metrics,
    ops,
    orders,
    recommendations,
    refunds,
    rewards,
    suggestions,
)
from product_shop.web.abuse import RateLimited, RateLimits, RequestGuardMiddleware
from product_shop.web.docs import RESPONSE_HEADERS, install_docs, response_headers
from product_shop.web.middleware import RequestContextMiddleware
from product_shop.web.patient_app import install_patient_app
from product_shop.web.portal import install_portal
from product_shop.web.problems import (
    PROBLEM_MEDIA_TYPE,
    install_problem_handlers,
    problem_response,
)

# Every 503 tells the caller when to try again (declared on every 503 in the OpenAPI document).
RETRY_AFTER_SECONDS = "5"
# Schemas the routes reference by hand (bodies they read raw), added to components.
EXTRA_SCHEMAS = (checkout.PaymentEvent,)

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
    app.add_exception_handler(ServiceUnavailable, _retry_later)
    app.state.rate_limits = RateLimits(settings)
    app.add_exception_handler(RateLimited, _retry_later)
    # Inside the request context (added later, so outermost): its refusals get the request id,
    # the security headers and the request log line.
    app.add_middleware(RequestGuardMiddleware, settings=settings, rate_limits=app.state.rate_limits)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(catalogue.router)
    app.include_router(checkout.router)
    app.include_router(orders.router)
    app.include_router(fulfilment.router)
    app.include_router(refunds.router)
    app.include_router(rewards.router)
    app.include_router(events.router)
    app.include_router(audit.router)
    app.include_router(recommendations.router)
    app.include_router(suggestions.router)
    app.include_router(metrics.router)
    app.include_router(ops.router)
    app.include_router(dashboards.router)
    app.include_router(finance.router)
    install_portal(app)
    install_patient_app(app)
    install_docs(app)
    _problem_json_in_openapi(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The embedded default runs the outbox relay in the background of the API process, and
    the background jobs (`jobs/schedule.py`: settling refunds whose outcome is unknown, expiring
    unpaid checkouts, reconciling captures, the audit feed and checkpoints, the purges) on a
    scheduler beside it. At scale `product-shop relay` and `product-shop worker` run them."""
    context: AppContext = app.state.context
    relay = scheduler = None
    if context.settings.relay_in_process:
        relay = RelayThread(context.relay, context.settings.relay_interval_seconds)
        relay.start()
    if jobs_in_process(context):
        scheduler = JobScheduler(context.jobs, scheduled_jobs(context))
        scheduler.start()
    try:
        yield
    finally:
        if scheduler is not None:
            scheduler.stop()
        if relay is not None:
            relay.stop()


async def _retry_later(request: Request, exc: Exception) -> Response:
    """A dependency is down (503) or the caller is over its rate (429): the problem, and when
    to try again."""
    assert isinstance(exc, ServiceUnavailable | RateLimited)
    if isinstance(exc, RateLimited):
        retry_after, extra = str(exc.retry_after), {}
    else:
        retry_after, extra = RETRY_AFTER_SECONDS, exc.extra
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers={"Retry-After": retry_after},
        **extra,
    )


def _declare_headers_and_extra_schemas(schema: dict[str, Any]) -> None:
    """X-Request-Id on every response, Retry-After on every 503, the shared header objects the
    routes reference, and the schemas of bodies routes read raw."""
    components = schema.setdefault("components", {})
    components["headers"] = copy.deepcopy(RESPONSE_HEADERS)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for code, response in operation.get("responses", {}).items():
                declared = response.setdefault("headers", {})
                names = (
                    ["X-Request-Id", "Retry-After"] if code in ("429", "503") else ["X-Request-Id"]
                )
                for name, ref in response_headers(*names)["headers"].items():
                    declared.setdefault(name, ref)
    schemas = components.setdefault("schemas", {})
    for model in EXTRA_SCHEMAS:
        document = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(document.pop("$defs", {}))
        schemas[model.__name__] = document


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
        _declare_headers_and_extra_schemas(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
