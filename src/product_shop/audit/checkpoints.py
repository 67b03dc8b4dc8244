"""Audit checkpoints: a Merkle root (RFC 6962, `audit/merkle.py`) over every stream's head, so
that a whole stream removed, or cut short, is found too (a chain alone cannot tell).

A checkpoint is:

    leaves          = canonical_json({stream_type, stream_id, stream_seq, entry_hash}) of each
                      stream's last entry, sorted by (stream_type, stream_id)
    root            = MTH(leaves)
    checkpoint_hash = sha256(prev_hash || canonical_json({checkpoint, created_at, streams,
                      entries, root}))  (prev_hash: the checkpoint before's, or 64 zeros)

stored in `audit_checkpoints` with the heads that moved since the checkpoint before
(`audit_checkpoint_heads`), and written to the log itself as an entry of the stream
(`audit_checkpoint`, `log`), which the audit feed sends to Audit & Compliance in log order
(that stream is not a leaf: it holds the checkpoints). Taken by `jobs/audit_checkpoint.py`,
one at a time, periodically and by `product-shop audit checkpoint`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from product_shop.audit.log import GENESIS_HASH, AuditActor, AuditLog, canonical_json
from product_shop.audit.merkle import merkle_root
from product_shop.audit.tables import AuditCheckpoint, AuditCheckpointHead, AuditEntry
from product_shop.core.clock import Clock
from product_shop.logging import get_logger

log = get_logger("product_shop.audit")

CHECKPOINT_STREAM = ("audit_checkpoint", "log")
CHECKPOINTER = AuditActor(actor_id="product-shop", role="service", name="Product Shop")

Head = tuple[str, str, int, str]  # stream_type, stream_id, stream_seq, entry_hash


@dataclass(frozen=True, slots=True)
class Checkpoint:
    checkpoint_id: int
    created_at: datetime
    streams: int
    entries: int
    root: str
    prev_hash: str
    checkpoint_hash: str


def leaf(head: Head) -> bytes:
    """A stream head as a Merkle leaf."""
    stream_type, stream_id, stream_seq, entry_hash = head
    return canonical_json(
        {
            "stream_type": stream_type,
            "stream_id": stream_id,
            "stream_seq": stream_seq,
            "entry_hash": entry_hash,
        }
    ).encode()


def root_of(heads: dict[tuple[str, str], Head]) -> str:
    return merkle_root([leaf(heads[key]) for key in sorted(heads)])


def checkpoint_document(
    checkpoint_id: int, created_at: datetime, streams: int, entries: int, root: str
) -> dict[str, Any]:
    """What a checkpoint's hash covers (with the previous checkpoint's hash before it)."""
    return {
        "checkpoint": checkpoint_id,
        "created_at": created_at.astimezone(UTC).isoformat(),
        "streams": streams,
        "entries": entries,
        "root": root,
    }


def checkpoint_hash(prev_hash: str, document: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(document)).encode()).hexdigest()


def current_heads(session: Session) -> dict[tuple[str, str], Head]:
    """Every stream's last entry, except the checkpoints' own stream: one statement, so one
    consistent view (READ COMMITTED gives each statement its snapshot)."""
    e = AuditEntry
    last = (
        select(e.stream_type, e.stream_id, func.max(e.stream_seq).label("seq"))
        .group_by(e.stream_type, e.stream_id)
        .subquery()
    )
    rows = session.execute(
        select(e.stream_type, e.stream_id, e.stream_seq, e.entry_hash)
        .join(
            last,
            (last.c.stream_type == e.stream_type)
            & (last.c.stream_id == e.stream_id)
            & (last.c.seq == e.stream_seq),
        )
        .where(e.stream_type != CHECKPOINT_STREAM[0])
    )
    return {(r[0], r[1]): (r[0], r[1], r[2], r[3]) for r in rows}


def checkpointed_heads(session: Session, up_to: int | None = None) -> dict[tuple[str, str], Head]:
    """The heads the checkpoints hold, as of checkpoint `up_to` (default: the last): for each
    stream, its latest stored head."""
    h = AuditCheckpointHead
    query = select(h.stream_type, h.stream_id, h.stream_seq, h.entry_hash).order_by(h.checkpoint_id)
    if up_to is not None:
        query = query.where(h.checkpoint_id <= up_to)
    heads: dict[tuple[str, str], Head] = {}
    for row in session.execute(query):
        heads[(row[0], row[1])] = (row[0], row[1], row[2], row[3])
    return heads


def take_checkpoint(
    session: Session, audit: AuditLog, clock: Clock, *, force: bool = False
) -> Checkpoint | None:
    """A checkpoint in the caller's unit of work; the caller holds the checkpointer's lock
    (`jobs/audit_checkpoint.py`). None when no stream moved since the last one (unless
    `force`)."""
    last = session.execute(
        select(AuditCheckpoint).order_by(AuditCheckpoint.checkpoint_id.desc()).limit(1)
    ).scalar_one_or_none()
    before = checkpointed_heads(session)
    heads = current_heads(session)
    moved = []
    for key, head in list(heads.items()):
        known = before.get(key)
        if known is None or head[2] > known[2]:
            moved.append(head)
        elif head != known:
            # Shorter than a checkpoint saw it, or its head rewritten: never taken in as
            # the new truth; the old head stays the leaf and `audit verify` names it.
            log.error("audit_stream_regressed", stream_type=key[0], stream_id=key[1])
            heads[key] = known
    # A stream the checkpoints knew and the log no longer has: keep its last known head as
    # a leaf, so the root (and `audit verify`) says it is gone rather than forgetting it.
    for key, head in before.items():
        heads.setdefault(key, head)
    if last is not None and not moved and not force:
        return None
    number = last.checkpoint_id + 1 if last else 1
    prev_hash = last.checkpoint_hash if last else GENESIS_HASH
    now = clock.now()
    entries = sum(head[2] for head in heads.values())
    root = root_of(heads)
    document = checkpoint_document(number, now, len(heads), entries, root)
    checkpoint = Checkpoint(
        checkpoint_id=number,
        created_at=now,
        streams=len(heads),
        entries=entries,
        root=root,
        prev_hash=prev_hash,
        checkpoint_hash=checkpoint_hash(prev_hash, document),
    )
    session.execute(
        insert(AuditCheckpoint).values(
            checkpoint_id=number,
            created_at=now,
            streams=checkpoint.streams,
            entries=entries,
            root=root,
            prev_hash=prev_hash,
            checkpoint_hash=checkpoint.checkpoint_hash,
        )
    )
    if moved:
        session.execute(
            insert(AuditCheckpointHead),
            [
                {
                    "checkpoint_id": number,
                    "stream_type": h[0],
                    "stream_id": h[1],
                    "stream_seq": h[2],
                    "entry_hash": h[3],
                }
                for h in moved
            ],
        )
    audit.record(
        session,
        stream_type=CHECKPOINT_STREAM[0],
        stream_id=CHECKPOINT_STREAM[1],
        action="audit.checkpoint",
        actor=CHECKPOINTER,
        after={**document, "prev_hash": prev_hash, "checkpoint_hash": checkpoint.checkpoint_hash},
        at=now,
    )
    log.info("audit_checkpoint", checkpoint=number, streams=len(heads), moved=len(moved))
    return checkpoint
