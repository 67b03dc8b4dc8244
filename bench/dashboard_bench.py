"""Dashboard benchmark (docs/dashboards.md): the practice overview over a year of a large shop.

Makes its own PostgreSQL database (`product_shop_dashboard_bench`, migrated to head, dropped at
the end), bulk-loads a year of 1,000,000 orders across 500 practices with server-side multi-row
INSERT ... SELECT from generate_series (checkouts and captures for every order, 25% more
checkouts that never became orders, one line per order with 2% in exception, refunds of ~5% of
orders with four reason codes, recommendations as many as 40% of the checkouts, one in six named by a checkout line),
ANALYZEs, then times `insights.dashboards.overview` (the API's own query code) for one practice
over the year, by month and by week: N runs each as the service role under the practice's
row-level security scope, as a request runs. Reports p50/p95/max; the target is p95 <= 200 ms.

    .venv/bin/python bench/dashboard_bench.py [--orders 1000000] [--practices 500] [--runs 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import date

from benchdb import fresh_database
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from product_shop.access.actor import Actor, Role
from product_shop.db import tenancy
from product_shop.db.engine import Database
from product_shop.db.roles import grant_service_role
from product_shop.insights.dashboards import Granularity, overview

NAME = "product_shop_dashboard_bench"
SERVICE_ROLE = "product_shop_dashboard_bench_service"
START, END = date(2025, 12, 1), date(2026, 11, 30)
REASONS = "ARRAY['customer_request','damaged_item','not_delivered','duplicate']"

# Deterministic ids from a tag and a number: md5(...)::uuid.
# Practices and patients by a hash of the number, so that no modulus used below (refunds every
# 20th order, exceptions every 50th...) falls on one practice only.
PRACTICE = "md5('practice' || (abs(hashtext('p' || {n})::bigint) % :practices))::uuid"
PATIENT = "md5('patient' || (abs(hashtext('q' || {n})::bigint) % 200000))::uuid"
# Row ids grow with the row number, as the app's UUIDv7 ids grow with time: the B-tree of a
# primary key is appended to, not written all over (a 1,000,000 row load in seconds, not
# minutes).
# A checkout's moment in the year: spread by a hash, not by insertion order.
MOMENT = "timestamptz '2025-12-01 00:00:00+00' + (abs(hashtext('t' || {n})::bigint) % 31536000) * interval '1 second'"

LOAD = [
    (
        "checkouts",
        """
        INSERT INTO checkouts (checkout_id, patient_id, practice_id, status, currency, total_minor,
          amount_due_minor, payment_attempts, redemption_amount_minor, order_id, created_at,
          updated_at, expires_at, version)
        SELECT ('c0c0' || lpad(to_hex(i), 28, '0'))::uuid, {patient}, {practice},
          CASE WHEN i <= :orders THEN 'completed'
               ELSE (ARRAY['open','awaiting_payment','expired','failed'])[1 + i % 4] END,
          'GBP', 1000 + i % 20000, 1000 + i % 20000,
          CASE WHEN i <= :orders OR i % 4 <> 0 THEN 1 ELSE 0 END, 0,
          CASE WHEN i <= :orders THEN ('0d0d' || lpad(to_hex(i), 28, '0'))::uuid END,
          {moment}, {moment}, {moment} + interval '1 hour', 1
        FROM generate_series(1, :checkouts) AS i
        """,
    ),
    (
        "payment_captures",
        """
        INSERT INTO payment_captures (transaction_ref, intent_id, checkout_id, amount_minor,
          currency, method, confirmed_at)
        SELECT 'tx_' || i, 'pi_' || i, ('c0c0' || lpad(to_hex(i), 28, '0'))::uuid, 1000 + i % 20000, 'GBP', 'card',
          {moment}
        FROM generate_series(1, :orders) AS i
        """,
    ),
    (
        "orders",
        """
        INSERT INTO orders (order_id, checkout_id, patient_id, practice_id, status,
          fulfilment_status, refund_status, currency, total_minor, captured_minor, refunded_minor,
          refund_pending_minor, payment_ref, payment_method, redeemed_minor, points_returned,
          created_by, created_at, updated_at, version)
        SELECT ('0d0d' || lpad(to_hex(i), 28, '0'))::uuid, ('c0c0' || lpad(to_hex(i), 28, '0'))::uuid, {patient}, {practice},
          'Completed', 'Completed', 'none', 'GBP', 1000 + i % 20000, 1000 + i % 20000, 0, 0,
          'tx_' || i, 'card', 0, false, 'bench', {moment}, {moment}, 1
        FROM generate_series(1, :orders) AS i
        """,
    ),
    (
        "order_lines",
        """
        INSERT INTO order_lines (line_item_id, order_id, line_no, product_id, product_name,
          quantity, unit_price_minor, fulfilment_type, fulfilment_status, exception_reason,
          exception_since, exception_resolution, updated_at)
        SELECT ('11e0' || lpad(to_hex(i), 28, '0'))::uuid, ('0d0d' || lpad(to_hex(i), 28, '0'))::uuid, 1, :product, 'Bench brush', 1,
          1000 + i % 20000, 'Drop-Ship',
          CASE WHEN i % 50 = 0 THEN 'exception'
               ELSE (ARRAY['delivered','dispatched','sent_to_supplier','pending'])[1 + i % 4] END,
          CASE WHEN i % 50 = 0 THEN 'lost' END,
          CASE WHEN i % 50 = 0 THEN {moment} END,
          CASE WHEN i % 100 = 0 THEN 'refund' END,
          {moment}
        FROM generate_series(1, :orders) AS i
        """,
    ),
    (
        "refunds",
        """
        INSERT INTO refunds (refund_id, order_id, practice_id, patient_id, payment_ref,
          payment_method, amount_minor, currency, reason_code, kind, status, initiated_by,
          initiated_by_role, initiated_at, mfa_at, provider_refund_ref, completed_at,
          failure_code)
        SELECT ('ef00' || lpad(to_hex(i), 28, '0'))::uuid, ('0d0d' || lpad(to_hex(i), 28, '0'))::uuid, {practice}, {patient},
          'tx_' || i, 'card', 500 + i % 900, 'GBP', ({reasons})[1 + (i / 20) % 4], 'amount',
          CASE WHEN i % 200 = 0 THEN 'failed' ELSE 'succeeded' END, 'bench-staff',
          'finance', {moment} + interval '3 days', {moment} + interval '3 days',
          CASE WHEN i % 200 = 0 THEN NULL ELSE 'rf_' || i END,
          {moment} + interval '3 days',
          CASE WHEN i % 200 = 0 THEN 'declined' END
        FROM generate_series(20, :orders, 20) AS i
        """,
    ),
    (
        "recommendations",
        """
        INSERT INTO recommendations (recommendation_id, practice_id, patient_id, product_id,
          recommended_by, recommended_by_role, status, created_at)
        SELECT ('ec00' || lpad(to_hex(i), 28, '0'))::uuid, {practice}, {patient}, :product, 'bench-clinician',
          'clinician', 'active', {moment} - interval '2 days'
        FROM generate_series(1, :checkouts) AS i WHERE i % 5 IN (1, 2)
        """,
    ),
    (
        "checkout_lines",
        """
        INSERT INTO checkout_lines (checkout_id, line_no, product_id, product_name, quantity,
          unit_price_minor, fulfilment_type, recommendation_id)
        SELECT ('c0c0' || lpad(to_hex(i), 28, '0'))::uuid, 1, :product, 'Bench brush', 1, 1000 + i % 20000,
          'Drop-Ship', CASE WHEN i % 15 = 1 THEN ('ec00' || lpad(to_hex(i), 28, '0'))::uuid END
        FROM generate_series(1, :checkouts) AS i
        """,
    ),
]


def load(url: str, orders: int, practices: int) -> dict[str, float]:
    """Bulk-load as the owner; foreign-key and audit triggers off for the load only (the rows
    are made consistent by construction; products are not loaded, no query here reads them)."""
    engine = create_engine(url)
    params = {
        "orders": orders,
        "checkouts": orders * 5 // 4,
        "practices": practices,
        "product": uuid.UUID(int=1),
    }
    seconds: dict[str, float] = {}
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text("SET LOCAL synchronous_commit = off"))
        for table, statement in LOAD:
            sql = statement.format(
                practice=PRACTICE.format(n="i"),
                patient=PATIENT.format(n="i"),
                moment=MOMENT.format(n="i"),
                reasons=REASONS,
            )
            began = time.perf_counter()
            connection.execute(text(sql), params)
            seconds[table] = time.perf_counter() - began
            print(f"  loaded {table:<18} {seconds[table]:6.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        began = time.perf_counter()
        # VACUUM too: a table that has lived a while has its visibility map set (autovacuum),
        # so index-only scans skip the heap; a freshly loaded one has not.
        connection.execute(text("VACUUM ANALYZE"))
        seconds["vacuum_analyze"] = time.perf_counter() - began
    engine.dispose()
    return seconds


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def schedstat(pid: int | str) -> tuple[int, int]:
    """(ns on a CPU, ns waiting for one) of a process so far (Linux /proc/<pid>/schedstat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        on_cpu, waiting = f.read().split()[:2]
    return int(on_cpu), int(waiting)


@dataclass
class Run:
    wall_ms: float
    cpu_ms: float  # this process and the PostgreSQL backend, on a CPU
    queued_ms: float  # both, runnable but waiting for a CPU (other work on the machine)


def time_overview(
    url: str, practice_id: uuid.UUID, granularity: Granularity, runs: int
) -> list[Run]:
    """`runs` timings of the overview as a request makes it: the service role, the practice's
    row-level security scope, one read-only transaction. Besides the wall time, the CPU time
    of this process and of the PostgreSQL backend serving it, and how long both waited for a
    CPU: on a shared machine the wall time includes other processes' work, the CPU time not."""
    database = Database(url, role=SERVICE_ROLE)
    actor = Actor(
        actor_id="bench-admin",
        name="Bench Admin",
        role=Role.PRACTICE_ADMIN,
        practice_id=practice_id,
        mfa=False,
        auth_time=None,
    )
    samples = []
    with tenancy.scoped(tenancy.practice_scope(practice_id)):
        with database.reading() as session:  # warm the pool and the plan cache once
            first = overview(session, actor, START, END, granularity)
            backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        for _ in range(runs):
            mine, theirs = schedstat("self"), schedstat(backend)
            began = time.perf_counter()
            with database.reading() as session:
                figures = overview(session, actor, START, END, granularity)
            wall = (time.perf_counter() - began) * 1000
            mine_after, theirs_after = schedstat("self"), schedstat(backend)
            samples.append(
                Run(
                    wall_ms=wall,
                    cpu_ms=(mine_after[0] - mine[0] + theirs_after[0] - theirs[0]) / 1e6,
                    queued_ms=(mine_after[1] - mine[1] + theirs_after[1] - theirs[1]) / 1e6,
                )
            )
            assert figures == first
    database.dispose()
    print(
        f"  {granularity.value:<5}: {first.orders.count} orders, {first.refunds.count} refunds, "
        f"{first.conversion.recommendations} recommendations ({first.conversion.converted} "
        f"bought), {first.funnel.checkouts_started} checkouts, "
        f"{first.fulfilment.open_exceptions} open exceptions, "
        f"{len(first.revenue.periods)} periods"
    )
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PRODUCT_SHOP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--practices", type=int, default=500)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="time the database a --keep run left (no load)"
    )
    args = parser.parse_args()

    began = time.perf_counter()
    if args.reuse:
        url = make_url(args.database_url).set(database=NAME).render_as_string(hide_password=False)
    else:
        url, database = fresh_database(args.database_url, NAME)
        with database.engine.begin() as connection:
            grant_service_role(connection, SERVICE_ROLE, create=True)
        database.dispose()
        print(f"Loading {args.orders:,} orders across {args.practices} practices ...", flush=True)
        loaded = load(url, args.orders, args.practices)
        print(f"  load + vacuum analyze: {sum(loaded.values()):.1f} s", flush=True)

    engine = create_engine(url)
    with engine.connect() as connection:
        practice_id = connection.scalar(text("SELECT md5('practice' || 7)::uuid"))
    engine.dispose()

    failed = False
    print(f"Overview for one practice, {START} to {END}, {args.runs} runs each:")
    print(f"  (load average before timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for granularity in (Granularity.MONTH, Granularity.WEEK):
        samples = time_overview(url, practice_id, granularity, args.runs)
        wall = [r.wall_ms for r in samples]
        cpu = [r.cpu_ms for r in samples]
        queued = [r.queued_ms for r in samples]
        p95 = pct(wall, 95)
        verdict = "ok" if p95 <= 200 else "OVER TARGET"
        failed = failed or p95 > 200
        print(
            f"  {granularity.value:<5} wall: p50 {pct(wall, 50):7.2f} ms  p95 {p95:7.2f} ms  "
            f"max {max(wall):7.2f} ms  (target p95 <= 200 ms: {verdict})\n"
            f"  {granularity.value:<5} cpu:  p50 {pct(cpu, 50):7.2f} ms  p95 {pct(cpu, 95):7.2f} ms  "
            f"max {max(cpu):7.2f} ms  (client + backend on a CPU)\n"
            f"  {granularity.value:<5} queued for a CPU: p50 {pct(queued, 50):7.2f} ms  "
            f"p95 {pct(queued, 95):7.2f} ms",
            flush=True,
        )

    if not args.keep:
        admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{SERVICE_ROLE}"'))  # ours alone
        admin.dispose()
    print(f"Total {time.perf_counter() - began:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
