"""The background jobs (spec §5.2, §16): expiry, capture reconciliation and the purges on a
driven clock, run through the job runner (one worker at a time, recorded in `job_runs`, counted
in the `job_runs` metric), the scheduler and `product-shop worker`.

The clock starts in the past and is driven forward to the present: webhooks are signed with the
real time (the signature library checks it too), so what is "late" is arranged by creating
things earlier on the driven clock."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.checkout.payment_exceptions import ORPHAN_SOURCE
from product_shop.cli import main
from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.core.clock import FrozenClock
from product_shop.db.engine import Database
from product_shop.events.inbox import InboxMessage
from product_shop.idempotency.tables import IdempotencyKey
from product_shop.jobs.purge import Purges
from product_shop.jobs.runner import JobRunner
from product_shop.jobs.schedule import JobScheduler, ScheduledJob, run_job, scheduled_jobs
from product_shop.jobs.tables import JobRun
from product_shop.orders.tables import Order
from product_shop.refunds.tables import PaymentException
from product_shop.web.app import create_app
from tests.conftest import World
from tests.integration.checkout_support import (
    DECLINED,
    Shop,
    pay,
    payments_webhook,
    simulator_intent,
    start_checkout,
)
from tests.integration.conftest import count_rows

JOB_NAMES = {
    "refund_settlement",
    "checkout_expiry",
    "capture_reconciliation",
    "audit_checkpoint",
    "idempotency_purge",
    "inbox_purge",
}


@pytest.fixture
def clock() -> FrozenClock:
    """A day and a quarter of an hour ago; `_to_now` drives it to the present."""
    return FrozenClock(datetime.now(UTC) - timedelta(days=1, minutes=15))


def _to_now(clock: FrozenClock) -> None:
    clock.advance(datetime.now(UTC) - clock.now())


@pytest.fixture
def driven(settings: Settings, database: Database, clock: FrozenClock) -> Iterator[AppContext]:
    context = AppContext.build(settings, database=database, clock=clock)
    yield context
    context.close()


@pytest.fixture
def api(driven: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(context=driven), raise_server_exceptions=False) as client:
        yield client


def _runs_counted(job: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "product_shop_job_runs_total", {"job": job, "outcome": outcome}
    )
    return value or 0.0


def _job_run(database: Database, job: str) -> JobRun | None:
    with Session(database.engine) as session:
        return session.get(JobRun, job)


def _status(api: TestClient, world: World, checkout: dict[str, Any]) -> str:
    read = api.get(f"/v1/checkouts/{checkout['id']}", headers=world.patient_a.headers)
    status: str = read.json()["status"]
    return status


def _checkout_id(checkout: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(checkout["id"])


# ---- expiry ------------------------------------------------------------------------------


def test_a_stale_checkout_expires_its_page_is_closed_and_a_capture_after_it_is_one_exception(
    api: TestClient,
    driven: AppContext,
    clock: FrozenClock,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    # given a checkout left unpaid from a day ago (its lifetime is a day)
    checkout = start_checkout(api, world.patient_a, [(shop.toothbrush, 1)]).json()
    intent_id = checkout["payment"]["intent_id"]
    clock.advance(timedelta(minutes=driven.settings.checkout_ttl_minutes, seconds=-1))
    assert run_job(driven, "checkout_expiry").items == 0  # a second to go: untouched

    # when its time passes and the expiry job runs
    _to_now(clock)
    result = run_job(driven, "checkout_expiry")

    # then it expired, its page was closed at Integrated Payments, and the run was recorded
    assert (result.outcome, result.items) == ("ok", 1)
    assert _status(api, world, checkout) == "expired"
    assert simulator_intent(payments_url, intent_id)["status"] == "cancelled"
    recorded = _job_run(database, "checkout_expiry")
    assert recorded is not None
    assert (recorded.runs, recorded.failures) == (2, 0)

    # when the gateway takes the money anyway (authorised as the cancellation arrived), its
    # callback comes twice, the app asks, and reconciliation runs
    captured = httpx.post(f"{payments_url}/_simulator/intents/{intent_id}/capture").json()
    first = payments_webhook(api, captured, event_id="evt_late_capture")
    again = payments_webhook(api, captured, event_id="evt_late_capture_retry")
    asked = api.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    run_job(driven, "capture_reconciliation")

    # then no order, and exactly one payment exception for a staff refund: never lost
    assert first.json() == {"status": "checkout_expired"}
    assert again.json() == {"status": "checkout_expired"}
    assert (asked.status_code, asked.json()["code"]) == (409, "checkout_expired")
    assert count_rows(database, Order, Order.checkout_id == _checkout_id(checkout)) == 0
    with Session(database.engine) as session:
        exceptions = session.scalars(
            select(PaymentException).where(PaymentException.checkout_id == _checkout_id(checkout))
        ).all()
    assert [(e.reason, e.intent_id) for e in exceptions] == [("checkout_expired", intent_id)]
    assert _status(api, world, checkout) == "expired"


def test_a_page_paid_as_its_checkout_expires_is_completed_by_reconciliation_not_expired(
    api: TestClient,
    driven: AppContext,
    clock: FrozenClock,
    world: World,
    shop: Shop,
    database: Database,
) -> None:
    # given a checkout paid at the last moment, with no callback and no app call
    checkout = start_checkout(api, world.patient_a, [(shop.voucher, 1)]).json()
    assert pay(checkout).status_code == 200
    _to_now(clock)

    # when the expiry runs first, then reconciliation
    expired = run_job(driven, "checkout_expiry")
    reconciled = run_job(driven, "capture_reconciliation")

    # then the paid page kept it from expiring, and reconciliation made its one order
    assert expired.items == 0
    assert reconciled.items == 1
    assert _status(api, world, checkout) == "completed"
    assert count_rows(database, Order, Order.checkout_id == _checkout_id(checkout)) == 1


# ---- capture reconciliation ------------------------------------------------------------------


def test_a_capture_with_no_callback_and_no_app_call_is_completed_by_reconciliation(
    api: TestClient,
    driven: AppContext,
    clock: FrozenClock,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    # given a checkout paid on the hosted page whose callback and app call never come
    after = driven.settings.capture_reconciliation_after_seconds
    clock.advance(datetime.now(UTC) - timedelta(seconds=after + 60) - clock.now())
    checkout = start_checkout(api, world.patient_a, [(shop.toothbrush, 1)]).json()
    assert pay(checkout).status_code == 200

    # when reconciliation runs before the checkout is old enough, nothing is asked
    assert run_job(driven, "capture_reconciliation").items == 0
    assert _status(api, world, checkout) == "awaiting_payment"

    # when it is older than capture_reconciliation_after_seconds
    _to_now(clock)
    before = _runs_counted("capture_reconciliation", "ok")
    result = run_job(driven, "capture_reconciliation")

    # then one order, completed through the usual completion with its audit entries
    assert (result.outcome, result.items) == ("ok", 1)
    assert _runs_counted("capture_reconciliation", "ok") == before + 1
    assert _status(api, world, checkout) == "completed"
    order_ids = _orders_of(database, checkout)
    assert len(order_ids) == 1
    with Session(database.engine) as session:
        completed = session.scalars(
            select(AuditEntry).where(
                AuditEntry.stream_id == checkout["id"],
                AuditEntry.action == "checkout.completed",
            )
        ).all()
        captured = session.scalars(
            select(AuditEntry).where(
                AuditEntry.stream_id == str(order_ids[0]), AuditEntry.action == "payment.captured"
            )
        ).all()
    assert [entry.actor_id for entry in completed] == ["product-shop"]
    assert len(captured) == 1

    # and running it again, or the late callback and app call, make no second order
    assert run_job(driven, "capture_reconciliation").items == 0
    intent = simulator_intent(payments_url, checkout["payment"]["intent_id"])
    assert payments_webhook(api, intent).json() == {"status": "order_created"}
    asked = api.post(f"/v1/checkouts/{checkout['id']}/complete", headers=world.patient_a.headers)
    assert asked.status_code == 200
    assert _orders_of(database, checkout) == order_ids


def test_a_declined_or_abandoned_payment_found_by_reconciliation_leaves_no_order(
    api: TestClient,
    driven: AppContext,
    clock: FrozenClock,
    world: World,
    shop: Shop,
    database: Database,
) -> None:
    # given a declined payment and a page left open, neither with a callback or an app call
    declined = start_checkout(api, world.patient_a, [(shop.toothbrush, 1)]).json()
    assert pay(declined, DECLINED).status_code == 402
    abandoned = start_checkout(api, world.patient_a, [(shop.toothbrush, 1)]).json()
    clock.advance(timedelta(hours=1))

    # when reconciliation runs (twice: it is idempotent)
    first = run_job(driven, "capture_reconciliation")
    second = run_job(driven, "capture_reconciliation")

    # then the declined checkout failed as a failed-payment callback fails it, the open one
    # waits (for its payer or its expiry), and there is no order
    assert (first.items, second.items) == (1, 0)
    assert _status(api, world, declined) == "failed"
    assert _status(api, world, abandoned) == "awaiting_payment"
    assert count_rows(database, Order) == 0
    with Session(database.engine) as session:
        failures = session.scalars(
            select(AuditEntry.action).where(
                AuditEntry.stream_id == declined["id"],
                AuditEntry.action == "checkout.payment_failed",
            )
        ).all()
    assert len(failures) == 1


def test_reconciliation_leaves_a_checkout_for_the_next_run_while_payments_is_down(
    api: TestClient,
    driven: AppContext,
    clock: FrozenClock,
    world: World,
    shop: Shop,
    database: Database,
    payments_url: str,
) -> None:
    checkout = start_checkout(api, world.patient_a, [(shop.voucher, 1)]).json()
    assert pay(checkout).status_code == 200
    clock.advance(timedelta(hours=1))
    httpx.post(
        f"{payments_url}/_simulator/faults",
        json={"operation": "get_payment", "mode": "error", "status": 503, "times": 10},
    ).raise_for_status()

    assert run_job(driven, "capture_reconciliation").outcome == "ok"
    assert _status(api, world, checkout) == "awaiting_payment"

    httpx.post(f"{payments_url}/_simulator/reset").raise_for_status()
    assert run_job(driven, "capture_reconciliation").items == 1
    assert len(_orders_of(database, checkout)) == 1


def _orders_of(database: Database, checkout: dict[str, Any]) -> list[uuid.UUID]:
    with Session(database.engine) as session:
        return list(
            session.scalars(
                select(Order.order_id).where(Order.checkout_id == _checkout_id(checkout))
            )
        )


# ---- one worker at a time ------------------------------------------------------------------


def test_two_workers_at_once_run_each_job_once(driven: AppContext, database: Database) -> None:
    """Two runners with databases (pools, connections) of their own, in two threads: while one
    runs a job, the other skips it; once it is done, the next run goes ahead. On PostgreSQL it
    is the session-level advisory lock that keeps them apart."""
    mine, other = Database(database.url), Database(database.url)
    try:
        first, second = JobRunner(mine, driven.clock), JobRunner(other, driven.clock)
        jobs = {job.name: job for job in scheduled_jobs(driven)}
        assert set(jobs) >= JOB_NAMES
        for name, job in jobs.items():
            _one_at_a_time(first, second, name, job.work)
            recorded = _job_run(database, name)
            assert recorded is not None
            assert recorded.runs == 2  # the skip is not a run
    finally:
        mine.dispose()
        other.dispose()


def _one_at_a_time(
    first: JobRunner, second: JobRunner, name: str, work: Callable[[], object]
) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold() -> int:
        started.set()
        assert release.wait(10)
        return 0

    holder = threading.Thread(target=lambda: ran.append(first.run(name, hold).outcome))
    skipped_before = _runs_counted(name, "skipped")
    holder.start()
    try:
        assert started.wait(10)
        assert second.run(name, work).outcome == "skipped"
        assert _runs_counted(name, "skipped") == skipped_before + 1
    finally:
        release.set()
        holder.join(10)
    assert ran == ["ok"]
    assert second.run(name, work).outcome == "ok"  # the lock was given back


def test_a_failing_job_is_recorded_by_its_kind_and_counted(
    driven: AppContext, database: Database
) -> None:
    before = _runs_counted("exploding", "failed")

    def explode() -> int:
        raise ValueError("Penny Patient, 1 Harbour Road")  # personal data in a message

    result = driven.jobs.run("exploding", explode)

    assert result.outcome == "failed"
    assert _runs_counted("exploding", "failed") == before + 1
    recorded = _job_run(database, "exploding")
    assert recorded is not None
    assert (recorded.runs, recorded.failures, recorded.last_error) == (1, 1, "ValueError")
    assert recorded.last_failed_at == driven.clock.now()
    assert recorded.last_succeeded_at is None
    # and the next run is not held up by it
    assert driven.jobs.run("exploding", lambda: 3).outcome == "ok"


def test_the_scheduler_runs_its_jobs_through_the_runner(
    driven: AppContext, database: Database
) -> None:
    ticked = threading.Event()

    def tick() -> int:
        ticked.set()
        return 2

    scheduler = JobScheduler(driven.jobs, [ScheduledJob("tick", tick, 0.05)])
    scheduler.start()
    try:
        assert ticked.wait(10)
    finally:
        scheduler.stop()
    recorded = _job_run(database, "tick")
    assert recorded is not None
    assert recorded.runs >= 1
    assert recorded.last_succeeded_at == driven.clock.now()
    assert (REGISTRY.get_sample_value("product_shop_job_items_total", {"job": "tick"}) or 0) >= 2


# ---- purges --------------------------------------------------------------------------------


def test_the_purges_delete_what_is_past_its_window_in_batches_and_keep_the_rest(
    driven: AppContext, clock: FrozenClock, database: Database
) -> None:
    _to_now(clock)
    now = clock.now()
    retention = timedelta(seconds=driven.settings.inbox_retention_seconds)
    with database.unit_of_work() as session:
        for number in range(5):
            session.add(_key(f"old-{number}", now - timedelta(hours=25), now - timedelta(hours=1)))
        session.add(_key("current", now - timedelta(hours=1), now + timedelta(hours=23)))
        for number in range(3):
            session.add(_message("integrated_payments", f"evt_old_{number}", now - retention * 2))
        session.add(_message("supplier_network", "old_supplier", now - retention - timedelta(1)))
        session.add(_message("integrated_payments", "evt_recent", now - retention / 2))
        # the once-per-intent record of an orphaned capture is not a message id: kept
        session.add(_message(ORPHAN_SOURCE, "pi_orphaned", now - retention * 2))
    purges = Purges(database=database, clock=clock, inbox_retention=retention, batch_size=2)

    assert purges.idempotency_keys() == 5
    assert purges.inbox_messages() == 4
    assert (purges.idempotency_keys(), purges.inbox_messages()) == (0, 0)  # idempotent

    with Session(database.engine) as session:
        assert session.scalars(select(IdempotencyKey.key)).all() == ["current"]
        assert sorted(session.scalars(select(InboxMessage.message_id)).all()) == [
            "evt_recent",
            "pi_orphaned",
        ]
    # and as scheduled jobs, through the runner
    assert run_job(driven, "idempotency_purge").outcome == "ok"
    assert run_job(driven, "inbox_purge").outcome == "ok"


def _key(key: str, created: datetime, expires: datetime) -> IdempotencyKey:
    return IdempotencyKey(
        scope="patient:x",
        key=key,
        operation="POST /v1/checkouts",
        fingerprint="f" * 64,
        status="completed",
        claim_token="",
        response_status=201,
        response_body={},
        created_at=created,
        expires_at=expires,
    )


def _message(source: str, message_id: str, received: datetime) -> InboxMessage:
    return InboxMessage(
        source=source, message_id=message_id, message_type="payment", received_at=received
    )


# ---- the command -------------------------------------------------------------------------------


@pytest.fixture
def configured(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_pair: Any
) -> Path:
    """A migrated SQLite file as the configured database, and no other PRODUCT_SHOP_* setting."""
    for name in list(os.environ):
        if name.startswith("PRODUCT_SHOP_"):
            monkeypatch.delenv(name)
    path = tmp_path / "worker.sqlite3"
    path.write_bytes(sqlite_template.read_bytes())
    monkeypatch.setenv("PRODUCT_SHOP_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("PRODUCT_SHOP_JWT_PUBLIC_KEY", key_pair.public_pem)
    return path


def test_worker_once_runs_one_job_and_exits_zero_and_jobs_list_shows_its_run(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "--once", "idempotency_purge"]) == 0
    assert '"outcome": "ok"' in capsys.readouterr().out
    assert main(["jobs", "run", "checkout_expiry"]) == 0
    capsys.readouterr()

    assert main(["jobs", "list"]) == 0
    listing = {row["job"]: row for row in _json(capsys.readouterr().out)}
    assert set(listing) >= JOB_NAMES
    assert listing["idempotency_purge"]["runs"] == 1
    assert listing["idempotency_purge"]["last_succeeded_at"] is not None
    assert listing["inbox_purge"]["runs"] is None  # never ran

    assert main(["jobs", "run", "no_such_job"]) == 2


def _json(text: str) -> list[dict[str, Any]]:
    import json

    start = text.index("[")
    document: list[dict[str, Any]] = json.loads(text[start:])
    return document


def test_the_api_process_runs_the_jobs_on_its_scheduler_when_jobs_are_in_process(
    settings: Settings, database: Database
) -> None:
    # given the embedded default's choice (jobs in the API process), refunds settled every second
    in_process = settings.model_copy(
        update={"jobs_in_process": True, "refund_reconcile_after_seconds": 0.0}
    )
    context = AppContext.build(in_process, database=database)
    try:
        # when the API process runs for a while
        with TestClient(create_app(context=context)) as client:
            assert client.get("/healthz").status_code == 200
            deadline = datetime.now(UTC) + timedelta(seconds=10)
            while _job_run(database, "refund_settlement") is None:
                assert datetime.now(UTC) < deadline, "the scheduler never ran the job"
                threading.Event().wait(0.1)
    finally:
        context.close()

    # then its scheduler ran the job through the runner (and stopped with the app)
    recorded = _job_run(database, "refund_settlement")
    assert recorded is not None
    assert recorded.last_succeeded_at is not None
