"""The audit checkpoint job: one checkpoint per run (`audit/checkpoints.py`), in a unit of work
of its own, one checkpointer at a time (PostgreSQL: a tried transaction-level advisory lock, so
a second worker skips the run; SQLite: the write lock). A run when no stream moved since the
last checkpoint takes none."""

from __future__ import annotations

from product_shop.audit.checkpoints import Checkpoint, take_checkpoint
from product_shop.audit.log import AuditLog
from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.db.session import take_write_lock, try_schema_lock


class AuditCheckpointJob:
    def __init__(self, database: Database, audit: AuditLog, clock: Clock) -> None:
        self._database = database
        self._audit = audit
        self._clock = clock

    def run_once(self, *, force: bool = False) -> Checkpoint | None:
        """Take a checkpoint; None when another worker is taking one, or (unless `force`)
        nothing moved since the last."""
        with self._database.unit_of_work() as session:
            if self._database.dialect == "postgresql":
                if not try_schema_lock(session, "product_shop.audit_checkpoint"):
                    return None
            else:
                take_write_lock(session)
            return take_checkpoint(session, self._audit, self._clock, force=force)
