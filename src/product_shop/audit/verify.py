"""`product-shop audit verify`: walks every stream's chain and every checkpoint, and names what
is wrong, first in log terms (stream, sequence, position).

Per stream, in sequence order: the sequences run 1, 2, 3... with no gap (a deleted entry); each
entry's `prev_hash` is the entry before's `entry_hash` (a reordered or inserted entry); its
`entry_hash` is sha256(prev_hash || canonical JSON of its fields) (any changed field); and its
position, the log's storage order, grows along the chain. Then the checkpoints, in order: each
chains to the one before and hashes to its stored hash; its root is the Merkle root of the heads
it holds; no stream's head goes back; and every head it holds is an entry of the log with that
hash (a stream removed, or cut short, is missing here).

Reads stream by stream through a server-side cursor, so memory holds one stream and the heads
the checkpoints name, not the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from product_shop.audit.checkpoints import (
    Head,
    checkpoint_document,
    checkpoint_hash,
    root_of,
)
from product_shop.audit.log import GENESIS_HASH, compute_hash, hashed_document
from product_shop.audit.tables import AuditCheckpoint, AuditCheckpointHead, AuditEntry

# At most this many problems are collected (the first is the one that matters).
MAX_PROBLEMS = 100


@dataclass(frozen=True, slots=True)
class Problem:
    what: str
    stream_type: str | None = None
    stream_id: str | None = None
    stream_seq: int | None = None
    position: int | None = None
    checkpoint: int | None = None

    def __str__(self) -> str:
        where = []
        if self.checkpoint is not None:
            where.append(f"checkpoint {self.checkpoint}")
        if self.stream_type is not None:
            where.append(f"stream {self.stream_type}/{self.stream_id}")
        if self.stream_seq is not None:
            where.append(f"entry {self.stream_seq}")
        if self.position is not None:
            where.append(f"position {self.position}")
        return f"{', '.join(where)}: {self.what}"


@dataclass(slots=True)
class Verification:
    entries: int = 0
    streams: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


Progress = Callable[[Verification], None]

_ENTRY_COLUMNS = [c for c in AuditEntry.__table__.columns]


def verify(connection: Connection, progress: Progress | None = None) -> Verification:
    """Check the whole log through `connection` (the caller's; nothing is written)."""
    result = Verification()
    checkpoints, heads_needed = _checkpoints(connection, result)
    _walk_chains(connection, result, heads_needed, progress)
    for (stream_type, stream_id), wanted in heads_needed.items():
        for seq, (_hash, number) in sorted(wanted.items()):
            result.add(
                Problem(
                    "a head this checkpoint holds is not in the log (stream removed or cut short)",
                    stream_type=stream_type,
                    stream_id=stream_id,
                    stream_seq=seq,
                    checkpoint=number,
                )
            )
            break
    result.checkpoints = checkpoints
    return result


def _checkpoints(
    connection: Connection, result: Verification
) -> tuple[int, dict[tuple[str, str], dict[int, tuple[str, int]]]]:
    """Check the checkpoint chain and roots; return how many there are and, per stream, the
    heads they hold (seq -> (entry_hash, first checkpoint holding it)) for the chain walk."""
    rows = connection.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.checkpoint_id)).all()
    stored: dict[int, list[Head]] = {}
    for h in connection.execute(
        select(
            AuditCheckpointHead.checkpoint_id,
            AuditCheckpointHead.stream_type,
            AuditCheckpointHead.stream_id,
            AuditCheckpointHead.stream_seq,
            AuditCheckpointHead.entry_hash,
        )
    ):
        stored.setdefault(h[0], []).append((h[1], h[2], h[3], h[4]))
    heads: dict[tuple[str, str], Head] = {}
    needed: dict[tuple[str, str], dict[int, tuple[str, int]]] = {}
    prev_hash = GENESIS_HASH
    for expected, row in enumerate(rows, start=1):
        number = row.checkpoint_id
        if number != expected:
            result.add(Problem(f"checkpoint {expected} is missing", checkpoint=number))
        for head in stored.get(number, []):
            key = (head[0], head[1])
            known = heads.get(key)
            if known is not None and head[2] <= known[2]:
                result.add(
                    Problem(
                        f"the stream's head went back from {known[2]} to {head[2]}",
                        stream_type=head[0],
                        stream_id=head[1],
                        checkpoint=number,
                    )
                )
            heads[key] = head
            needed.setdefault(key, {}).setdefault(head[2], (head[3], number))
        if row.prev_hash != prev_hash:
            result.add(Problem("does not chain to the checkpoint before", checkpoint=number))
        document = checkpoint_document(number, row.created_at, row.streams, row.entries, row.root)
        if checkpoint_hash(row.prev_hash, document) != row.checkpoint_hash:
            result.add(Problem("its hash does not match its content", checkpoint=number))
        if row.streams != len(heads) or root_of(heads) != row.root:
            result.add(Problem("its root is not the Merkle root of its heads", checkpoint=number))
        prev_hash = row.checkpoint_hash
    return len(rows), needed


def _walk_chains(
    connection: Connection,
    result: Verification,
    needed: dict[tuple[str, str], dict[int, tuple[str, int]]],
    progress: Progress | None,
) -> None:
    last_report = time.monotonic()
    for stream in _streams(connection):
        result.streams += 1
        key = (stream[0]["stream_type"], stream[0]["stream_id"])
        wanted = needed.pop(key, {})
        prev_hash, prev_position = GENESIS_HASH, 0
        for expected, row in enumerate(stream, start=1):
            result.entries += 1
            where = {
                "stream_type": row["stream_type"],
                "stream_id": row["stream_id"],
                "stream_seq": row["stream_seq"],
                "position": row["position"],
            }
            problem = None
            if row["stream_seq"] != expected:
                problem = (
                    f"sequence {row['stream_seq']} where {expected} was expected"
                    " (an entry is missing)"
                )
            elif row["prev_hash"] != prev_hash:
                problem = "prev_hash is not the entry before's hash (entries reordered or replaced)"
            elif compute_hash(row["prev_hash"], hashed_document(row)) != row["entry_hash"]:
                problem = "entry_hash does not match the entry's content (a field was changed)"
            elif row["position"] <= prev_position:
                problem = "its position is not after the entry before's"
            if problem is not None:
                result.add(Problem(problem, **where))
                break  # the rest of this stream follows from a broken link
            found = wanted.pop(row["stream_seq"], None)
            if found is not None and found[0] != row["entry_hash"]:
                result.add(
                    Problem(
                        "not the entry the checkpoint holds as this stream's head",
                        checkpoint=found[1],
                        **where,
                    )
                )
            prev_hash, prev_position = row["entry_hash"], row["position"]
        if wanted:
            needed[key] = wanted  # reported after the walk
        if progress is not None and time.monotonic() - last_report >= 2:
            progress(result)
            last_report = time.monotonic()


def _streams(connection: Connection) -> Iterator[list[dict[str, Any]]]:
    """The log, stream by stream in sequence order, streamed from the database."""
    e = AuditEntry.__table__
    rows = connection.execution_options(stream_results=True, yield_per=2000).execute(
        select(*_ENTRY_COLUMNS).order_by(e.c.stream_type, e.c.stream_id, e.c.stream_seq)
    )
    current: list[dict[str, Any]] = []
    for row in rows.mappings():
        if current and (row["stream_type"], row["stream_id"]) != (
            current[0]["stream_type"],
            current[0]["stream_id"],
        ):
            yield current
            current = []
        current.append(dict(row))
    if current:
        yield current
