"""The simulator's memory: its configuration, the signing key, the authorizations under way, the
codes it issued, its counters and the token failures queued by the test controls. One
re-entrant lock guards all of it (routes run on the event loop, test controls on threads)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from product_shop.access import demo_idp
from product_shop.demo.data import USERS

# The label mixed into every demo TOTP secret: the README and the tests derive the same codes.
DEMO_TOTP_LABEL = b"product-shop demo access manager totp"
PENDING_TTL_SECONDS = 600  # a sign-in page left open this long must be started again
MAX_PENDING = 10_000  # authorizations kept at once (the oldest go first)
MAX_MFA_ATTEMPTS = 5  # wrong codes before the authorization is dropped
NON_STAFF_ROLES = frozenset({"patient", "service"})


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AccessClient:
    """A relying party: the staff portal, the patient app. No secret: a public client
    (client_id only). `roles`: whose sign-in it offers (None: every user), as Access Manager
    lists only the people an application serves."""

    client_id: str
    client_secret: str | None
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    roles: frozenset[str] | None = None

    def offers(self, user: AccessUser) -> bool:
        return self.roles is None or user.role in self.roles


@dataclass(frozen=True)
class AccessUser:
    handle: str
    subject: str
    name: str
    role: str
    practice_id: str | None
    totp_secret: str  # base32, for the MFA step (RFC 6238, 30 s, 6 digits)
    practice_name: str | None = None  # shown on the sign-in page; the id when not given


@dataclass
class AccessSimulatorConfig:
    private_pem: str  # the signing key (kid `demo_idp.KEY_ID`)
    # The `iss` of every token and the discovery document's `issuer`; may differ from public_url.
    issuer: str
    audience: str  # the access tokens' `aud`: Product Shop's
    public_url: str  # where the endpoints are advertised, e.g. http://127.0.0.1:8107
    clients: Mapping[str, AccessClient]
    users: Sequence[AccessUser]
    access_token_ttl_seconds: int = 3600
    code_ttl_seconds: int = 60
    show_codes: bool = False  # demo only: the TOTP page shows the current code as a hint
    clock: Callable[[], datetime] = utc_now  # aware UTC; tests may drive it


@dataclass
class Pending:
    """An authorization request waiting for the user to be chosen (and pass the TOTP step)."""

    pending_id: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str
    mfa: bool  # acr_values asked for "mfa"
    created_at: datetime
    user: AccessUser | None = None  # chosen, waiting for the TOTP code
    attempts: int = 0  # wrong TOTP codes so far


@dataclass
class Grant:
    """What an authorization code stands for. Single use: `used` once presented."""

    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    nonce: str | None
    user: AccessUser
    auth_time: datetime
    mfa: bool
    expires_at: datetime
    used: bool = False

    @property
    def amr(self) -> list[str]:
        return ["pwd", "mfa"] if self.mfa else ["pwd"]


@dataclass
class Counters:
    authorizations: int = 0
    codes_issued: int = 0
    tokens_issued: int = 0
    failed_mfa_attempts: int = 0


@dataclass
class TokenFailures:
    """The next `count` token requests are answered `status` with `error` (test controls)."""

    count: int = 0
    status: int = 503
    error: str = "temporarily_unavailable"
    delay_seconds: float = 0.0


@dataclass
class State:
    config: AccessSimulatorConfig
    private_key: RSAPrivateKey = field(init=False)
    jwk: dict[str, Any] = field(init=False)
    pending: dict[str, Pending] = field(default_factory=dict)
    codes: dict[str, Grant] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    token_failures: TokenFailures = field(default_factory=TokenFailures)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        key = serialization.load_pem_private_key(self.config.private_pem.encode(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("private_pem must be an RSA private key")
        self.private_key = key
        public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.jwk = {**public, "kid": demo_idp.KEY_ID, "use": "sig", "alg": "RS256"}

    def now(self) -> datetime:
        return self.config.clock()

    def user(self, handle_or_subject: str, client_id: str | None = None) -> AccessUser | None:
        """The user by handle or subject; with `client_id`, only one that client offers."""
        for user in self.users_for(client_id):
            if handle_or_subject in (user.handle, user.subject):
                return user
        return None

    def users_for(self, client_id: str | None) -> list[AccessUser]:
        """The users a client's sign-in page lists (every user when no client is named)."""
        client = self.config.clients.get(client_id) if client_id else None
        return [user for user in self.config.users if client is None or client.offers(user)]

    def start(self, pending: Pending) -> None:
        """Keep a new authorization, dropping those left too long (and the oldest beyond
        MAX_PENDING)."""
        with self.lock:
            self._prune()
            while len(self.pending) >= MAX_PENDING:
                self.pending.pop(next(iter(self.pending)))
            self.pending[pending.pending_id] = pending
            self.counters.authorizations += 1

    def find_pending(self, pending_id: str) -> Pending | None:
        with self.lock:
            self._prune()
            return self.pending.get(pending_id)

    def issue_code(self, pending: Pending, user: AccessUser, mfa: bool) -> str | None:
        """The authorization ends: a fresh single-use code bound to it, authenticated now. None
        when it already ended (dropped, or finished by a concurrent request)."""
        now = self.now()
        code = secrets.token_urlsafe(32)
        grant = Grant(
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            scope=pending.scope,
            code_challenge=pending.code_challenge,
            nonce=pending.nonce,
            user=user,
            auth_time=now,
            mfa=mfa,
            expires_at=now + timedelta(seconds=self.config.code_ttl_seconds),
        )
        with self.lock:
            if self.pending.pop(pending.pending_id, None) is None:
                return None
            for old, found in list(self.codes.items()):
                if found.expires_at <= now:
                    del self.codes[old]
            self.codes[code] = grant
            self.counters.codes_issued += 1
        return code

    def redeem(self, code: str) -> Grant | None:
        """The code's grant, marked used; None when unknown. The caller checks `used` (as it
        was) and the expiry: a code presented twice is refused every time."""
        with self.lock:
            grant = self.codes.get(code)
            if grant is None:
                return None
            found = replace(grant)
            grant.used = True
            return found

    def take_token_failure(self) -> TokenFailures | None:
        """The failure queued for this token request (counting one use of it), if any."""
        with self.lock:
            queued = self.token_failures
            if queued.count <= 0:
                return None
            queued.count -= 1
            return replace(queued)

    def reset(self) -> None:
        with self.lock:
            self.pending.clear()
            self.codes.clear()
            self.token_failures = TokenFailures()
            self.counters = Counters()

    def _prune(self) -> None:
        cutoff = self.now().timestamp() - PENDING_TTL_SECONDS
        with self.lock:
            for pending_id, found in list(self.pending.items()):
                if found.created_at.timestamp() <= cutoff:
                    del self.pending[pending_id]


def demo_totp_secret(subject: str) -> str:
    """A user's demo TOTP secret (base32, 32 characters): HMAC-SHA256 of the subject under a fixed
    demo label, first 20 bytes. Deterministic, so the README and tests compute the codes with
    `pyotp.TOTP(demo_totp_secret(subject)).now()`."""
    digest = hmac.new(DEMO_TOTP_LABEL, subject.encode(), hashlib.sha256).digest()[:20]
    return base64.b32encode(digest).decode()


def users_from_demo(*, include_patients: bool = False) -> list[AccessUser]:
    """The demo's staff (every user but patients and services), and with `include_patients` its
    patients too (for the patient app), with their demo TOTP secrets."""
    left_out = NON_STAFF_ROLES - {"patient"} if include_patients else NON_STAFF_ROLES
    return [
        AccessUser(
            handle=user.handle,
            subject=user.subject,
            name=user.name,
            role=user.role,
            practice_id=str(user.practice.practice_id) if user.practice else None,
            totp_secret=demo_totp_secret(user.subject),
            practice_name=user.practice.name if user.practice else None,
        )
        for user in USERS
        if user.role not in left_out
    ]
