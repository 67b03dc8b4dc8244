"""The clients' side: discovery, the JWKS, POST /token (a code for tokens) and GET /userinfo.

The token endpoint authenticates the client (HTTP Basic or client_id/client_secret in the body;
a client without a secret by its client_id), then checks the code: known, unused, not expired,
issued to this client for this redirect_uri, and PKCE S256 (RFC 7636 §4.6). Errors are RFC 6749
§5.2 JSON. The access token is `demo_idp.issue_token`'s, exactly what Product Shop verifies; the
ID token is the client's (aud = client_id, nonce, auth_time, amr, acr)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData

from product_shop.access import demo_idp
from product_shop.simulators.access.common import Sim, no_store_json, oauth_error
from product_shop.simulators.access.state import AccessClient, Grant, State

router = APIRouter()

CLAIMS_SUPPORTED = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "amr",
    "acr",
    "name",
    "role",
    "practice_id",
]


@router.get("/.well-known/openid-configuration")
async def discovery(state: Sim) -> JSONResponse:
    base = state.config.public_url.rstrip("/")
    return JSONResponse(
        {
            "issuer": state.config.issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "userinfo_endpoint": f"{base}/userinfo",
            "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "acr_values_supported": ["mfa"],
            "claims_supported": CLAIMS_SUPPORTED,
        }
    )


@router.get("/jwks")
async def jwks(state: Sim) -> JSONResponse:
    return JSONResponse({"keys": [state.jwk]})


def _invalid_client(description: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="access-manager"'}
    return oauth_error(401, "invalid_client", description, headers)


def _authenticate(state: State, request: Request, form: FormData) -> AccessClient | JSONResponse:
    """The calling client (RFC 6749 §2.3.1: Basic with form-encoded parts, or the body)."""
    header = request.headers.get("authorization", "")
    body_secret = form.get("client_secret")
    secret: str | None
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return _invalid_client("The Authorization header is not valid Basic credentials.")
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            return _invalid_client("The Authorization header is not valid Basic credentials.")
        if body_secret is not None:
            return oauth_error(400, "invalid_request", "Use one client authentication method.")
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    else:
        client_id = str(form.get("client_id", ""))
        secret = None if body_secret is None else str(body_secret)
    client = state.config.clients.get(client_id)
    if client is None:
        return _invalid_client("Unknown client.")
    if client.client_secret is not None and not (
        secret is not None and hmac.compare_digest(secret.encode(), client.client_secret.encode())
    ):
        return _invalid_client("Client authentication failed.")
    return client


def _pkce_matches(verifier: str, challenge: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(computed, challenge)


def _tokens(state: State, grant: Grant) -> dict[str, Any]:
    config, user = state.config, grant.user
    now = int(state.now().timestamp())
    ttl = config.access_token_ttl_seconds
    access_token = demo_idp.issue_token(
        config.private_pem,
        subject=user.subject,
        role=user.role,
        issuer=config.issuer,
        audience=config.audience,
        now=grant.auth_time,
        name=user.name,
        practice_id=user.practice_id,
        mfa=grant.mfa,
        ttl=timedelta(seconds=ttl),
        extra={"acr": "mfa"} if grant.mfa else None,
    )
    auth_time = int(grant.auth_time.timestamp())
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "aud": grant.client_id,
        "sub": user.subject,
        "iat": now,
        "exp": now + ttl,
        "auth_time": auth_time,
        "amr": grant.amr,
        "name": user.name,
        "role": user.role,
    }
    if grant.nonce is not None:
        claims["nonce"] = grant.nonce
    if grant.mfa:
        claims["acr"] = "mfa"
    if user.practice_id is not None:
        claims["practice_id"] = user.practice_id
    id_token = jwt.encode(
        claims, state.private_key, algorithm="RS256", headers={"kid": demo_idp.KEY_ID}
    )
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": max(0, auth_time + ttl - now),
        "id_token": id_token,
        "scope": grant.scope,
    }


@router.post("/token")
async def token(request: Request, state: Sim) -> JSONResponse:
    failure = state.take_token_failure()
    if failure is not None:
        await asyncio.sleep(failure.delay_seconds)
        return oauth_error(failure.status, failure.error, "Simulated failure.")
    form = await request.form()
    client = _authenticate(state, request, form)
    if isinstance(client, JSONResponse):
        return client
    grant_type = form.get("grant_type")
    if not grant_type:
        return oauth_error(400, "invalid_request", "grant_type is required.")
    if grant_type != "authorization_code":
        return oauth_error(400, "unsupported_grant_type", "Only authorization_code is supported.")
    code, redirect_uri, verifier = (
        str(form.get(name, "")) for name in ("code", "redirect_uri", "code_verifier")
    )
    for name, value in (("code", code), ("redirect_uri", redirect_uri)):
        if not value:
            return oauth_error(400, "invalid_request", f"{name} is required.")
    if not verifier:
        return oauth_error(400, "invalid_request", "code_verifier is required (PKCE).")
    grant = state.redeem(code)
    refusal = None
    if grant is None:
        refusal = "The code is not valid."
    elif grant.used:
        refusal = "The code was already used."
    elif state.now() >= grant.expires_at:
        refusal = "The code has expired."
    elif grant.client_id != client.client_id:
        refusal = "The code was issued to another client."
    elif grant.redirect_uri != redirect_uri:
        refusal = "The redirect_uri does not match the authorization request's."
    elif not _pkce_matches(verifier, grant.code_challenge):
        refusal = "The code_verifier does not match the code_challenge."
    if grant is None or refusal is not None:
        return oauth_error(400, "invalid_grant", refusal or "The code is not valid.")
    body = _tokens(state, grant)
    with state.lock:
        state.counters.tokens_issued += 1
    return no_store_json(body)


@router.api_route("/userinfo", methods=["GET", "POST"])
async def userinfo(request: Request, state: Sim) -> JSONResponse:
    """The signed-in user's claims, for a valid access token (RFC 6750 Bearer)."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    unauthorised = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    if scheme.lower() != "bearer" or not presented.strip():
        return JSONResponse(
            {"error": "invalid_token", "error_description": "A Bearer access token is required."},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        claims = jwt.decode(
            presented.strip(),
            state.private_key.public_key(),
            algorithms=["RS256"],
            audience=state.config.audience,
            issuer=state.config.issuer,
            # Expiry on the simulator's clock (tests may drive it), not the wall clock.
            options={"require": ["exp", "sub"], "verify_exp": False, "verify_nbf": False},
        )
        if claims["exp"] <= state.now().timestamp():
            raise jwt.ExpiredSignatureError("expired")
    except jwt.PyJWTError:
        return JSONResponse(
            {"error": "invalid_token", "error_description": "The access token is not valid."},
            status_code=401,
            headers=unauthorised,
        )
    return no_store_json(
        {
            "sub": claims["sub"],
            "name": claims.get("name"),
            "role": claims.get("role"),
            "practice_id": claims.get("practice_id"),
        }
    )
