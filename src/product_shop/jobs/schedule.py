"""Which background jobs run, how often, and the scheduler that runs them.

`scheduled_jobs` is the one list of jobs (name, work, interval from settings). `JobScheduler`
runs each on its interval in a thread pool (APScheduler's `BackgroundScheduler`), always through
`JobRunner.run`, so a job runs in one worker at a time across processes, and is logged, measured
and recorded in `job_runs`. Per job: `max_instances=1` (a run still going when the next is due
is not started twice in this process) and `coalesce` (runs missed while the process was busy or
asleep become one). Used by `product-shop worker` and, in the embedded default, by the API
process's lifespan (`web/app.py`); `product-shop jobs run NAME` runs one job once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING

# APScheduler 3 ships no type information.
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.background import (  # type: ignore[import-untyped]
    BackgroundScheduler,
)
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from product_shop.jobs.runner import JobResult, JobRunner

if TYPE_CHECKING:
    from product_shop.context import AppContext


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    name: str
    work: Callable[[], object]
    interval_seconds: float
    enabled: bool = True


def scheduled_jobs(context: AppContext) -> list[ScheduledJob]:
    """Every background job, with its interval. A job that is switched off by its settings
    (the audit feed with no sink) is left out."""
    settings = context.settings
    jobs = [
        ScheduledJob(
            "refund_settlement",
            context.refund_settlement.run_once,
            max(1.0, settings.refund_reconcile_after_seconds),
        ),
        ScheduledJob(
            "checkout_expiry",
            context.checkout_expiry.run_once,
            settings.checkout_expiry_interval_seconds,
        ),
        ScheduledJob(
            "capture_reconciliation",
            context.capture_reconciliation.run_once,
            settings.capture_reconciliation_interval_seconds,
        ),
        ScheduledJob(
            "audit_checkpoint",
            lambda: int(context.audit_checkpoint.run_once() is not None),
            settings.audit_checkpoint_interval_seconds,
        ),
        ScheduledJob(
            "audit_feed",
            context.audit_feed.run_once,
            settings.relay_interval_seconds,
            enabled=context.audit_feed.enabled,
        ),
        ScheduledJob(
            "idempotency_purge",
            context.purges.idempotency_keys,
            settings.idempotency_purge_interval_seconds,
        ),
        ScheduledJob(
            "inbox_purge",
            context.purges.inbox_messages,
            settings.inbox_purge_interval_seconds,
        ),
        ScheduledJob(
            "retention",
            lambda: len(context.retention.run_once().orders),
            settings.retention_interval_seconds,
        ),
    ]
    return [job for job in jobs if job.enabled]


def jobs_in_process(context: AppContext) -> bool:
    """Whether the API process runs the jobs: `jobs_in_process`, or when unset, as it runs the
    relay (`relay_in_process`: on in the embedded default)."""
    settings = context.settings
    if settings.jobs_in_process is None:
        return settings.relay_in_process
    return settings.jobs_in_process


def run_job(context: AppContext, name: str) -> JobResult:
    """Run the job called `name` once now, through the runner (KeyError: no such job)."""
    jobs = {job.name: job for job in scheduled_jobs(context)}
    return context.jobs.run(name, jobs[name].work)


class JobScheduler:
    def __init__(self, runner: JobRunner, jobs: list[ScheduledJob]) -> None:
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(1, len(jobs)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        for job in jobs:
            self._scheduler.add_job(
                runner.run,
                IntervalTrigger(seconds=job.interval_seconds, timezone=UTC),
                args=(job.name, job.work),
                id=job.name,
                name=job.name,
                coalesce=True,
                max_instances=1,
            )
        # Its own lines ("Running job ...") on every run add nothing to the runner's.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)

    @property
    def job_names(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]

    def start(self) -> None:
        self._scheduler.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop scheduling; with `wait`, let the runs under way finish."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
