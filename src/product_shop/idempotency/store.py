"""Idempotency keys (docs/architecture.md, invariant 3).

A creating POST claims (caller, key) in a short unit of work of its own (the request runs it
before the work), so a duplicate arriving while the first is in flight sees the claim and gets
409. The first request stores its response
in the same transaction as its effect; later requests with the same key and body replay it, and
another body under the same key is 422. Keys live 24 hours. A request that fails releases its
claim so the client may retry with the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from product_shop.core.clock import Clock
from product_shop.core.errors import BadRequest, Conflict, Unprocessable
from product_shop.db.base import json_default
from product_shop.db.fast import Statements
from product_shop.db.fast_compile import table_of
from product_shop.idempotency.tables import IdempotencyKey

KEY_TTL = timedelta(hours=24)
# An in-flight claim older than this belongs to a request that died; a new one may take over.
STALE_CLAIM = timedelta(minutes=2)
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


_TABLE = table_of(IdempotencyKey)
# A fresh claim (True: PostgreSQL's statement; False: SQLite's), with its values as parameters.
_CLAIM = {
    postgres: dialect_insert(_TABLE)
    .on_conflict_do_nothing(index_elements=["scope", "key"])
    .returning(_TABLE.c.key)
    for postgres, dialect_insert in ((True, postgresql_insert), (False, sqlite_insert))
}


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: dict[str, Any]
    location: str | None


@dataclass(frozen=True, slots=True)
class Claim:
    scope: str
    key: str
    token: str


def fingerprint(operation: str, payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(f"{operation}\n{canonical}".encode()).hexdigest()


class IdempotencyStore:
    """Every method works in the caller's unit of work; `claim` and `release` want one of their
    own (committed before, or after, the work they guard)."""

    def __init__(self, clock: Clock, *, ttl: timedelta = KEY_TTL) -> None:
        self._clock = clock
        self._ttl = ttl

    def claim(
        self, session: Session, scope: str, key: str | None, operation: str, payload: Any
    ) -> Claim | Replay:
        """A claim on a fresh (or expired, or stale) key; the stored response of a completed
        one; 422 for another body; 409 while another request holds it. A concurrent claim of
        the same key may also surface as an IntegrityError from the unit of work: in flight."""
        if key is None:
            raise BadRequest(
                "This request creates something: send an Idempotency-Key header (e.g. a UUID).",
                code="idempotency_key_required",
            )
        if not _KEY.match(key):
            raise BadRequest(
                "Idempotency-Key must be 1-255 printable ASCII characters.",
                code="idempotency_key_invalid",
            )
        digest = fingerprint(operation, payload)
        now = self._clock.now()
        token = secrets.token_hex(16)
        fresh = {
            "scope": scope,
            "key": key,
            "operation": operation,
            "fingerprint": digest,
            "status": "in_flight",
            "claim_token": token,
            "created_at": now,
            "expires_at": now + self._ttl,
        }
        # The usual case, a key never seen: one INSERT ... ON CONFLICT DO NOTHING, built once
        # per dialect on the table (Core: no ORM bulk-insert machinery per request).
        dialect = session.get_bind().dialect.name
        inserted = session.execute(_CLAIM[dialect == "postgresql"], fresh).first()
        if inserted is not None:
            return Claim(scope, key, token)
        row = session.get(IdempotencyKey, (scope, key), with_for_update=True)
        if row is not None and row.expires_at <= now:
            session.delete(row)
            session.flush()
            row = None
        if row is None:  # expired and removed, or released since the insert above
            session.add(IdempotencyKey(**fresh))
            session.flush()  # a concurrent claim of the same key fails here (IntegrityError)
            return Claim(scope, key, token)
        if row.fingerprint != digest or row.operation != operation:
            raise Unprocessable(
                "This Idempotency-Key was used with a different request body.",
                code="idempotency_key_reused",
            )
        if row.status == "completed" and row.response_status is not None:
            return Replay(row.response_status, row.response_body or {}, row.response_location)
        if now - row.created_at > STALE_CLAIM:
            # Take over a claim whose request died; conditional on the token we saw, so two
            # takers cannot both win (SQLite has no row lock).
            taken = session.execute(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.scope == scope,
                    IdempotencyKey.key == key,
                    IdempotencyKey.claim_token == row.claim_token,
                    IdempotencyKey.status == "in_flight",
                )
                .values(claim_token=token, created_at=now)
                .returning(IdempotencyKey.key)
                .execution_options(synchronize_session=False)
            ).first()
            if taken is not None:
                return Claim(scope, key, token)
        raise in_flight()

    @staticmethod
    def complete(
        session: Session,
        claim: Claim,
        status: int,
        body: dict[str, Any],
        location: str | None = None,
    ) -> None:
        """Store the response in the caller's transaction, alongside the effect it describes:
        queued through `db.fast.Statements`, so on PostgreSQL it goes with the COMMIT. If the
        claim was lost (taken over after it went stale), that COMMIT (or an earlier `flush`)
        raises 409 `idempotency_claim_lost` and the whole transaction keeps nothing, so the
        effect is not made twice. The claim's holder may store a later answer over its own
        earlier one (a refund stored as pending when reserved, then as made)."""
        # Only the holder's token matches: a claim is `in_flight` or `completed` while it lives
        # (release deletes it), so the token alone says the claim is still this request's.
        Statements(session).update(
            IdempotencyKey,
            {"scope": claim.scope, "key": claim.key, "claim_token": claim.token},
            {
                "status": "completed",
                "response_status": status,
                "response_body": json.loads(json.dumps(body, default=json_default)),
                "response_location": location,
            },
            refusal=_claim_lost,
        )

    @staticmethod
    def release(session: Session, claim: Claim, *, answered: bool = False) -> None:
        """Free the key of a request that failed, so the client may retry with it (a claim
        taken over by another request is left alone). A key that already holds an answer is
        kept (its effect was made), unless `answered`: the holder says the answer stored on the
        way is void (the effect it described was refused in the end)."""
        statuses = ("in_flight", "completed") if answered else ("in_flight",)
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.scope == claim.scope,
                IdempotencyKey.key == claim.key,
                IdempotencyKey.claim_token == claim.token,
                IdempotencyKey.status.in_(statuses),
            )
        )


def _claim_lost() -> Conflict:
    return Conflict(
        "This request took too long and another request with the same Idempotency-Key "
        "took over; nothing was done by this one.",
        code="idempotency_claim_lost",
    )


def in_flight() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_request_in_flight",
    )
