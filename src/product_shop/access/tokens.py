"""Verifying Access Manager's bearer JWTs.

Keys come from a JWKS URL or a configured public key. Only asymmetric algorithms are accepted
(never `none`, never HMAC, so a public key can never be used as a shared secret). `exp`, `nbf`,
`iss` and `aud` are checked; `sub` and `role` are required.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt import PyJWKClient

from product_shop.access.actor import PRACTICE_ROLES, Actor, Role
from product_shop.config import ALLOWED_JWT_ALGORITHMS, Settings
from product_shop.core.errors import Forbidden, InvalidToken

REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub", "role"]


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
    ) -> None:
        unsafe = [a for a in algorithms if a not in ALLOWED_JWT_ALGORITHMS]
        if unsafe or not algorithms:
            raise ValueError(f"refusing JWT algorithms {unsafe or algorithms}")
        if not (public_key or jwks_url):
            raise ValueError("a public key or a JWKS URL is required")
        self._issuer = issuer
        self._audience = audience
        self._algorithms = list(algorithms)
        self._public_key = public_key
        self._jwks = (
            PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5) if jwks_url else None
        )
        self._leeway = leeway_seconds

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
        claims = self._decode(token)
        return actor_from_claims(claims)

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
