"""Verifying Access Manager's bearer JWTs.

Keys come from a JWKS URL or a configured public key. Only asymmetric algorithms are accepted
(never `none`, never HMAC, so a public key can never be used as a shared secret). `exp`, `nbf`,
`iss` and `aud` are checked; `sub` and `role` are required.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt import PyJWKClient

from product_shop.access.actor import PRACTICE_ROLES, Actor, Role
from product_shop.config import ALLOWED_JWT_ALGORITHMS, ConfigurationError, Settings
from product_shop.core.errors import Forbidden, InvalidToken

REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub", "role"]
# Verified tokens are remembered briefly: an app sends the same token with every call, and an RSA
# signature check costs more CPU than the rest of a small request's authentication. An entry
# lives until the token expires or for CACHE_SECONDS, whichever is sooner, so a signing key
# withdrawn from the JWKS stops being honoured within that time.
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 4096


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str],
        public_key: str | None = None,
        jwks_url: str | None = None,
        leeway_seconds: int = 30,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        unsafe = [a for a in algorithms if a not in ALLOWED_JWT_ALGORITHMS]
        if unsafe or not algorithms:
            raise ValueError(f"refusing JWT algorithms {unsafe or algorithms}")
        if not (public_key or jwks_url):
            raise ConfigurationError(
                "no JWT verification key: set PRODUCT_SHOP_JWT_PUBLIC_KEY,"
                " PRODUCT_SHOP_JWT_PUBLIC_KEY_FILE or PRODUCT_SHOP_JWT_JWKS_URL"
            )
        self._issuer = issuer
        self._audience = audience
        self._algorithms = list(algorithms)
        self._public_key = public_key
        self._jwks = (
            PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5) if jwks_url else None
        )
        self._leeway = leeway_seconds
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            public_key=settings.public_key_pem(),
            jwks_url=settings.jwt_jwks_url,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    def verify(self, token: str) -> Actor:
        claims = self._remembered(token)
        if claims is None:
            claims = self._decode(token)
            self._remember(token, claims)
        return actor_from_claims(claims)

    def verified_claims(self, token: str) -> dict[str, Any]:
        """The claims of a token checked as `verify` checks it (the staff portal keeps them in
        its server-side session); its Actor is `actor_from_claims` of them."""
        claims = self._decode(token)
        actor_from_claims(claims)  # the same refusals as a bearer token's
        return claims

    def verify_cached(self, token: str) -> Actor | None:
        """The actor of a token verified recently, without any I/O; None when it must be
        verified afresh (which may fetch the JWKS: call `verify` off the event loop then)."""
        claims = self._remembered(token)
        return None if claims is None else actor_from_claims(claims)

    def _remembered(self, token: str) -> dict[str, Any] | None:
        found = self._verified.get(token)
        if found is None:
            return None
        until, claims = found
        if self._monotonic() >= until:
            with self._lock:
                self._verified.pop(token, None)
            return None
        if self._wall_clock() >= claims["exp"] + self._leeway:
            raise InvalidToken("The access token has expired.")
        return claims

    def _remember(self, token: str, claims: dict[str, Any]) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            return
        lifetime = min(CACHE_SECONDS, exp + self._leeway - self._wall_clock())
        if lifetime <= 0:
            return
        with self._lock:
            while len(self._verified) >= CACHE_ENTRIES:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = (self._monotonic() + lifetime, claims)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in self._algorithms:
                raise InvalidToken("The token's signing algorithm is not accepted.")
            key: Any = self._public_key
            if self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except InvalidToken:
            raise
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The access token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("The access token is not valid yet.") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("The access token was not issued for Product Shop.") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("The access token was not issued by Access Manager.") from exc
        except jwt.PyJWKClientError as exc:
            raise InvalidToken("The token's signing key is not known.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("The access token is not valid.") from exc
        return claims


def actor_from_claims(claims: dict[str, Any]) -> Actor:
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise Forbidden("This role has no access to Product Shop.") from exc
    practice_id: uuid.UUID | None = None
    raw_practice = claims.get("practice_id")
    if raw_practice is not None:
        practice_id = _uuid_claim(raw_practice, "practice_id")
    if role in PRACTICE_ROLES and practice_id is None:
        raise InvalidToken("The access token names no practice.")
    subject = str(claims["sub"])
    if role is Role.PATIENT:
        _uuid_claim(subject, "sub")
    amr = claims.get("amr") or []
    auth_time = claims.get("auth_time")
    return Actor(
        actor_id=subject,
        name=claims.get("name"),
        role=role,
        practice_id=practice_id,
        mfa=isinstance(amr, list) and "mfa" in amr,
        auth_time=datetime.fromtimestamp(auth_time, UTC) if isinstance(auth_time, int) else None,
    )


def _uuid_claim(value: Any, claim: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise InvalidToken(f"The token claim '{claim}' is not a valid id.") from exc
