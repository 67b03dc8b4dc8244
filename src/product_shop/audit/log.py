"""Writing audit entries. Each entry chains to the previous entry of its own stream:

    entry_hash = sha256(prev_hash || canonical_json(entry))

so writers on different streams never wait for each other, and a stream's history cannot be
edited without breaking its chain. Entries are added to the caller's session: they commit with
the change they describe, or not at all.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.core.clock import Clock, SystemClock
from product_shop.core.ids import new_id
from product_shop.db.base import json_default
from product_shop.db.session import UnitOfWorkSession

GENESIS_HASH = "0" * 64
# Stream heads written in this session's transaction, so entries need not be flushed to chain.
_HEADS = "audit_stream_heads"
# A stream's last entry: parameters `stream_type` and `stream_id` (see `AuditLog.note_head`).
STREAM_HEAD = (
    select(AuditEntry.stream_seq, AuditEntry.entry_hash)
    .where(
        AuditEntry.stream_type == bindparam("stream_type"),
        AuditEntry.stream_id == bindparam("stream_id"),
    )
    .order_by(AuditEntry.stream_seq.desc())
    .limit(1)
)


@event.listens_for(UnitOfWorkSession, "after_soft_rollback")
def _forget_heads(session: Session, _transaction: object) -> None:
    session.info.pop(_HEADS, None)


@event.listens_for(UnitOfWorkSession, "after_commit")
def _forget_heads_after_commit(session: Session) -> None:
    session.info.pop(_HEADS, None)


@dataclass(frozen=True, slots=True)
class AuditActor:
    """Who did it. Built from the authenticated Actor by the caller."""

    actor_id: str
    role: str
    name: str | None


def canonical_json(document: dict[str, Any]) -> str:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default
    )


def entry_document(entry: AuditEntry) -> dict[str, Any]:
    """The hashed content of an entry (everything but its own hash)."""
    return hashed_document({key: getattr(entry, key) for key in _HASHED})


_HASHED = (
    "entry_id",
    "stream_type",
    "stream_id",
    "stream_seq",
    "recorded_at",
    "actor_id",
    "actor_role",
    "actor_name",
    "action",
    "practice_id",
    "before",
    "after",
)


def hashed_document(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "entry_id": str(row["entry_id"]),
        "stream_type": row["stream_type"],
        "stream_id": row["stream_id"],
        "stream_seq": row["stream_seq"],
        "recorded_at": row["recorded_at"].astimezone(UTC).isoformat(),
        "actor_id": row["actor_id"],
        "actor_role": row["actor_role"],
        "actor_name": row["actor_name"],
        "action": row["action"],
        "practice_id": str(row["practice_id"]) if row["practice_id"] else None,
        "before": row["before"],
        "after": row["after"],
    }


def compute_hash(prev_hash: str, document: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(document)).encode()).hexdigest()


class AuditLog:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()

    def record(
        self,
        session: Session,
        *,
        stream_type: str,
        stream_id: str | uuid.UUID,
        action: str,
        actor: AuditActor,
        practice_id: uuid.UUID | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        at: datetime | None = None,
        new_stream: bool = False,
    ) -> AuditEntry:
        """Add an entry chained to its stream's head. `new_stream`: the caller knows the stream
        begins here (a new aggregate), so no head is looked up; the unique (stream, seq)
        constraint still refuses a wrong guess."""
        entry = AuditEntry(
            **self.row(
                session,
                stream_type=stream_type,
                stream_id=stream_id,
                action=action,
                actor=actor,
                practice_id=practice_id,
                before=before,
                after=after,
                at=at,
                new_stream=new_stream,
            )
        )
        session.add(entry)
        return entry

    def note_head(
        self,
        session: Session,
        stream_type: str,
        stream_id: str | uuid.UUID,
        head: dict[str, Any] | None,
    ) -> None:
        """Tell the log a stream's head, read by the caller with STREAM_HEAD in this transaction
        (say, in one round trip with its other reads), so `row`/`record` need not look it up."""
        heads: dict[tuple[str, str], tuple[int, str]] = session.info.setdefault(_HEADS, {})
        heads[(stream_type, str(stream_id))] = (
            (head["stream_seq"], head["entry_hash"]) if head else (0, GENESIS_HASH)
        )

    def row(
        self,
        session: Session,
        *,
        stream_type: str,
        stream_id: str | uuid.UUID,
        action: str,
        actor: AuditActor,
        practice_id: uuid.UUID | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        at: datetime | None = None,
        new_stream: bool = False,
    ) -> dict[str, Any]:
        """The same entry as `record`, as a row for a batch writer (`db.fast.Statements`) to
        insert in the session's transaction. The stream head moves on either way."""
        stream_key = str(stream_id)
        heads: dict[tuple[str, str], tuple[int, str]] = session.info.setdefault(_HEADS, {})
        known = heads.get((stream_type, stream_key))
        if known is not None:
            seq, prev_hash = known[0] + 1, known[1]
        elif new_stream:
            seq, prev_hash = 1, GENESIS_HASH
        else:
            with session.no_autoflush:  # SQLAlchemy Core: off the completion's fast path
                head = (
                    session.execute(
                        STREAM_HEAD, {"stream_type": stream_type, "stream_id": stream_key}
                    )
                    .mappings()
                    .first()
                )
            seq, prev_hash = (
                (head["stream_seq"] + 1, head["entry_hash"]) if head else (1, GENESIS_HASH)
            )
        row: dict[str, Any] = {
            "entry_id": new_id(),
            "stream_type": stream_type,
            "stream_id": stream_key,
            "stream_seq": seq,
            "recorded_at": at or self._clock.now(),
            "actor_id": actor.actor_id,
            "actor_role": actor.role,
            "actor_name": actor.name,
            "action": action,
            "practice_id": practice_id,
            "before": _plain(before),
            "after": _plain(after),
            "prev_hash": prev_hash,
        }
        row["entry_hash"] = compute_hash(prev_hash, hashed_document(row))
        heads[(stream_type, stream_key)] = (seq, row["entry_hash"])
        return row


def verify_stream(entries: list[AuditEntry]) -> bool:
    """True when the entries (one stream, in order) form an unbroken chain."""
    prev = GENESIS_HASH
    for expected_seq, entry in enumerate(entries, start=1):
        if entry.stream_seq != expected_seq or entry.prev_hash != prev:
            return False
        if compute_hash(prev, entry_document(entry)) != entry.entry_hash:
            return False
        prev = entry.entry_hash
    return True


def _plain(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """Round-trip through canonical JSON so what is hashed is exactly what is stored."""
    if document is None:
        return None
    loaded: dict[str, Any] = json.loads(canonical_json(document))
    return loaded
