"""Retention (spec §16 Privacy, §17; `orders/retention.py` says what is erased and what stays):
the orders placed longer ago than `retention_days` are found oldest first in bounded batches,
and each batch is its own unit of work (`Database.run`: tried again after a deadlock), in which
every order is erased completely and audited, or the batch keeps nothing. A dry run reads the
same batches and reports what would change, changing nothing. A run cut short keeps the batches
it committed; the next run carries on (erased orders are marked, so none is done twice).

Run by `product-shop retention [--dry-run] [--json]` (`cli_retention.py`) and, once scheduled,
by the background worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from product_shop.audit.log import AuditLog
from product_shop.config import Settings
from product_shop.core.clock import Clock, SystemClock
from product_shop.db.engine import Database
from product_shop.logging import get_logger
from product_shop.orders.retention import DueOrder, Erasure, OrderRetention

log = get_logger(__name__)

BATCH_SIZE = 100
MAX_BATCHES = 100  # at most this many batches a run; the rest waits for the next


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What a run erased, or a dry run would: per order, the fields and how many rows or
    documents held personal data in each (names and counts, never values)."""

    dry_run: bool
    retention_days: int
    cutoff: datetime
    orders: list[Erasure] = field(default_factory=list)
    # The run stopped at its limit of batches (`MAX_BATCHES`) with more perhaps due: the next
    # run carries on.
    more_due: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "retention_days": self.retention_days,
            "cutoff": self.cutoff.isoformat(),
            "orders": [erasure.as_dict() for erasure in self.orders],
            "more_due": self.more_due,
        }


class RetentionJob:
    def __init__(
        self,
        *,
        database: Database,
        retention: OrderRetention,
        clock: Clock,
        batch_size: int = BATCH_SIZE,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        self._database = database
        self._retention = retention
        self._clock = clock
        self._batch_size = batch_size
        self._max_batches = max_batches

    @classmethod
    def from_settings(
        cls, settings: Settings, database: Database, clock: Clock | None = None
    ) -> RetentionJob:
        clock = clock or SystemClock()
        return cls(
            database=database,
            retention=OrderRetention(
                audit=AuditLog(clock), clock=clock, period=timedelta(days=settings.retention_days)
            ),
            clock=clock,
        )

    def run_once(self, *, dry_run: bool = False) -> RetentionReport:
        """Erase (or, dry, report) the personal data of every order past the retention period,
        at most `max_batches` batches of `batch_size` orders."""
        cutoff = self._retention.cutoff(self._clock.now())
        report = RetentionReport(
            dry_run=dry_run, retention_days=self._retention.period.days, cutoff=cutoff
        )
        after: DueOrder | None = None
        for batch_no in range(self._max_batches):
            with self._database.reading() as session:
                due = self._retention.due(session, cutoff, limit=self._batch_size, after=after)
            if not due:
                return report
            if dry_run:
                with self._database.reading() as session:
                    done = self._plan(session, due, cutoff)
            else:

                def work(session: Session, due: list[DueOrder] = due) -> list[Erasure]:
                    return self._erase(session, due, cutoff)

                done = self._database.run(work)
                for erasure in done:
                    log.info(
                        "order_personal_data_erased",
                        order_id=str(erasure.order_id),
                        fields=sorted(erasure.fields),
                    )
            report.orders.extend(done)
            after = due[-1]
            if len(due) < self._batch_size:
                return report
            if batch_no == self._max_batches - 1:
                return _more_due(report)
        return report

    def _plan(self, session: Session, due: list[DueOrder], cutoff: datetime) -> list[Erasure]:
        return [
            planned
            for order in due
            if (planned := self._retention.plan(session, order.order_id, cutoff)) is not None
        ]

    def _erase(self, session: Session, due: list[DueOrder], cutoff: datetime) -> list[Erasure]:
        return [
            erased
            for order in due
            if (erased := self._retention.erase(session, order.order_id, cutoff)) is not None
        ]


@contextmanager
def configured(settings: Settings) -> Iterator[RetentionJob]:
    """The job on the configured database (`product-shop retention`), disposed afterwards."""
    database = Database(settings.database_url)
    try:
        yield RetentionJob.from_settings(settings, database)
    finally:
        database.dispose()


def _more_due(report: RetentionReport) -> RetentionReport:
    return RetentionReport(
        dry_run=report.dry_run,
        retention_days=report.retention_days,
        cutoff=report.cutoff,
        orders=report.orders,
        more_due=True,
    )
