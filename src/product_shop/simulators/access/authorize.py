"""The browser's side: GET /authorize (checked, then kept under a random id while a person
chooses a user), POST /authorize/login (the user chosen), POST /authorize/mfa (the TOTP step
when "mfa" was asked for), then a 302 back to the client with a single-use code; and
GET /logout.

A bad client or redirect_uri is shown as a page and never redirected to (RFC 6749 §4.1.2.1:
an unchecked redirect_uri makes the provider an open redirector); every other bad request goes
back to the client as `error=...` with its `state`."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

import pyotp
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from product_shop.simulators.access import pages
from product_shop.simulators.access.common import Sim, html_page, redirect_to
from product_shop.simulators.access.state import MAX_MFA_ATTEMPTS, AccessUser, Pending, State

router = APIRouter()

# RFC 7636 §4.2: BASE64URL(SHA256(verifier)) is 43 characters; a challenge is 43-128 of these.
CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def _action(state: State, path: str) -> str:
    """Where a page's form posts: under public_url's path (it may sit behind a prefix)."""
    return urlsplit(state.config.public_url).path.rstrip("/") + path


def _expired() -> HTMLResponse:
    return html_page(
        pages.error_page(
            "Sign-in expired",
            "This sign-in is no longer valid. Go back to the application and sign in again.",
        ),
        400,
    )


def _picker(state: State, pending: Pending, error: str | None = None) -> HTMLResponse:
    body = pages.picker_page(
        _action(state, "/authorize/login"),
        pending.pending_id,
        state.users_for(pending.client_id),
        error,
    )
    return html_page(body, 400 if error else 200)


def _mfa(state: State, pending: Pending, user: AccessUser, error: str | None = None) -> Response:
    hint = None
    if state.config.show_codes:
        hint = pyotp.TOTP(user.totp_secret).at(state.now().timestamp())
    body = pages.mfa_page(_action(state, "/authorize/mfa"), pending.pending_id, user, error, hint)
    return html_page(body, 400 if error else 200)


def _finish(state: State, pending: Pending, user: AccessUser, mfa: bool) -> Response:
    code = state.issue_code(pending, user, mfa)
    if code is None:
        return _expired()
    return redirect_to(pending.redirect_uri, {"code": code, "state": pending.state})


def _chosen(state: State, pending: Pending, user: AccessUser) -> Response:
    """The user is known: on to the TOTP step when "mfa" was asked for, else back with a code."""
    if pending.mfa:
        with state.lock:
            pending.user = user
        return _mfa(state, pending, user)
    return _finish(state, pending, user, mfa=False)


@router.get("/authorize", response_model=None)
async def authorize(request: Request, state: Sim) -> Response:
    query = request.query_params
    client = state.config.clients.get(query.get("client_id", ""))
    if client is None:
        return html_page(
            pages.error_page("Sign-in error", "This application is not known (client_id)."), 400
        )
    redirect_uri = query.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        return html_page(
            pages.error_page(
                "Sign-in error", "The redirect_uri is not registered for this application."
            ),
            400,
        )
    client_state = query.get("state")

    def refuse(error: str, description: str) -> Response:
        params = {"error": error, "error_description": description, "state": client_state}
        return redirect_to(redirect_uri, params)

    if query.get("response_type") != "code":
        return refuse("unsupported_response_type", "Only response_type=code is supported.")
    scope = query.get("scope", "")
    if "openid" not in scope.split():
        return refuse("invalid_scope", "The scope must include openid.")
    challenge = query.get("code_challenge", "")
    if not CHALLENGE.match(challenge):
        return refuse("invalid_request", "PKCE is required: a code_challenge (RFC 7636).")
    if query.get("code_challenge_method") != "S256":
        return refuse("invalid_request", "PKCE code_challenge_method must be S256.")
    if "none" in query.get("prompt", "").split():
        # No single sign-on session is kept: a silent sign-in can never succeed.
        return refuse("login_required", "The user must sign in.")
    pending = Pending(
        pending_id=secrets.token_urlsafe(24),
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=client_state,
        nonce=query.get("nonce"),
        code_challenge=challenge,
        mfa="mfa" in query.get("acr_values", "").split(),
        created_at=state.now(),
    )
    state.start(pending)
    hint = query.get("login_hint")
    hinted = state.user(hint, client.client_id) if hint else None
    if hinted is not None:
        return _chosen(state, pending, hinted)
    return _picker(state, pending)


@router.post("/authorize/login", response_model=None)
async def login(request: Request, state: Sim) -> Response:
    form = await request.form()
    pending = state.find_pending(str(form.get("pending", "")))
    if pending is None or pending.user is not None:
        return _expired()
    user = state.user(str(form.get("handle", "")), pending.client_id)
    if user is None:
        return _picker(state, pending, "Choose one of the users listed.")
    return _chosen(state, pending, user)


@router.post("/authorize/mfa", response_model=None)
async def mfa(request: Request, state: Sim) -> Response:
    form = await request.form()
    pending = state.find_pending(str(form.get("pending", "")))
    if pending is None or pending.user is None or not pending.mfa:
        return _expired()
    user = pending.user
    code = str(form.get("code", "")).strip().replace(" ", "")
    totp = pyotp.TOTP(user.totp_secret)
    if code.isdigit() and totp.verify(code, for_time=state.now().timestamp(), valid_window=1):
        return _finish(state, pending, user, mfa=True)
    with state.lock:
        state.counters.failed_mfa_attempts += 1
        pending.attempts += 1
        dropped = pending.attempts >= MAX_MFA_ATTEMPTS
        if dropped:
            state.pending.pop(pending.pending_id, None)
    if dropped:
        return html_page(
            pages.error_page(
                "Too many attempts",
                "Too many wrong codes. Go back to the application and sign in again.",
            ),
            400,
        )
    left = MAX_MFA_ATTEMPTS - pending.attempts
    return _mfa(state, pending, user, f"That code is not right. {left} attempts left.")


@router.get("/logout", response_model=None)
async def logout(request: Request, state: Sim) -> Response:
    """RP-initiated logout: back to a registered post_logout_redirect_uri (the named client's,
    when `client_id` is given), else a page."""
    target = request.query_params.get("post_logout_redirect_uri")
    clients = state.config.clients
    named = clients.get(request.query_params.get("client_id", ""))
    registered = {
        uri
        for client in ([named] if named else clients.values())
        for uri in client.post_logout_redirect_uris
    }
    if target and target in registered:
        return redirect_to(target, {"state": request.query_params.get("state")})
    return html_page(pages.signed_out_page())
