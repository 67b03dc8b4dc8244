"""The staff web portal (spec §10.2): server-rendered pages under /portal on the same services
as the JSON API (docs/portal.md)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from product_shop.web.portal import (
    auth,
    catalogue,
    dashboards,
    exceptions,
    fulfilment,
    orders,
    recommendations,
    refunds,
)
from product_shop.web.portal.render import PREFIX, STATIC_DIR, problem_page


def install_portal(app: FastAPI) -> None:
    app.state.problem_pages = {**getattr(app.state, "problem_pages", {}), PREFIX: problem_page}
    app.add_exception_handler(auth.SignInRequired, auth.sign_in_required)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="portal-static")
    app.include_router(auth.router)
    app.include_router(orders.router)
    app.include_router(refunds.router)
    app.include_router(exceptions.router)
    app.include_router(fulfilment.router)
    app.include_router(recommendations.router)
    app.include_router(catalogue.router)
    app.include_router(dashboards.router)
