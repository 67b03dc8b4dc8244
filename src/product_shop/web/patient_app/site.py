"""The patient app preview as a sign-in site (web/portal/auth.py `Site`): its own cookies and
Access Manager client, for patients only (spec §9: patients buy and track their own orders)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.datastructures import FormData

from product_shop.access.actor import Role
from product_shop.core.errors import Forbidden
from product_shop.web.patient_app.render import PREFIX, page
from product_shop.web.portal.auth import (
    PortalUser,
    Site,
    form_dependency,
    site_router,
    user_dependency,
)

APP = Site(
    name="app",
    prefix=PREFIX,
    session_cookie="ps_app",
    login_cookie="ps_app_login",
    secure_session_cookie="__Host-ps_app",
    secure_login_cookie="__Host-ps_app_login",
    roles=frozenset({Role.PATIENT}),
    refusal=lambda: Forbidden(
        "The patient app is for patients; practice staff use the staff portal.",
        code="patient_app_forbidden",
    ),
    credentials=lambda settings: (settings.oidc_app_client_id, settings.oidc_app_client_secret),
    signed_out=lambda request: page(request, "signed_out.html"),
)

app_user = user_dependency(APP)
AppUserDep = Annotated[PortalUser, Depends(app_user)]
AppFormDep = Annotated[FormData, Depends(form_dependency(app_user))]

router = site_router(APP)
