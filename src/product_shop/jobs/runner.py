"""Running a background job by name: one worker at a time, logged, measured and recorded.

`JobRunner.run(name, work)` runs `work` (a job's `run_once`) so that a given job runs in one
place at a time however many workers (`product-shop worker`, API processes with
`jobs_in_process`) are up:

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`, keyed by the job's name
  and the current schema) taken on a connection of its own, held for the whole run and released
  after it. A job may span several units of work (read, call another module with nothing open,
  record), so the transaction-level lock `db.session.try_schema_lock` would not cover it. The
  lock is only tried: a worker that finds it held skips the run (outcome `skipped`) rather than
  queueing behind it. If the worker dies, its connection closes and the server drops the lock.
- SQLite, the embedded default, is one process (the API serving the demo, with the jobs in its
  background): a process-local lock per database and job is enough there. It does not keep
  apart two processes on one SQLite file; that is not a supported deployment.

Each run that took the lock is recorded in `job_runs` (`jobs/tables.py`): started, then
succeeded or failed, each in a short transaction of its own, never held open across the job's
work. A failure is recorded by its kind only (the exception's class and code, where it ran), and
logged the same way: exception messages may carry SQL parameters or other modules' answers,
which may hold personal data. Metrics (`insights/metrics.py`): `JOB_RUNS` by outcome (ok,
failed, skipped), `JOB_SECONDS`, `JOB_LAST_SUCCESS` and `JOB_ITEMS` (what the run returned when
it is a count).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from sqlalchemy import Table, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from product_shop.core.clock import Clock
from product_shop.db.engine import Database
from product_shop.insights.metrics import JOB_ITEMS, JOB_LAST_SUCCESS, JOB_RUNS, JOB_SECONDS
from product_shop.jobs.tables import LAST_ERROR_LENGTH, JobRun
from product_shop.logging import get_logger

log = get_logger("product_shop.jobs")

Outcome = Literal["ok", "failed", "skipped"]
_RUNS = cast(Table, JobRun.__table__)
_LOCK_PREFIX = "product_shop.job:"

# SQLite: one lock per (database, job) in this process, shared by every runner in it.
_LOCAL_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


@dataclass(frozen=True, slots=True)
class JobResult:
    job: str
    outcome: Outcome
    items: int = 0
    error: str | None = None  # the failure's kind, when it failed


class JobRunner:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._clock = clock

    def run(self, name: str, work: Callable[[], object]) -> JobResult:
        """Run `work` as job `name` unless another worker is running it; never raises for the
        job's own failure (it is logged, counted and recorded)."""
        started = time.perf_counter()
        try:
            with self._exclusive(name) as mine:
                if not mine:
                    JOB_RUNS.labels(job=name, outcome="skipped").inc()
                    log.info("job_skipped", job=name, reason="running_elsewhere")
                    return JobResult(name, "skipped")
                log.info("job_started", job=name)
                self._started(name)
                items = _count(work())
                self._succeeded(name)
        except Exception as exc:
            return self._failed(name, exc, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        JOB_RUNS.labels(job=name, outcome="ok").inc()
        JOB_SECONDS.labels(job=name).observe(seconds)
        JOB_LAST_SUCCESS.labels(job=name).set(self._clock.now().timestamp())
        if items:
            JOB_ITEMS.labels(job=name).inc(items)
        log.info("job_finished", job=name, items=items, seconds=round(seconds, 3))
        return JobResult(name, "ok", items)

    # ---- one at a time -----------------------------------------------------------------------

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[bool]:
        if self._database.dialect == "postgresql":
            with self._advisory_lock(name) as taken:
                yield taken
            return
        lock = _local_lock(self._database.url, name)
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    @contextmanager
    def _advisory_lock(self, name: str) -> Iterator[bool]:
        """The job's session-level advisory lock on a connection of its own (autocommit: no
        transaction stays open while the job runs), released when the run ends."""
        engine = self._database.engine.execution_options(isolation_level="AUTOCOMMIT")
        key = {"name": _LOCK_PREFIX + name}
        with engine.connect() as connection:
            taken = bool(
                connection.execute(
                    text(
                        "SELECT pg_try_advisory_lock(hashtext(:name), hashtext(current_schema()))"
                    ),
                    key,
                ).scalar_one()
            )
            if not taken:
                yield False
                return
            try:
                yield True
            finally:
                try:
                    connection.execute(
                        text(
                            "SELECT pg_advisory_unlock(hashtext(:name), hashtext(current_schema()))"
                        ),
                        key,
                    )
                except Exception:
                    # Never give a connection holding the lock back to the pool: closing its
                    # server session releases it.
                    connection.invalidate()

    # ---- the record ----------------------------------------------------------------------------

    def _started(self, name: str) -> None:
        now = self._clock.now()
        with self._database.statements() as connection:
            insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
            statement = insert(_RUNS).values(job=name, last_started_at=now, runs=1, failures=0)
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[_RUNS.c.job],
                    set_={"last_started_at": now, "runs": _RUNS.c.runs + 1},
                )
            )

    def _succeeded(self, name: str) -> None:
        with self._database.statements() as connection:
            connection.execute(
                update(_RUNS).where(_RUNS.c.job == name).values(last_succeeded_at=self._clock.now())
            )

    def _failed(self, name: str, exc: Exception, seconds: float) -> JobResult:
        error = describe(exc)
        JOB_RUNS.labels(job=name, outcome="failed").inc()
        JOB_SECONDS.labels(job=name).observe(seconds)
        log.warning("job_failed", job=name, error=error, where=_where(exc))
        now = self._clock.now()
        try:
            with self._database.statements() as connection:
                insert = (
                    postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
                )
                statement = insert(_RUNS).values(
                    job=name, last_failed_at=now, last_error=error, runs=1, failures=1
                )
                connection.execute(
                    statement.on_conflict_do_update(
                        index_elements=[_RUNS.c.job],
                        set_={
                            "last_failed_at": now,
                            "last_error": error,
                            "failures": _RUNS.c.failures + 1,
                        },
                    )
                )
        except Exception as record_error:  # the database itself is away: the log has it
            log.warning("job_failure_not_recorded", job=name, error=describe(record_error))
        return JobResult(name, "failed", error=error)


def job_runs(database: Database) -> list[dict[str, object]]:
    """Every job's row in `job_runs`, by name (for `product-shop jobs list` and status pages)."""
    with database.statements() as connection:
        rows = connection.execute(select(_RUNS).order_by(_RUNS.c.job)).mappings()
        return [dict(row) for row in rows]


def describe(exc: BaseException) -> str:
    """A failure's kind, safe to store and log: the exception's class, its code when it has one
    of ours or another module's (a short token), the database's SQLSTATE; never its message."""
    parts = [type(exc).__name__]
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code and len(code) <= 64 and code.replace("_", "").isalnum():
        parts.append(code)
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str):
        parts.append(f"sqlstate={sqlstate}")
    return " ".join(parts)[:LAST_ERROR_LENGTH]


def _where(exc: BaseException) -> str | None:
    """The innermost frame of our own code the failure went through (file:line)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [frame for frame in frames if "product_shop" in Path(frame.filename).parts]
    if not frames:
        return None
    frame = (ours or frames)[-1]
    parts = Path(frame.filename).parts
    relative = parts[parts.index("product_shop") + 1 :] if "product_shop" in parts else parts[-1:]
    return f"{'/'.join(relative)}:{frame.lineno}"


def _count(result: object) -> int:
    """What a run changed, when its result is a count (run_once answers with one)."""
    if isinstance(result, bool) or not isinstance(result, int):
        return 0
    return max(result, 0)


def _local_lock(url: str, name: str) -> threading.Lock:
    with _LOCAL_GUARD:
        return _LOCAL_LOCKS.setdefault((url, name), threading.Lock())
