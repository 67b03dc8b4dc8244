"""Signing staff in through Access Manager with OpenID Connect (spec §9, §10.2).

The authorization code flow with PKCE (S256) through Authlib's OAuth 2.0 client; the ID token's
signature is checked against the provider's JWKS, with its issuer, audience (our client id),
expiry and the nonce this sign-in sent. The access token that comes with it is then verified by
the API's own `TokenVerifier`, exactly as a bearer token would be: the portal acts with the
same Actor, the same roles and the same MFA claims as the JSON API.

The discovery document is read once and kept (`metadata_seconds`); the JWKS client caches keys.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc6749.errors import OAuth2Error
from jwt import PyJWKClient

from product_shop.config import ALLOWED_JWT_ALGORITHMS
from product_shop.core.errors import ServiceUnavailable, Unauthenticated

SCOPE = "openid profile"
# Access Manager's ACR value asking for a TOTP step in this sign-in (the MFA step-up).
MFA_ACR = "mfa"


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """What one sign-in must remember until the provider sends the browser back."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def new(cls) -> LoginRequest:
        return cls(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            code_verifier=secrets.token_urlsafe(48),
        )


@dataclass(frozen=True, slots=True)
class SignIn:
    """A completed sign-in: the access token for the API's verifier and the ID token's claims."""

    access_token: str
    id_claims: dict[str, Any]


class OidcClient:
    def __init__(
        self,
        *,
        discovery_url: str,
        client_id: str,
        client_secret: str | None,
        timeout_seconds: float = 5.0,
        metadata_seconds: float = 3600.0,
    ) -> None:
        self._discovery_url = discovery_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout_seconds
        self._metadata_seconds = metadata_seconds
        self._metadata: dict[str, Any] | None = None
        self._metadata_until = 0.0
        self._jwks: PyJWKClient | None = None
        self._lock = threading.Lock()

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached); ServiceUnavailable when unreachable."""
        with self._lock:
            if self._metadata is not None and time.monotonic() < self._metadata_until:
                return self._metadata
        try:
            answer = httpx.get(self._discovery_url, timeout=self._timeout)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ServiceUnavailable(
                "Access Manager cannot be reached to sign in; try again shortly.",
                code="identity_provider_unavailable",
            ) from exc
        needed = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        if not isinstance(document, dict) or any(
            not isinstance(document.get(k), str) for k in needed
        ):
            raise ServiceUnavailable(
                "Access Manager's sign-in configuration is incomplete.",
                code="identity_provider_unavailable",
            )
        with self._lock:
            self._metadata = document
            self._metadata_until = time.monotonic() + self._metadata_seconds
            if self._jwks is None or self._jwks.uri != document["jwks_uri"]:
                self._jwks = PyJWKClient(
                    document["jwks_uri"], cache_keys=True, lifespan=300, timeout=5
                )
        return document

    def _client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            token_endpoint_auth_method="client_secret_basic" if self._client_secret else "none",
            scope=SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=self._timeout,
        )

    def authorization_url(
        self,
        login: LoginRequest,
        *,
        redirect_uri: str,
        mfa: bool = False,
        login_hint: str | None = None,
    ) -> str:
        """Where to send the browser to sign in (with `mfa`, to pass the TOTP step too)."""
        extra: dict[str, str] = {"nonce": login.nonce}
        if mfa:
            extra["acr_values"] = MFA_ACR
            extra["max_age"] = "0"
        if login_hint:
            extra["login_hint"] = login_hint
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                self.metadata()["authorization_endpoint"],
                state=login.state,
                code_verifier=login.code_verifier,
                **extra,
            )
        return str(url)

    def finish(self, login: LoginRequest, *, code: str, redirect_uri: str) -> SignIn:
        """Exchange the code (with the PKCE verifier) and check the ID token."""
        metadata = self.metadata()
        try:
            with self._client(redirect_uri) as client:
                token = client.fetch_token(
                    metadata["token_endpoint"],
                    code=code,
                    code_verifier=login.code_verifier,
                    grant_type="authorization_code",
                )
        except OAuth2Error as exc:
            raise Unauthenticated(
                "Access Manager did not accept this sign-in; sign in again.",
                code="sign_in_failed",
            ) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise ServiceUnavailable(
                "Access Manager did not answer the sign-in; try again shortly.",
                code="identity_provider_unavailable",
            ) from exc
        access_token, id_token = token.get("access_token"), token.get("id_token")
        if not isinstance(access_token, str) or not isinstance(id_token, str):
            raise Unauthenticated(
                "Access Manager's answer lacked a token; sign in again.", code="sign_in_failed"
            )
        return SignIn(access_token, self._id_claims(id_token, metadata, login.nonce))

    def _id_claims(self, id_token: str, metadata: dict[str, Any], nonce: str) -> dict[str, Any]:
        assert self._jwks is not None  # set with the metadata
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token).key
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=key,
                algorithms=list(ALLOWED_JWT_ALGORITHMS),
                audience=self._client_id,
                issuer=metadata["issuer"],
                leeway=30,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise Unauthenticated(
                "Access Manager's ID token could not be verified; sign in again.",
                code="sign_in_failed",
            ) from exc
        if not secrets.compare_digest(str(claims.get("nonce")), nonce):
            raise Unauthenticated(
                "The sign-in answered another request; sign in again.", code="sign_in_failed"
            )
        return claims

    def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """Access Manager's sign-out page, back to us after; None if it has none (or is down:
        our own session is gone either way)."""
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except ServiceUnavailable:
            return None
        if not isinstance(endpoint, str):
            return None
        query = httpx.QueryParams(
            {"post_logout_redirect_uri": post_logout_redirect_uri, "client_id": self._client_id}
        )
        return f"{endpoint}?{query}"
