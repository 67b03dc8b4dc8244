"""Deleting what has outlived its purpose, in bounded batches, each batch a unit of work of its
own (so no long transaction holds locks, and a purge cut short keeps what it did):

- idempotency keys past their `expires_at` (24 h after the claim, `idempotency/store.py`; a
  claim of an expired key replaces it anyway, so a purged key changes no answer);
- inbound message ids (`events/inbox.py`) older than the dedupe window
  (`inbox_retention_seconds`): longer than any sender goes on retrying one message. The
  once-per-intent record of an orphaned capture (`checkout/payment_exceptions.py`,
  `ORPHAN_SOURCE`) shares the table but is not a message id: it is kept.

Rows are picked oldest first and, on PostgreSQL, skipping rows another transaction holds (a key
being claimed right now).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select, tuple_

from product_shop.checkout.payment_exceptions import ORPHAN_SOURCE
from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.events.inbox import InboxMessage
from product_shop.idempotency.tables import IdempotencyKey
from product_shop.logging import get_logger

log = get_logger(__name__)

BATCH_SIZE = 1000
MAX_BATCHES = 100  # at most this many batches a run; the rest waits for the next


class Purges:
    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        inbox_retention: timedelta,
        batch_size: int = BATCH_SIZE,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        self._database = database
        self._clock = clock
        self._inbox_retention = inbox_retention
        self._batch_size = batch_size
        self._max_batches = max_batches

    def idempotency_keys(self) -> int:
        """Delete keys past their `expires_at`; how many."""
        now = self._clock.now()
        return self._in_batches(
            IdempotencyKey,
            (IdempotencyKey.scope, IdempotencyKey.key),
            IdempotencyKey.expires_at,
            IdempotencyKey.expires_at <= now,
        )

    def inbox_messages(self) -> int:
        """Delete message ids received before the dedupe window; how many."""
        cutoff: datetime = self._clock.now() - self._inbox_retention
        return self._in_batches(
            InboxMessage,
            (InboxMessage.source, InboxMessage.message_id),
            InboxMessage.received_at,
            InboxMessage.received_at < cutoff,
            InboxMessage.source != ORPHAN_SOURCE,
        )

    def _in_batches(
        self,
        entity: type[IdempotencyKey] | type[InboxMessage],
        key: tuple[Any, Any],
        age: Any,
        *where: ColumnElement[bool],
    ) -> int:
        pick = (
            select(*key)
            .where(*where)
            .order_by(age)
            .limit(self._batch_size)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders no lock clause
        )
        statement = delete(entity).where(tuple_(*key).in_(pick))
        deleted = 0
        for _ in range(self._max_batches):
            with self._database.statements() as connection:
                count = connection.execute(
                    statement.execution_options(synchronize_session=False)
                ).rowcount
            deleted += count
            if count < self._batch_size:
                break
        if deleted:
            log.info("purged", table=entity.__tablename__, rows=deleted)
        return deleted
