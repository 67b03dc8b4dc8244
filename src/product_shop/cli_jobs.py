"""The `product-shop` commands for the background jobs (`jobs/schedule.py`): `worker` (run every
job on its interval until SIGTERM or SIGINT; `--once JOB` runs one now and exits), `jobs run
NAME` (the same as `worker --once NAME`) and `jobs list` (each job, its interval and its last
runs). Several workers may run at once: a given job runs in one of them at a time."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from product_shop.config import Settings
from product_shop.core.process import freeze_start_up
from product_shop.logging import configure_logging, get_logger

log = get_logger("product_shop.cli")


def add_commands(sub: Any) -> None:
    """`worker` and `jobs` (the subparsers action of the top-level parser)."""
    worker = sub.add_parser(
        "worker", help="Run the background jobs on their intervals (until SIGTERM or SIGINT)"
    )
    worker.add_argument(
        "--once",
        metavar="JOB",
        default=None,
        help="Run this job once now and exit: 0 when it ran or another worker was running "
        "it, 1 when it failed",
    )
    worker.set_defaults(handler=_worker)

    jobs = sub.add_parser("jobs", help="The background jobs: run one now, list them")
    jobs_sub = jobs.add_subparsers(required=True, metavar="ACTION")
    run = jobs_sub.add_parser("run", help="Run one job now (exit 0 when it ran, 1 when it failed)")
    run.add_argument("name", metavar="NAME")
    run.set_defaults(handler=_jobs_run)
    listing = jobs_sub.add_parser("list", help="Each job, its interval and its last runs (JSON)")
    listing.set_defaults(handler=_jobs_list)


def _worker(args: argparse.Namespace) -> int:
    if args.once is not None:
        return _run_once(args.once)
    from product_shop.context import AppContext
    from product_shop.jobs.schedule import JobScheduler, scheduled_jobs

    settings = _settings()
    context = AppContext.build(settings)
    try:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        freeze_start_up()
        scheduler = JobScheduler(context.jobs, scheduled_jobs(context))
        scheduler.start()
        log.info("worker_started", jobs=scheduler.job_names)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            scheduler.stop()  # lets the runs under way finish
            log.info("worker_stopped")
        return 0
    finally:
        context.close()


def _jobs_run(args: argparse.Namespace) -> int:
    return _run_once(args.name)


def _run_once(name: str) -> int:
    from product_shop.context import AppContext
    from product_shop.jobs.schedule import run_job, scheduled_jobs

    settings = _settings()
    context = AppContext.build(settings)
    try:
        try:
            result = run_job(context, name)
        except KeyError:
            known = ", ".join(job.name for job in scheduled_jobs(context))
            print(f"product-shop: no job {name!r}; jobs: {known}", file=sys.stderr)
            return 2
        print(json.dumps({"job": result.job, "outcome": result.outcome, "items": result.items}))
        return 1 if result.outcome == "failed" else 0
    finally:
        context.close()


def _jobs_list(args: argparse.Namespace) -> int:
    from product_shop.context import AppContext
    from product_shop.jobs.runner import job_runs
    from product_shop.jobs.schedule import scheduled_jobs

    settings = _settings()
    context = AppContext.build(settings)
    try:
        runs = {row["job"]: row for row in job_runs(context.database)}
        listing = [
            {
                "job": job.name,
                "interval_seconds": job.interval_seconds,
                **{
                    field: _plain(runs.get(job.name, {}).get(field))
                    for field in (
                        "last_started_at",
                        "last_succeeded_at",
                        "last_failed_at",
                        "last_error",
                        "runs",
                        "failures",
                    )
                },
            }
            for job in scheduled_jobs(context)
        ]
        print(json.dumps(listing, indent=2))
        return 0
    finally:
        context.close()


def _settings() -> Settings:
    settings = Settings()
    settings.check()
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


def _plain(value: object) -> object:
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else value
