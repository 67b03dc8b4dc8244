"""The audit log for Audit & Compliance (`product-shop audit export`, `GET /v1/audit/export`):
JSON lines, in log order, of the entries recorded in a time range with their hashes, then the
checkpoints taken in it; the last of those carries every head it holds, so its root can be
recomputed. docs/audit.md says how to check an export with nothing but sha256.

Read in pages by position (keyset), as rows, so an export of any size holds one page in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.checkpoints import checkpointed_heads
from product_shop.audit.log import hashed_document
from product_shop.audit.tables import AuditCheckpoint, AuditEntry

PAGE = 2000


_ENTRY = [*AuditEntry.__table__.columns]


def export_lines(
    session: Session, since: datetime, until: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """`{"type": "entry", ...}` for each entry recorded at or after `since` (and before
    `until`), in log order; then `{"type": "checkpoint", ...}` for each checkpoint taken in the
    range, the last with its `heads`. Read through the caller's session (a read-only one:
    `Database.reading`) as rows, not ORM objects, so nothing accumulates."""
    after = 0
    while True:
        query = (
            select(*_ENTRY)
            .where(AuditEntry.position > after, AuditEntry.recorded_at >= since)
            .order_by(AuditEntry.position)
            .limit(PAGE)
        )
        if until is not None:
            query = query.where(AuditEntry.recorded_at < until)
        page = session.execute(query).mappings().all()
        for entry in page:
            yield entry_line(dict(entry))
        if len(page) < PAGE:
            break
        after = page[-1]["position"]
    query_checkpoints = (
        select(AuditCheckpoint)
        .where(AuditCheckpoint.created_at >= since)
        .order_by(AuditCheckpoint.checkpoint_id)
    )
    if until is not None:
        query_checkpoints = query_checkpoints.where(AuditCheckpoint.created_at < until)
    checkpoints = list(session.scalars(query_checkpoints))
    heads = checkpointed_heads(session, up_to=checkpoints[-1].checkpoint_id) if checkpoints else {}
    for n, checkpoint in enumerate(checkpoints, start=1):
        line = checkpoint_line(checkpoint)
        if n == len(checkpoints):
            line["heads"] = [
                {
                    "stream_type": h[0],
                    "stream_id": h[1],
                    "stream_seq": h[2],
                    "entry_hash": h[3],
                }
                for h in (heads[key] for key in sorted(heads))
            ]
        yield line


def entry_line(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry's line: its position, the fields its hash covers, and its hashes."""
    return {
        "type": "entry",
        "position": entry["position"],
        **hashed_document(entry),
        "prev_hash": entry["prev_hash"],
        "entry_hash": entry["entry_hash"],
    }


def checkpoint_line(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "type": "checkpoint",
        "checkpoint": checkpoint.checkpoint_id,
        "created_at": checkpoint.created_at.astimezone(UTC).isoformat(),
        "streams": checkpoint.streams,
        "entries": checkpoint.entries,
        "root": checkpoint.root,
        "prev_hash": checkpoint.prev_hash,
        "checkpoint_hash": checkpoint.checkpoint_hash,
    }
