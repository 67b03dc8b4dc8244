"""Sign-in, sessions, CSRF and sign-out for the server-rendered sites: the staff portal
(docs/portal.md) and the patient app preview (docs/patient-app.md). One flow, one `Site` each:
its prefix, cookie names, allowed roles and Access Manager client.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeAlias
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from product_shop.access import sessions
from product_shop.access.actor import PRACTICE_STAFF_ROLES, Actor, Role
from product_shop.config import Settings
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

LOGIN_COOKIE_SECONDS = 600
# Who may use the portal: the practices' staff (spec §9); patients have the app.
PORTAL_ROLES = PRACTICE_STAFF_ROLES | {Role.CATALOGUE_ADMIN}


@dataclass(frozen=True, slots=True)
class Site:
    """One site that signs people in through Access Manager: where it lives, its cookies
    (`__Host-` names when secure), who may use it, and its own OpenID Connect client, so that a
    session or a sign-in under way at one site is never taken for the other's."""

    name: str  # the login cookie's encryption context and the app.state key of its client
    prefix: str
    session_cookie: str
    login_cookie: str
    secure_session_cookie: str
    secure_login_cookie: str
    roles: frozenset[Role]
    refusal: Callable[[], ProductShopError]  # what a signed-in person of another role gets
    credentials: Callable[[Settings], tuple[str, SecretStr | None]]
    signed_out: Callable[[Request], Response]
    # Where `GET {prefix}` sends a signed-in user; None when the site serves a page there.
    home: Callable[[Actor], str] | None = None


PORTAL = Site(
    name="portal",
    prefix=PREFIX,
    session_cookie="ps_portal",
    login_cookie="ps_login",
    secure_session_cookie="__Host-ps_portal",
    secure_login_cookie="__Host-ps_portal_login",
    roles=PORTAL_ROLES,
    refusal=lambda: Forbidden("The staff portal is for practice staff.", code="portal_forbidden"),
    credentials=lambda settings: (settings.oidc_client_id, settings.oidc_client_secret),
    signed_out=lambda request: page(request, "signed_out.html"),
    home=home_path,
)
LOGIN_COOKIE_CONTEXT = "portal.login"  # the portal's; each site seals with `{name}.login`


class SignInRequired(Exception):
    """No live session: the browser is sent to sign in, and back to `next` after."""

    def __init__(self, next_path: str, prefix: str = PREFIX) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.prefix = prefix


@dataclass(frozen=True, slots=True)
class PortalUser:
    """The signed-in person at a site (the portal's staff member, the app's patient)."""

    actor: Actor
    csrf_token: str
    pending: dict[str, Any] | None
    session_token: str


SiteUser: TypeAlias = PortalUser


def session_cookie(context: AppContext, site: Site = PORTAL) -> str:
    """`__Host-` when secure: the browser then refuses it from any other host or path."""
    secure = context.settings.portal_cookies_secure()
    return site.secure_session_cookie if secure else site.session_cookie


def login_cookie(context: AppContext, site: Site = PORTAL) -> str:
    secure = context.settings.portal_cookies_secure()
    return site.secure_login_cookie if secure else site.login_cookie


def limits(context: AppContext) -> sessions.SessionLimits:
    settings = context.settings
    return sessions.SessionLimits(
        lifetime=timedelta(seconds=settings.portal_session_lifetime_seconds),
        idle=timedelta(seconds=settings.portal_session_idle_seconds),
    )


def oidc_client(request: Request, context: AppContext, site: Site = PORTAL) -> OidcClient:
    """The site's OpenID Connect client (made once: it caches the discovery document and
    keys)."""
    key = f"{site.name}_oidc"
    client: OidcClient | None = getattr(request.app.state, key, None)
    if client is None:
        settings = context.settings
        if not settings.oidc_discovery_url:
            raise ServiceUnavailable(
                "Sign-in is not configured (oidc_discovery_url).",
                code="portal_sign_in_not_configured",
            )
        client_id, secret = site.credentials(settings)
        client = OidcClient(
            discovery_url=settings.oidc_discovery_url,
            client_id=client_id,
            client_secret=secret.get_secret_value() if secret else None,
            timeout_seconds=settings.oidc_timeout_seconds,
        )
        setattr(request.app.state, key, client)
    return client


def public_base(request: Request, context: AppContext) -> str:
    configured = context.settings.portal_public_url
    return (configured or str(request.base_url)).rstrip("/")


def safe_next(value: str | None, prefix: str = PREFIX) -> str:
    """Only a path inside the site: never another site (an open redirect)."""
    if (
        not value
        or not (value == prefix or value.startswith(prefix + "/") or value.startswith(prefix + "?"))
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 32 for c in value)
    ):
        return prefix
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


def _load_session(context: AppContext, site: Site, token: str | None) -> PortalUser | None:
    if not token:
        return None
    with context.database.unit_of_work() as session:
        row = sessions.find_session(
            session, token, now=context.clock.now(), limits=limits(context), site=site.name
        )
        if row is None:
            return None
        return PortalUser(
            actor=row.actor,
            csrf_token=row.csrf_token,
            pending=row.pending,
            session_token=token,
        )


def user_dependency(site: Site) -> Callable[..., Any]:
    """The dependency giving the site's signed-in user; a browser without a live session is
    sent to sign in, a person of another role gets the site's 403."""

    async def site_user(
        request: Request, context: Annotated[AppContext, Depends(get_context)]
    ) -> PortalUser:
        token = request.cookies.get(session_cookie(context, site))
        user = await run_in_threadpool(_load_session, context, site, token)
        if user is None:
            target = request.url.path
            if request.method == "GET" and request.url.query:
                target += "?" + request.url.query
            raise SignInRequired(target if request.method == "GET" else site.prefix, site.prefix)
        # Read by the problem pages (their navigation); the name is the portal's, kept.
        request.state.portal_actor = user.actor
        structlog.contextvars.bind_contextvars(
            actor_id=user.actor.actor_id, actor_role=user.actor.role.value
        )
        if user.actor.role not in site.roles:
            raise site.refusal()
        tenancy.enter(tenant_scope(user.actor))
        return user

    return site_user


def form_dependency(user_dep: Callable[..., Any]) -> Callable[..., Any]:
    """The dependency giving a POST's form once its CSRF token is the session's (403
    otherwise, nothing done). `user_dep` is the site's user dependency."""

    # Depends() as a default, not Annotated: these functions are made per site, and FastAPI
    # resolves string annotations against module globals only.
    async def checked(request: Request, user: PortalUser = Depends(user_dep)) -> FormData:
        form = await request.form()
        sent = form.get("csrf_token")
        if not isinstance(sent, str) or not secrets.compare_digest(sent, user.csrf_token):
            raise Forbidden(
                "This form has expired or did not come from this site. Reload the page and try "
                "again.",
                code="csrf_failed",
            )
        return form

    return checked


portal_user = user_dependency(PORTAL)
PortalUserDep = Annotated[PortalUser, Depends(portal_user)]
checked_form = form_dependency(portal_user)
FormDep = Annotated[FormData, Depends(checked_form)]


async def sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(f"{exc.prefix}/login?next={quote(exc.next_path)}", status_code=303)


def _remembered_login(
    request: Request, context: AppContext, site: Site, state: str | None
) -> dict[str, Any]:
    sealed = request.cookies.get(login_cookie(context, site))
    try:
        if not sealed or not state:
            raise ValueError("no sign-in under way")
        remembered: dict[str, Any] = json.loads(
            current_keyring().decrypt(sealed, f"{site.name}.login")
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


def site_router(site: Site, route_class: type[APIRoute] = APIRoute) -> APIRouter:
    """The site's sign-in routes: `{prefix}/login`, `/callback`, `/logout`, `/signed-out`
    (and `{prefix}` itself when the site sends its users to a home page). `route_class`: how the
    site's routes answer a problem (the app's are pages)."""
    router = APIRouter(prefix=site.prefix, include_in_schema=False, route_class=route_class)
    user_dep = user_dependency(site)
    form_dep = form_dependency(user_dep)
    callback_path = f"{site.prefix}/callback"
    go_home = site.home

    if go_home is not None:

        @router.get("")
        async def home(user: PortalUser = Depends(user_dep)) -> Response:
            return RedirectResponse(go_home(user.actor), status_code=303)

    @router.get("/login")
    def login(
        request: Request,
        context: Annotated[AppContext, Depends(get_context)],
        next: Annotated[str | None, Query(max_length=2000)] = None,
        stepup: bool = False,
    ) -> Response:
        login_hint = None
        if stepup:
            current = _load_session(
                context, site, request.cookies.get(session_cookie(context, site))
            )
            if current is None:
                stepup = False  # nothing to step up: an ordinary sign-in
            else:
                login_hint = current.actor.actor_id
        attempt = LoginRequest.new()
        url = oidc_client(request, context, site).authorization_url(
            attempt,
            redirect_uri=f"{public_base(request, context)}{callback_path}",
            mfa=stepup,
            login_hint=login_hint,
        )
        remembered = {
            "state": attempt.state,
            "nonce": attempt.nonce,
            "verifier": attempt.code_verifier,
            "next": safe_next(next, site.prefix),
            "stepup": stepup,
        }
        sealed = current_keyring().encrypt(json.dumps(remembered).encode(), f"{site.name}.login")
        response = RedirectResponse(url, status_code=303)
        _set_cookie(response, context, login_cookie(context, site), sealed, LOGIN_COOKIE_SECONDS)
        return response

    @router.get("/callback")
    def callback(
        request: Request,
        context: Annotated[AppContext, Depends(get_context)],
        code: Annotated[str | None, Query(max_length=2000)] = None,
        state: Annotated[str | None, Query(max_length=500)] = None,
        error: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        remembered = _remembered_login(request, context, site, state)
        if error or not code:
            raise Unauthenticated(
                "Access Manager did not sign you in"
                + (f" ({error})." if error else ".")
                + " Sign in again.",
                code="sign_in_failed",
            )
        attempt = LoginRequest(remembered["state"], remembered["nonce"], remembered["verifier"])
        signed_in = oidc_client(request, context, site).finish(
            attempt, code=code, redirect_uri=f"{public_base(request, context)}{callback_path}"
        )
        claims = context.verifier.verified_claims(signed_in.access_token)
        if str(signed_in.id_claims.get("sub")) != str(claims["sub"]):
            raise Unauthenticated(
                "Access Manager's tokens name different people.", code="sign_in_failed"
            )
        token = request.cookies.get(session_cookie(context, site))
        with context.database.unit_of_work() as session:
            now = context.clock.now()
            row = None
            if remembered.get("stepup"):
                row = sessions.find_session(
                    session, token, now=now, limits=limits(context), site=site.name
                )
            if row is not None and sessions.step_up(row, claims, now=now, limits=limits(context)):
                new_token = token
            else:
                if token:
                    sessions.close_session(session, token)
                sessions.purge_ended(session, now=now, limits=limits(context))
                new_token, _ = sessions.open_session(
                    session, claims, now=now, limits=limits(context), site=site.name
                )
        response = RedirectResponse(safe_next(remembered.get("next"), site.prefix), status_code=303)
        assert new_token is not None
        _set_cookie(response, context, session_cookie(context, site), new_token, None)
        response.delete_cookie(login_cookie(context, site), path="/")
        return response

    @router.post("/logout")
    def logout(
        request: Request,
        context: Annotated[AppContext, Depends(get_context)],
        user: PortalUser = Depends(user_dep),
        form: FormData = Depends(form_dep),
    ) -> Response:
        with context.database.unit_of_work() as session:
            sessions.close_session(session, user.session_token)
        signed_out = f"{public_base(request, context)}{site.prefix}/signed-out"
        try:
            target = oidc_client(request, context, site).end_session_url(signed_out) or signed_out
        except ProductShopError:
            target = signed_out
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(session_cookie(context, site), path="/")
        return response

    @router.get("/signed-out")
    def signed_out(request: Request) -> Response:
        return site.signed_out(request)

    return router


router = site_router(PORTAL)
