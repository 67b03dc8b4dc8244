"""The audit log's feed to Audit & Compliance (spec §8, §15.2 rule 4): every entry, in log order,
with its stream, sequence and hashes, sent as `audit.entries.v1` runs through the destination's
sink (a signed webhook or JetStream, settings `event_sinks.audit_compliance`).

The feed reads the log itself, not the outbox (an event per entry would double the writes of
every change), and keeps a cursor: the last position delivered (`feed_cursors`). Each run:

1. *Claim* (a unit of work): the cursor row, locked, is leased (`next_attempt_at` moves past the
   lease, `claims` grows), so two workers never send one run at the same time and a worker that
   dies gives it back; then the entries after the cursor, up to RUN_SIZE.
2. *Contiguous runs only.* Positions come from a sequence in insertion order, but transactions
   commit in their own order: a missing position is a transaction still open (its entry will
   appear) or one rolled back (it never will). The run stops before a gap; a gap still open
   after `gap_timeout` (far longer than any transaction here lasts) is taken as rolled back and
   passed. SQLite has one writer at a time, so its positions commit in order.
3. *Send* with no transaction open. The CloudEvent id is derived from the run's first and last
   positions, and every entry carries its `entry_id`: a run sent twice (a worker that died
   before recording it) is deduplicated by the receiver.
4. *Record* (a unit of work, only while the lease is ours): the cursor moves to the run's last
   position; or, on failure, the run is tried again with the relay's backoff (it never parks: the
   log's order means nothing after it may go first).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from product_shop.audit.log import entry_document
from product_shop.audit.tables import AuditEntry
from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.db.session import take_write_lock
from product_shop.events.attempts import describe, send_one
from product_shop.events.delivery import PendingEvent, RetryPolicy, Sink
from product_shop.events.routing import AUDIT_FEED
from product_shop.events.tables import FeedCursor
from product_shop.events.types import AUDIT_ENTRIES, EVENT_SOURCE
from product_shop.logging import get_logger

log = get_logger("product_shop.audit_feed")

RUN_SIZE = 500
_NAMESPACE = uuid.UUID("5b0e7d52-6f2c-4c65-9d0e-6a7c2f1d4e21")
_CURSORS = cast(Table, FeedCursor.__table__)
_ENTRIES = cast(Table, AuditEntry.__table__)


@dataclass(frozen=True, slots=True)
class _Run:
    claim: int
    attempts: int
    after: int  # the cursor's position when claimed
    entries: list[dict[str, Any]]
    gap: tuple[int, datetime] | None  # a gap still waited for: its position, first seen


class AuditFeed:
    def __init__(
        self,
        database: Database,
        sink: Sink | None,
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        lease: timedelta = timedelta(seconds=60),
        gap_timeout: timedelta = timedelta(minutes=5),
        run_size: int = RUN_SIZE,
    ) -> None:
        self._database = database
        self._sink = sink
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._lease = lease
        self._gap_timeout = gap_timeout
        self._run_size = run_size

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    def run_once(self) -> int:
        """Send every contiguous run that is ready; how many entries were delivered."""
        delivered = 0
        while self._sink is not None:
            run = self._claim()
            if run is None:
                return delivered
            if not run.entries:
                self._release(run)
                return delivered
            if not self._send(run):
                return delivered
            delivered += len(run.entries)
            if len(run.entries) < self._run_size:
                return delivered
        return delivered

    def _claim(self) -> _Run | None:
        now = self._clock.now()
        with self._database.unit_of_work() as session:
            take_write_lock(session)
            cursor = self._cursor(session, now)
            if cursor.next_attempt_at > now:
                return None  # leased to another worker, or waiting to retry
            rows = session.execute(
                select(_ENTRIES)
                .where(_ENTRIES.c.position > cursor.position)
                .order_by(_ENTRIES.c.position)
                .limit(self._run_size)
            ).mappings()
            entries, gap = self._contiguous(cursor, [dict(row) for row in rows], now)
            claim = cursor.claims + 1
            session.execute(
                update(_CURSORS)
                .where(_CURSORS.c.feed == AUDIT_FEED.value)
                .values(
                    claims=claim,
                    next_attempt_at=now + self._lease,
                    gap_position=gap[0] if gap else None,
                    gap_seen_at=gap[1] if gap else None,
                )
            )
            return _Run(claim, cursor.attempts, cursor.position, entries, gap)

    def _cursor(self, session: Session, now: datetime) -> Any:
        found = session.execute(
            select(_CURSORS).where(_CURSORS.c.feed == AUDIT_FEED.value).with_for_update()
        ).first()
        if found is not None:
            return found
        session.execute(
            _CURSORS.insert().values(
                feed=AUDIT_FEED.value, position=0, claims=0, attempts=0, next_attempt_at=now
            )
        )
        return session.execute(select(_CURSORS).where(_CURSORS.c.feed == AUDIT_FEED.value)).one()

    def _contiguous(
        self, cursor: Any, rows: list[dict[str, Any]], now: datetime
    ) -> tuple[list[dict[str, Any]], tuple[int, datetime] | None]:
        """The entries that follow the cursor without a gap still worth waiting for, and the gap
        the run stops at (its position, first seen)."""
        expected = cursor.position + 1
        taken: list[dict[str, Any]] = []
        for row in rows:
            if row["position"] != expected:
                seen_at = _aware(cursor.gap_seen_at) if cursor.gap_position == expected else None
                if seen_at is None:
                    return taken, (expected, now)
                if now - seen_at < self._gap_timeout:
                    return taken, (expected, seen_at)
                log.warning("audit_feed_gap_passed", position=expected, until=row["position"])
            taken.append(row)
            expected = row["position"] + 1
        return taken, None

    def _release(self, run: _Run) -> None:
        """Nothing to send: the lease is given back at once."""
        with self._database.unit_of_work() as session:
            take_write_lock(session)
            session.execute(
                update(_CURSORS)
                .where(_CURSORS.c.feed == AUDIT_FEED.value, _CURSORS.c.claims == run.claim)
                .values(next_attempt_at=self._clock.now())
            )

    def _send(self, run: _Run) -> bool:
        assert self._sink is not None
        first, last = run.entries[0]["position"], run.entries[-1]["position"]
        event = PendingEvent(
            delivery_id=0,
            destination=AUDIT_FEED.value,
            position=last,
            event_id=uuid.uuid5(_NAMESPACE, f"{first}-{last}"),
            event_type=AUDIT_ENTRIES.name,
            source=EVENT_SOURCE,
            subject="audit-log",
            aggregate_type=AUDIT_ENTRIES.aggregate_type,
            aggregate_id="audit-log",
            occurred_at=self._clock.now(),
            data={
                "from_position": first,
                "to_position": last,
                "entries": [_document(row) for row in run.entries],
            },
            attempts=run.attempts,
        )
        sent = send_one(self._sink, event, self._clock)
        now = self._clock.now()
        with self._database.unit_of_work() as session:
            take_write_lock(session)
            mine = (_CURSORS.c.feed == AUDIT_FEED.value, _CURSORS.c.claims == run.claim)
            if sent.error is None:
                session.execute(
                    update(_CURSORS)
                    .where(*mine)
                    .values(
                        position=last,
                        attempts=0,
                        next_attempt_at=now,
                        delivered_at=now,
                        last_error=None,
                    )
                )
                return True
            retry_at = self._policy.next_attempt(attempts=run.attempts + 1, queued_at=now, now=now)
            session.execute(
                update(_CURSORS)
                .where(*mine)
                .values(
                    attempts=run.attempts + 1,
                    next_attempt_at=retry_at or now + self._policy.cap,
                    last_error=describe(sent.error),
                )
            )
        log.warning(
            "audit_feed_failed", from_position=first, to_position=last, error=describe(sent.error)
        )
        return False


def _document(row: dict[str, Any]) -> dict[str, Any]:
    """An entry as Audit & Compliance gets it: its hashed document, its position and hashes."""
    entry = AuditEntry(**{k: v for k, v in row.items() if k != "position"})
    return {
        "position": row["position"],
        **entry_document(entry),
        "prev_hash": row["prev_hash"],
        "entry_hash": row["entry_hash"],
    }


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
