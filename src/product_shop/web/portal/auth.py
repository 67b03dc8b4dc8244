"""Staff portal sign-in, sessions, CSRF and sign-out (docs/portal.md).

- `GET /portal/login` starts the OpenID Connect flow: state, nonce and PKCE verifier go into a
  short-lived encrypted cookie (nothing is stored for a browser that never comes back), and the
  browser goes to Access Manager.
- `GET /portal/callback` checks the state, exchanges the code, verifies the ID token and the
  access token (the API's own verifier) and opens a server-side session (access/sessions.py).
  With `stepup`, the same person's new MFA sign-in replaces the session's claims instead.
- Every page resolves the session in a short unit of work of its own, then takes the caller's
  row-level security scope, as a bearer request does (web/deps.py).
- Every form carries the session's CSRF token, checked before anything else the POST does.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from product_shop.access import sessions
from product_shop.access.actor import PRACTICE_STAFF_ROLES, Actor, Role
from product_shop.context import AppContext
from product_shop.core.crypto import FieldDecryptionError, current_keyring
from product_shop.core.errors import (
    BadRequest,
    Forbidden,
    ProductShopError,
    ServiceUnavailable,
    Unauthenticated,
)
from product_shop.db import tenancy
from product_shop.web.deps import get_context, tenant_scope
from product_shop.web.portal.oidc import LoginRequest, OidcClient
from product_shop.web.portal.render import PREFIX, home_path, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

LOGIN_COOKIE_CONTEXT = "portal.login"
LOGIN_COOKIE_SECONDS = 600
# Who may use the portal: the practices' staff (spec §9); patients have the app.
PORTAL_ROLES = PRACTICE_STAFF_ROLES | {Role.CATALOGUE_ADMIN}


class SignInRequired(Exception):
    """No live session: the browser is sent to sign in, and back to `next` after."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True, slots=True)
class PortalUser:
    actor: Actor
    csrf_token: str
    pending: dict[str, Any] | None
    session_token: str


def session_cookie(context: AppContext) -> str:
    """`__Host-` when secure: the browser then refuses it from any other host or path."""
    return "__Host-ps_portal" if context.settings.portal_cookies_secure() else "ps_portal"


def login_cookie(context: AppContext) -> str:
    return "__Host-ps_portal_login" if context.settings.portal_cookies_secure() else "ps_login"


def limits(context: AppContext) -> sessions.SessionLimits:
    settings = context.settings
    return sessions.SessionLimits(
        lifetime=timedelta(seconds=settings.portal_session_lifetime_seconds),
        idle=timedelta(seconds=settings.portal_session_idle_seconds),
    )


def oidc_client(request: Request, context: AppContext) -> OidcClient:
    """The app's OpenID Connect client (made once: it caches the discovery document and keys)."""
    client: OidcClient | None = getattr(request.app.state, "portal_oidc", None)
    if client is None:
        settings = context.settings
        if not settings.oidc_discovery_url:
            raise ServiceUnavailable(
                "Staff sign-in is not configured (oidc_discovery_url).",
                code="portal_sign_in_not_configured",
            )
        secret = settings.oidc_client_secret
        client = OidcClient(
            discovery_url=settings.oidc_discovery_url,
            client_id=settings.oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            timeout_seconds=settings.oidc_timeout_seconds,
        )
        request.app.state.portal_oidc = client
    return client


def public_base(request: Request, context: AppContext) -> str:
    configured = context.settings.portal_public_url
    return (configured or str(request.base_url)).rstrip("/")


def safe_next(value: str | None) -> str:
    """Only a path inside the portal: never another site (an open redirect)."""
    if (
        not value
        or not value.startswith(PREFIX)
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 32 for c in value)
    ):
        return PREFIX
    return value


def _set_cookie(
    response: Response, context: AppContext, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=context.settings.portal_cookies_secure(),
        httponly=True,
        samesite="lax",
    )


def _load_session(context: AppContext, token: str | None) -> PortalUser | None:
    if not token:
        return None
    with context.database.unit_of_work() as session:
        row = sessions.find_session(session, token, now=context.clock.now(), limits=limits(context))
        if row is None:
            return None
        return PortalUser(
            actor=row.actor,
            csrf_token=row.csrf_token,
            pending=row.pending,
            session_token=token,
        )


async def portal_user(
    request: Request, context: Annotated[AppContext, Depends(get_context)]
) -> PortalUser:
    """The signed-in staff member; a browser without a live session is sent to sign in."""
    token = request.cookies.get(session_cookie(context))
    user = await run_in_threadpool(_load_session, context, token)
    if user is None:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        raise SignInRequired(target if request.method == "GET" else PREFIX)
    request.state.portal_actor = user.actor
    structlog.contextvars.bind_contextvars(
        actor_id=user.actor.actor_id, actor_role=user.actor.role.value
    )
    if user.actor.role not in PORTAL_ROLES:
        raise Forbidden("The staff portal is for practice staff.", code="portal_forbidden")
    tenancy.enter(tenant_scope(user.actor))
    return user


PortalUserDep = Annotated[PortalUser, Depends(portal_user)]


async def checked_form(request: Request, user: PortalUserDep) -> FormData:
    """The posted form, once its CSRF token is the session's (403 otherwise, nothing done)."""
    form = await request.form()
    sent = form.get("csrf_token")
    if not isinstance(sent, str) or not secrets.compare_digest(sent, user.csrf_token):
        raise Forbidden(
            "This form has expired or did not come from this portal. Reload the page and try "
            "again.",
            code="csrf_failed",
        )
    return form


FormDep = Annotated[FormData, Depends(checked_form)]


async def sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(f"{PREFIX}/login?next={quote(exc.next_path)}", status_code=303)


@router.get("")
async def home(user: PortalUserDep) -> Response:
    return RedirectResponse(home_path(user.actor), status_code=303)


@router.get("/login")
def login(
    request: Request,
    context: Annotated[AppContext, Depends(get_context)],
    next: Annotated[str | None, Query(max_length=2000)] = None,
    stepup: bool = False,
) -> Response:
    login_hint = None
    if stepup:
        current = _load_session(context, request.cookies.get(session_cookie(context)))
        if current is None:
            stepup = False  # nothing to step up: an ordinary sign-in
        else:
            login_hint = current.actor.actor_id
    attempt = LoginRequest.new()
    url = oidc_client(request, context).authorization_url(
        attempt,
        redirect_uri=f"{public_base(request, context)}{PREFIX}/callback",
        mfa=stepup,
        login_hint=login_hint,
    )
    remembered = {
        "state": attempt.state,
        "nonce": attempt.nonce,
        "verifier": attempt.code_verifier,
        "next": safe_next(next),
        "stepup": stepup,
    }
    sealed = current_keyring().encrypt(json.dumps(remembered).encode(), LOGIN_COOKIE_CONTEXT)
    response = RedirectResponse(url, status_code=303)
    _set_cookie(response, context, login_cookie(context), sealed, LOGIN_COOKIE_SECONDS)
    return response


def _remembered_login(request: Request, context: AppContext, state: str | None) -> dict[str, Any]:
    sealed = request.cookies.get(login_cookie(context))
    try:
        if not sealed or not state:
            raise ValueError("no sign-in under way")
        remembered: dict[str, Any] = json.loads(
            current_keyring().decrypt(sealed, LOGIN_COOKIE_CONTEXT)
        )
    except (ValueError, FieldDecryptionError) as exc:
        raise BadRequest(
            "This sign-in is not one this browser started, or it took too long. Sign in again.",
            code="sign_in_expired",
        ) from exc
    if not secrets.compare_digest(str(remembered.get("state")), state):
        raise BadRequest(
            "This sign-in is not one this browser started. Sign in again.",
            code="sign_in_expired",
        )
    return remembered


@router.get("/callback")
def callback(
    request: Request,
    context: Annotated[AppContext, Depends(get_context)],
    code: Annotated[str | None, Query(max_length=2000)] = None,
    state: Annotated[str | None, Query(max_length=500)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    remembered = _remembered_login(request, context, state)
    if error or not code:
        raise Unauthenticated(
            "Access Manager did not sign you in"
            + (f" ({error})." if error else ".")
            + " Sign in again.",
            code="sign_in_failed",
        )
    attempt = LoginRequest(remembered["state"], remembered["nonce"], remembered["verifier"])
    signed_in = oidc_client(request, context).finish(
        attempt, code=code, redirect_uri=f"{public_base(request, context)}{PREFIX}/callback"
    )
    claims = context.verifier.verified_claims(signed_in.access_token)
    if str(signed_in.id_claims.get("sub")) != str(claims["sub"]):
        raise Unauthenticated(
            "Access Manager's tokens name different people.", code="sign_in_failed"
        )
    token = request.cookies.get(session_cookie(context))
    with context.database.unit_of_work() as session:
        now = context.clock.now()
        row = None
        if remembered.get("stepup"):
            row = sessions.find_session(session, token, now=now, limits=limits(context))
        if row is not None and sessions.step_up(row, claims, now=now, limits=limits(context)):
            new_token = token
        else:
            if token:
                sessions.close_session(session, token)
            sessions.purge_ended(session, now=now, limits=limits(context))
            new_token, _ = sessions.open_session(session, claims, now=now, limits=limits(context))
    response = RedirectResponse(safe_next(remembered.get("next")), status_code=303)
    assert new_token is not None
    _set_cookie(response, context, session_cookie(context), new_token, None)
    response.delete_cookie(login_cookie(context), path="/")
    return response


@router.post("/logout")
def logout(
    request: Request,
    user: PortalUserDep,
    form: FormDep,
    context: Annotated[AppContext, Depends(get_context)],
) -> Response:
    with context.database.unit_of_work() as session:
        sessions.close_session(session, user.session_token)
    signed_out = f"{public_base(request, context)}{PREFIX}/signed-out"
    try:
        target = oidc_client(request, context).end_session_url(signed_out) or signed_out
    except ProductShopError:
        target = signed_out
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(session_cookie(context), path="/")
    return response


@router.get("/signed-out")
def signed_out(request: Request) -> Response:
    return page(request, "signed_out.html")
