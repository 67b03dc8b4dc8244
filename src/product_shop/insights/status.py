"""The operations team's view of one deployment (`GET /v1/ops/status`, spec §16 Availability):
the database and its migrations, each integration's last success and failure, event delivery
per destination, and each background job's last runs. `/readyz` stays the cheap yes/no a load
balancer asks; this is the detail a person reads when something looks wrong. Nothing in it names
a patient, a practice or an order."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from product_shop.db.migrate import current_revision, head_revision
from product_shop.events.status import DeliveryStatus, delivery_status
from product_shop.insights.metrics import integration_status
from product_shop.jobs.tables import JobRun


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    reachable: bool
    latency_ms: float | None
    revision: str | None
    head: str | None

    @property
    def migrations(self) -> Literal["at_head", "behind", "unknown"]:
        if not self.reachable:
            return "unknown"
        return "at_head" if self.revision == self.head else "behind"


@dataclass(frozen=True, slots=True)
class IntegrationStatus:
    integration: str
    last_success_at: datetime | None
    last_failure_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobStatus:
    job: str
    last_started_at: datetime | None
    last_succeeded_at: datetime | None
    last_failed_at: datetime | None
    last_error: str | None
    runs: int
    failures: int


@dataclass(frozen=True, slots=True)
class OpsStatus:
    checked_at: datetime
    database: DatabaseStatus
    integrations: list[IntegrationStatus]
    events: DeliveryStatus | None
    jobs: list[JobStatus]

    @property
    def healthy(self) -> bool:
        """Reachable, at head, nothing parked and no job whose last run failed."""
        return (
            self.database.migrations == "at_head"
            and (self.events is None or self.events.parked == 0)
            and not any(
                job.last_failed_at is not None
                and (job.last_succeeded_at is None or job.last_failed_at > job.last_succeeded_at)
                for job in self.jobs
            )
        )


def database_status(connection: Connection | None) -> DatabaseStatus:
    """The database as one round trip sees it (None: it could not be reached)."""
    head = head_revision()
    if connection is None:
        return DatabaseStatus(reachable=False, latency_ms=None, revision=None, head=head)
    started = time.perf_counter()
    connection.execute(text("SELECT 1"))
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DatabaseStatus(
        reachable=True, latency_ms=latency, revision=current_revision(connection), head=head
    )


def ops_status(
    session: Session | None, db: DatabaseStatus, now: datetime, sinks: Mapping[str, str]
) -> OpsStatus:
    """Everything the route shows. `session` reads the event backlog and the job runs; None
    (the database is away or behind) leaves them out rather than failing the whole answer."""
    events: DeliveryStatus | None = None
    jobs: list[JobStatus] = []
    if session is not None:
        events = delivery_status(session, now, sinks)
        jobs = [
            JobStatus(
                job=row.job,
                last_started_at=row.last_started_at,
                last_succeeded_at=row.last_succeeded_at,
                last_failed_at=row.last_failed_at,
                last_error=row.last_error,
                runs=row.runs,
                failures=row.failures,
            )
            for row in session.scalars(select(JobRun).order_by(JobRun.job))
        ]
    return OpsStatus(
        checked_at=now,
        database=db,
        integrations=[
            IntegrationStatus(name, _at(seen.get("last_success")), _at(seen.get("last_failure")))
            for name, seen in sorted(integration_status().items())
        ],
        events=events,
        jobs=jobs,
    )


def _at(timestamp: Any) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(float(timestamp), UTC)
