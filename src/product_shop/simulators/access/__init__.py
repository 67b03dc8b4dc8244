"""Access Manager simulator: a small OpenID Connect provider (the staff portal's sign-in, the
demo and the tests). It signs with the demo key (`access.demo_idp`, kid `demo-idp-1`), so the
access tokens it issues are exactly those Product Shop verifies.

Contract (what the portal's OIDC client speaks; endpoints advertised under `public_url`, tokens
issued by `issuer`, which may differ from it):
- GET  /.well-known/openid-configuration -> discovery (code flow, PKCE S256, RS256, acr "mfa").
- GET  /jwks -> the signing key as a JWK (kid, use sig, alg RS256).
- GET  /authorize ?response_type=code&client_id&redirect_uri&scope (with openid)&state&nonce
  &code_challenge&code_challenge_method=S256 [&acr_values=mfa][&login_hint=handle|subject]
  [&prompt]. PKCE is required. An unknown client or unregistered redirect_uri is a 400 page,
  never a redirect; other errors go back as `error=` with `state` (RFC 6749 §4.1.2.1). Then a
  page "Sign in to Primoro (demo)" to choose a user (skipped for a known login_hint), the TOTP
  step when "mfa" was asked for (5 wrong codes drop the sign-in), and a 302 back with a
  single-use `code` (expires after `code_ttl_seconds`) and `state`.
- POST /token (form) grant_type=authorization_code, code, redirect_uri, code_verifier; client
  by HTTP Basic, client_id/client_secret in the body, or client_id alone for a client without
  a secret -> access_token (Product Shop's audience; amr ["pwd"] or ["pwd","mfa"]), token_type,
  expires_in, id_token (aud = client_id, nonce, auth_time, amr, acr), scope. RFC 6749 §5.2
  errors (`invalid_client` 401; `invalid_grant`, `invalid_request`, `unsupported_grant_type`
  400); always `Cache-Control: no-store`.
- GET  /userinfo (Bearer access token) -> sub, name, role, practice_id.
- GET  /logout ?post_logout_redirect_uri&state -> 302 there when some client registered it,
  else a "Signed out" page.

Users: `users_from_demo()` (the demo's staff; `include_patients=True` adds its patients, for the
patient app), each with a TOTP secret `demo_totp_secret(subject)` so the README and the tests
compute codes with `pyotp.TOTP(secret).now()`. A client's `roles` limit whom its sign-in page
offers (the portal: staff; the app: patients).

Test controls under /_simulator (no authentication): state (counters), reset, token-failures
(the next n token requests answered with a status).

Layout: `state` (configuration, users, authorizations, codes, counters), `authorize` (the
browser's side), `pages` (its HTML), `provider` (discovery, JWKS, token, userinfo), `controls`
(/_simulator). Routes reach the state through `common.Sim` (the app's `state.sim`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pyotp
from fastapi import FastAPI

from product_shop.simulators.access import authorize, controls, provider
from product_shop.simulators.access.state import (
    AccessClient,
    AccessSimulatorConfig,
    AccessUser,
    State,
    demo_totp_secret,
    users_from_demo,
)

__all__ = [
    "AccessClient",
    "AccessSimulatorConfig",
    "AccessUser",
    "State",
    "create_access_simulator",
    "demo_totp_secret",
    "users_from_demo",
]


def _absolute(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment


def _check(config: AccessSimulatorConfig) -> None:
    """Refuse a configuration that could only fail later, at a sign-in."""
    if config.access_token_ttl_seconds < 1 or config.code_ttl_seconds < 1:
        raise ValueError("access_token_ttl_seconds and code_ttl_seconds must be at least 1")
    if not _absolute(config.public_url):
        raise ValueError(f"public_url must be an absolute http(s) URL, not {config.public_url!r}")
    for client_id, client in config.clients.items():
        if client_id != client.client_id:
            raise ValueError(f"client {client.client_id!r} is registered as {client_id!r}")
        for uri in (*client.redirect_uris, *client.post_logout_redirect_uris):
            if not _absolute(uri):
                raise ValueError(f"{uri!r} (client {client_id!r}) is not an absolute URL")
    seen: set[str] = set()
    for user in config.users:
        for key in {user.handle, user.subject}:
            if key in seen:
                raise ValueError(f"{key!r} names more than one user")
            seen.add(key)
        try:
            pyotp.TOTP(user.totp_secret).now()
        except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
            raise ValueError(f"user {user.handle!r}: the TOTP secret is not base32") from exc


def create_access_simulator(config: AccessSimulatorConfig) -> FastAPI:
    _check(config)
    app = FastAPI(title="Access Manager simulator", docs_url=None, redoc_url=None)
    app.state.sim = State(config=config)  # ValueError if private_pem is not an RSA key
    app.include_router(provider.router)
    app.include_router(authorize.router)
    app.include_router(controls.router)
    return app
