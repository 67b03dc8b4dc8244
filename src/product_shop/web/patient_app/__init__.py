"""The patient app preview at /app (spec §10.1; docs/patient-app.md): the module's own
reference client for the mobile app, server-rendered like the staff portal, on the same
services as the JSON API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from product_shop.web.patient_app import pages, site
from product_shop.web.patient_app.render import PREFIX, STATIC_DIR, problem_page


def install_patient_app(app: FastAPI) -> None:
    """Add the patient app preview's routes to the app."""
    app.state.problem_pages = {**getattr(app.state, "problem_pages", {}), PREFIX: problem_page}
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="app-static")
    app.include_router(site.router)
    app.include_router(pages.router)
