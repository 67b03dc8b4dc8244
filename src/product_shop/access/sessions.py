"""The staff portal's server-side sessions (spec §10.2; docs/portal.md).

The browser holds only a random token (an HttpOnly cookie); the row is keyed by its SHA-256, so
a copy of the table opens no session. The row keeps the claims of the Access Manager access
token the sign-in returned (verified when it arrived; encrypted at rest), the session's CSRF
token, and, while an MFA step-up is under way, the form the user was filling in, so they come
back to it with nothing lost.

A session ends at the first of: sign-out, `idle` without a request, its absolute lifetime, or
the access token's own expiry (a role or practice change at Access Manager takes effect at the
next sign-in, within the token's lifetime). Like services, nothing here begins or commits a
transaction: the request owns the unit of work.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from product_shop.access.actor import Actor
from product_shop.access.tokens import actor_from_claims
from product_shop.db.base import Base, UTCDateTime
from product_shop.db.encrypted import EncryptedJSON

TOKEN_BYTES = 32


class PortalSession(Base):
    """One signed-in browser. `claims` are the verified access token's; `pending` a form kept
    across an MFA step-up (`{"form": name, "target": path, "fields": {...}}`)."""

    __tablename__ = "portal_sessions"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    claims: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON("portal_sessions.claims"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    pending: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON("portal_sessions.pending"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    @property
    def actor(self) -> Actor:
        return actor_from_claims(self.claims)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    lifetime: timedelta
    idle: timedelta


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _claims_expiry(claims: dict[str, Any]) -> datetime | None:
    exp = claims.get("exp")
    return datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None


def open_session(
    session: Session,
    claims: dict[str, Any],
    *,
    now: datetime,
    limits: SessionLimits,
    site: str,
) -> tuple[str, PortalSession]:
    """A new session for verified access-token claims at `site` (the portal, the patient app).
    Returns the cookie token (shown once: only its hash is stored) and the row. The token names
    its site, so one site's cookie is never taken for the other's session (`find_session`)."""
    token = f"{site}.{secrets.token_urlsafe(TOKEN_BYTES)}"
    expires_at = now + limits.lifetime
    token_expiry = _claims_expiry(claims)
    if token_expiry is not None:
        expires_at = min(expires_at, token_expiry)
    row = PortalSession(
        session_hash=token_hash(token),
        subject=str(claims["sub"]),
        role=str(claims["role"]),
        claims=claims,
        csrf_token=secrets.token_urlsafe(TOKEN_BYTES),
        pending=None,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return token, row


def find_session(
    session: Session,
    token: str | None,
    *,
    now: datetime,
    limits: SessionLimits,
    site: str,
) -> PortalSession | None:
    """The live session of `site` a cookie names, its last-seen time moved on; None when it has
    ended (the row gone) or is another site's (a patient app cookie sent to the portal is no
    session there, so the browser is asked to sign in, not refused)."""
    if token is not None and not token.startswith(f"{site}."):
        return None
    if not token or len(token) > 128:
        return None
    row = session.get(PortalSession, token_hash(token))
    if row is None:
        return None
    if now >= row.expires_at or now - row.last_seen_at >= limits.idle:
        session.delete(row)
        session.flush()
        return None
    row.last_seen_at = now
    return row


def step_up(
    row: PortalSession, claims: dict[str, Any], *, now: datetime, limits: SessionLimits
) -> bool:
    """Take the claims of a fresh sign-in with MFA into the session; False (nothing changed)
    when they are another person's (the session must then be closed)."""
    if str(claims["sub"]) != row.subject or str(claims["role"]) != row.role:
        return False
    row.claims = claims
    row.last_seen_at = now
    token_expiry = _claims_expiry(claims)
    ceiling = row.created_at + limits.lifetime
    row.expires_at = min(ceiling, token_expiry) if token_expiry is not None else ceiling
    row.csrf_token = secrets.token_urlsafe(TOKEN_BYTES)
    return True


def keep_pending(session: Session, token: str, pending: dict[str, Any] | None) -> None:
    """Keep a form across an MFA step-up (None: forget it, once it was submitted)."""
    row = session.get(PortalSession, token_hash(token))
    if row is not None:
        row.pending = pending


def close_session(session: Session, token: str | None) -> bool:
    """Sign-out: the row is deleted. True when there was one."""
    if not token or len(token) > 128:
        return False
    result = session.execute(
        delete(PortalSession).where(PortalSession.session_hash == token_hash(token))
    )
    return bool(getattr(result, "rowcount", 0))


def purge_ended(session: Session, *, now: datetime, limits: SessionLimits) -> int:
    """Delete every session past its expiry or idle limit (run at each sign-in)."""
    result = session.execute(
        delete(PortalSession).where(
            (PortalSession.expires_at <= now) | (PortalSession.last_seen_at <= now - limits.idle)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def sessions_of(session: Session, subject: str) -> list[PortalSession]:
    return list(session.scalars(select(PortalSession).where(PortalSession.subject == subject)))
