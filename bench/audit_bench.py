"""Audit write benchmark (issue 14): audit entries per second, and the time per entry, from
concurrent writers on PostgreSQL: each writer on its own streams (what the code does) against
every writer on one stream (a single global chain).

    .venv/bin/python bench/audit_bench.py [--seconds 10] [--writers 16] [--entries-per-stream 5]
        [--processes 1] [--json FILE]

Needs PostgreSQL (`PRODUCT_SHOP_BENCH_DATABASE_URL` or `--database-url`, default the local `test`
server; the script creates, migrates and at the end drops its own `product_shop_audit_bench`
database). Writers are threads of this process (or, with `--processes P`, threads of P processes
of their own, so that one interpreter's GIL is not the limit), each entry its own unit of work
(`Database.unit_of_work()`: one `AuditLog.record` and the commit), as the services write them.

Phases, `--seconds` each:
1. baseline: one writer, one stream (`order`), every entry looking up the stream head;
2. per-stream chains: `--writers` writers, each on streams of its own, a new stream every
   `--entries-per-stream` entries (its first entry `new_stream=True`, as an order's creation);
3. global chain, retry: the writers all on one stream through the same `AuditLog.record`. Two
   writers that read the same head insert the same sequence number; the unique
   (stream_type, stream_id, stream_seq) refuses the later one at commit, and the writer runs
   its unit of work again until it commits;
4. global chain, advisory lock: the same, with `pg_advisory_xact_lock` taken first in each unit
   of work (held to its commit), so the head read and the insert are serialised;
5. global chain, head row: the same, the head kept in a one-row table of this benchmark's own,
   read `FOR UPDATE` (and given to the log with `AuditLog.note_head`, so it does no lookup) and
   updated in the same unit of work.
Reported per phase: entries/s, p50/p95/p99 ms per entry (from the first attempt to the commit),
units of work that had to run again and how often, and CPU ms per entry for the benchmark's
processes, the database's backends and the whole machine (with what other processes used
meanwhile). At the end every stream's chain is verified (`verify_stream`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchdb import fresh_database
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from product_shop.audit.log import GENESIS_HASH, AuditActor, AuditLog, verify_stream
from product_shop.audit.tables import AuditEntry
from product_shop.db.engine import Database

DB_NAME = "product_shop_audit_bench"
PRACTICE_ID = uuid.UUID("00000000-0000-4000-8000-000000000014")
STREAMS = uuid.UUID("6d1c3a51-5f0e-4b7e-9d0a-000000000014")  # namespace of per-stream ids
ADVISORY_KEY = 14_000_001  # pg_advisory_xact_lock key of the global chain
MAX_ATTEMPTS = 10_000  # a unit of work refused this often is an error, not a retry
UNIQUE_VIOLATION = "23505"

# One unit of work's body: (session, writer index, entries this writer has committed so far).
Work = Callable[[Session, int, int], None]


@dataclass
class Phase:
    name: str
    label: str
    writers: int
    method: str  # the AuditWriters method that is one unit of work's body


@dataclass
class WriterResult:
    latencies_ms: list[float] = field(default_factory=list)
    retried: int = 0  # units of work that ran more than once
    failed_attempts: int = 0  # attempts refused by the unique (stream, seq) constraint
    max_attempts: int = 1
    error: str | None = None


def prepare_database(database_url: str) -> str:
    url, database = fresh_database(database_url, DB_NAME)
    with database.engine.begin() as connection:  # the head-row variant's table (not the product's)
        connection.execute(
            text(
                "CREATE TABLE bench_audit_chain_head (chain text PRIMARY KEY,"
                " stream_seq integer NOT NULL, entry_hash text NOT NULL)"
            )
        )
    database.dispose()
    return url


def drop_database(database_url: str) -> None:
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    admin.dispose()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _backend_pids(database: Database) -> list[int]:
    with database.engine.connect() as connection:
        return list(
            connection.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
        )


class AuditWriters:
    """The phases' units of work, all through `AuditLog.record`."""

    def __init__(self, entries_per_stream: int) -> None:
        self.log = AuditLog()
        self.per_stream = entries_per_stream

    def record(
        self,
        session: Session,
        writer: int,
        stream_type: str,
        stream_id: str,
        *,
        new_stream: bool = False,
    ) -> AuditEntry:
        return self.log.record(
            session,
            stream_type=stream_type,
            stream_id=stream_id,
            action="order.status_changed",
            actor=AuditActor(actor_id=f"bench-writer-{writer}", role="staff", name="Bench"),
            practice_id=PRACTICE_ID,
            before={"status": "paid"},
            after={"status": "shipped", "carrier": "Royal Mail", "lines": 2},
            new_stream=new_stream,
        )

    def one_stream(self, session: Session, writer: int, _done: int) -> None:
        self.record(session, writer, "order", "baseline")

    def own_streams(self, session: Session, writer: int, done: int) -> None:
        # The same stream on a retry: the id depends on what this writer has committed only.
        stream = uuid.uuid5(STREAMS, f"{writer}-{done // self.per_stream}")
        self.record(session, writer, "order", str(stream), new_stream=done % self.per_stream == 0)

    def global_retry(self, session: Session, writer: int, _done: int) -> None:
        self.record(session, writer, "global", "retry")

    def global_advisory_lock(self, session: Session, writer: int, _done: int) -> None:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY})
        self.record(session, writer, "global", "advisory-lock")

    def global_head_row(self, session: Session, writer: int, _done: int) -> None:
        head = (
            session.execute(
                text(
                    "SELECT stream_seq, entry_hash FROM bench_audit_chain_head WHERE chain = :chain"
                    " FOR UPDATE"
                ),
                {"chain": "head-row"},
            )
            .mappings()
            .one()
        )
        self.log.note_head(session, "global", "head-row", dict(head))
        entry = self.record(session, writer, "global", "head-row")
        session.execute(
            text(
                "UPDATE bench_audit_chain_head SET stream_seq = :seq, entry_hash = :hash"
                " WHERE chain = :chain"
            ),
            {"seq": entry.stream_seq, "hash": entry.entry_hash, "chain": "head-row"},
        )


def _sqlstate(error: IntegrityError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


def write_entry(database: Database, work: Work, writer: int, done: int) -> tuple[float, int]:
    """One entry in its own unit of work, run again while the unique (stream, seq) constraint
    refuses it: milliseconds from the first attempt to the commit, and the attempts made."""
    started = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        try:
            with database.unit_of_work() as session:
                work(session, writer, done)
        except IntegrityError as exc:
            if _sqlstate(exc) != UNIQUE_VIOLATION or attempts >= MAX_ATTEMPTS:
                raise
            continue
        return (time.perf_counter() - started) * 1000, attempts


class _Deadline:
    """The threads' deadline (time.monotonic()), set just before they start."""

    value = 0.0


def start_writers(
    database: Database,
    work: Work,
    indices: list[int],
    start_line: threading.Barrier,
    deadline: _Deadline,
) -> Callable[[], tuple[list[WriterResult], float]]:
    """Start a thread per writer, each waiting at `start_line`, then writing entries until the
    deadline; returns the call that waits for them: their results and when the last one ended."""
    results = [WriterResult() for _ in indices]
    finished: list[float] = []

    def writer(slot: int, index: int) -> None:
        result = results[slot]
        start_line.wait()
        try:
            while time.monotonic() < deadline.value:
                elapsed_ms, attempts = write_entry(database, work, index, len(result.latencies_ms))
                result.latencies_ms.append(elapsed_ms)
                if attempts > 1:
                    result.retried += 1
                    result.failed_attempts += attempts - 1
                    result.max_attempts = max(result.max_attempts, attempts)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finished.append(time.monotonic())

    threads = [
        threading.Thread(target=writer, args=(slot, index)) for slot, index in enumerate(indices)
    ]
    for thread in threads:
        thread.start()

    def finish() -> tuple[list[WriterResult], float]:
        for thread in threads:
            thread.join()
        return results, max(finished)

    return finish


def _writer_process(
    url: str,
    method: str,
    entries_per_stream: int,
    indices: list[int],
    start_line: Any,
    deadline: Any,
    queue: Any,
    release: Any,
) -> None:
    """A process of writer threads (`--processes`): warm up, report ready, write, report."""
    try:
        database = Database(url, pool_size=max(len(indices), 5))
        writers = AuditWriters(entries_per_stream)
        warm_up(database, writers, len(indices), f"warm-up-{os.getpid()}")
        local_line = threading.Barrier(len(indices) + 1)
        local_deadline = _Deadline()
        finish = start_writers(
            database, getattr(writers, method), indices, local_line, local_deadline
        )
    except Exception as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    queue.put(("ready", os.getpid()))
    start_line.wait()
    local_deadline.value = deadline.value
    cpu_before = _cpu_seconds(os.getpid())
    local_line.wait()
    results, last = finish()
    cpu = _cpu_seconds(os.getpid()) - cpu_before
    queue.put(("done", {"results": [asdict(r) for r in results], "finished": last, "cpu": cpu}))
    release.wait()  # keep the connections (their backends' CPU is read) until measured
    database.dispose()


def run_phase(
    database: Database,
    writers: AuditWriters,
    phase: Phase,
    seconds: float,
    processes: int,
) -> dict[str, Any]:
    indices = list(range(phase.writers))
    processes = max(1, min(processes, phase.writers))
    if processes == 1:  # threads of this process
        start_line: Any = threading.Barrier(phase.writers + 1)
        deadline: Any = _Deadline()
        finish = start_writers(
            database, getattr(writers, phase.method), indices, start_line, deadline
        )
    else:
        context = multiprocessing.get_context("spawn")
        start_line = context.Barrier(processes + 1)
        deadline = context.RawValue("d", 0.0)
        queue = context.Queue()
        release = context.Barrier(processes + 1)
        children = [
            context.Process(
                target=_writer_process,
                args=(
                    database.url,
                    phase.method,
                    writers.per_stream,
                    indices[i::processes],
                    start_line,
                    deadline,
                    queue,
                    release,
                ),
            )
            for i in range(processes)
        ]
        for child in children:
            child.start()
        for _ in children:
            kind, detail = queue.get(timeout=120)
            if kind != "ready":
                start_line.abort()
                raise RuntimeError(f"a writer process failed: {detail}")
    pids = _backend_pids(database)
    cpu_before = (_cpu_seconds(os.getpid()), sum(_cpu_seconds(p) for p in pids))
    machine_before = _machine_busy_seconds()
    started = time.monotonic()
    deadline.value = started + seconds
    start_line.wait()
    if processes == 1:
        results, last = finish()
        children_cpu = 0.0
    else:
        reports = [queue.get(timeout=seconds + 600)[1] for _ in children]
        results = [WriterResult(**r) for report in reports for r in report["results"]]
        last = max(report["finished"] for report in reports)
        children_cpu = sum(report["cpu"] for report in reports)
    elapsed = last - started
    machine = _machine_busy_seconds() - machine_before
    own = _cpu_seconds(os.getpid()) - cpu_before[0] + children_cpu
    backends = sum(_cpu_seconds(p) for p in pids) - cpu_before[1]
    if processes > 1:
        release.wait()
        for child in children:
            child.join()

    latencies = [ms for r in results for ms in r.latencies_ms]
    entries = len(latencies)
    per_entry = 1000 / max(entries, 1)
    errors = [r.error for r in results if r.error]
    return {
        "phase": phase.name,
        "label": phase.label,
        "writers": phase.writers,
        "processes": processes,
        "seconds": round(elapsed, 2),
        "entries": entries,
        "entries_per_s": round(entries / elapsed, 1),
        "latency_ms_p50_p95_p99": [round(pct(latencies, p), 2) for p in (50, 95, 99)],
        "latency_ms_max": round(max(latencies, default=float("nan")), 1),
        "retried_units_of_work": sum(r.retried for r in results),
        "refused_attempts": sum(r.failed_attempts for r in results),
        "max_attempts_for_one_entry": max(r.max_attempts for r in results),
        "cpu_ms_per_entry": {
            "bench_processes": round(own * per_entry, 2),
            "postgres_backends": round(backends * per_entry, 2),
            "machine": round(machine * per_entry, 2),
        },
        "other_processes_cpu_s_per_s": round(max(0.0, machine - own - backends) / elapsed, 2),
        "errors": errors,
    }


def verify_chains(database: Database) -> dict[str, int]:
    """Every stream's chain, read back in order: streams, entries, and broken chains."""
    streams = entries = broken = 0
    current: tuple[str, str] | None = None
    chain: list[AuditEntry] = []

    def close_chain() -> None:
        nonlocal streams, broken
        if chain:
            streams += 1
            broken += not verify_stream(chain)

    with database.reading() as session:
        rows = session.scalars(
            select(AuditEntry).order_by(
                AuditEntry.stream_type, AuditEntry.stream_id, AuditEntry.stream_seq
            )
        ).yield_per(2000)
        for entry in rows:
            entries += 1
            key = (entry.stream_type, entry.stream_id)
            if key != current:
                close_chain()
                chain, current = [], key
            chain.append(entry)
        close_chain()
    return {"streams": streams, "entries": entries, "broken_chains": broken}


def warm_up(database: Database, writers: AuditWriters, connections: int, stream: str) -> None:
    """Open the pool's connections and let SQLAlchemy compile its statements, untimed."""
    held = [database.engine.connect() for _ in range(connections)]
    for connection in held:
        connection.execute(text("SELECT 1"))
        connection.close()

    def work(session: Session, writer: int, _done: int) -> None:
        writers.record(session, writer, "warm-up", stream)

    for done in range(50):
        write_entry(database, work, 0, done)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PRODUCT_SHOP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument(
        "--entries-per-stream",
        type=int,
        default=5,
        help="per-stream phase: a writer starts a new stream after this many entries",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="spread the writers over this many processes (default: threads of this one)",
    )
    parser.add_argument("--json", type=Path, default=None, help="Write the results here too")
    args = parser.parse_args()

    url = prepare_database(args.database_url)
    database = Database(url, pool_size=max(args.writers, 5))
    writers = AuditWriters(args.entries_per_stream)
    with database.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO bench_audit_chain_head VALUES ('head-row', 0, :genesis)"),
            {"genesis": GENESIS_HASH},
        )
    n = args.writers
    phases = [
        Phase("baseline", "1 writer, one stream", 1, "one_stream"),
        Phase("per_stream", f"{n} writers, streams of their own", n, "own_streams"),
        Phase("global_retry", f"{n} writers, one stream, retry on refusal", n, "global_retry"),
        Phase(
            "global_advisory_lock",
            f"{n} writers, one stream, advisory lock",
            n,
            "global_advisory_lock",
        ),
        Phase(
            "global_head_row", f"{n} writers, one stream, head row FOR UPDATE", n, "global_head_row"
        ),
    ]
    results: dict[str, Any] = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "seconds_per_phase": args.seconds,
        "entries_per_stream": args.entries_per_stream,
        "writer_processes": args.processes,
        "phases": [],
    }
    try:
        with database.engine.connect() as connection:
            results["postgresql"] = connection.scalar(text("SHOW server_version"))
            results["synchronous_commit"] = connection.scalar(text("SHOW synchronous_commit"))
        warm_up(database, writers, max(args.writers, 1), "warm-up")
        print(f"Audit write benchmark — {results['date']}, {results['machine']}", flush=True)
        print(
            f"{'phase':<46} {'entries/s':>9} {'p50/p95/p99 ms':>20} {'retried':>8}"
            f" {'refused':>8} {'CPU ms/entry (bench/pg/machine)':>32} {'other CPU':>9}",
            flush=True,
        )
        for phase in phases:
            figures = run_phase(database, writers, phase, args.seconds, args.processes)
            results["phases"].append(figures)
            cpu = figures["cpu_ms_per_entry"]
            print(
                f"{phase.label:<46} {figures['entries_per_s']:>9.1f}"
                f" {' / '.join(f'{x:.1f}' for x in figures['latency_ms_p50_p95_p99']):>20}"
                f" {figures['retried_units_of_work']:>8} {figures['refused_attempts']:>8}"
                f" {cpu['bench_processes']:>10.2f} / {cpu['postgres_backends']:.2f} / {cpu['machine']:.2f}"
                f" {figures['other_processes_cpu_s_per_s']:>9.2f}",
                flush=True,
            )
            for error in figures["errors"]:
                print(f"  error: {error}", flush=True)
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        results["chains"] = verify_chains(database)
        print(f"chains verified: {results['chains']}")
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        database.dispose()
        drop_database(args.database_url)
    failed = any(p["errors"] for p in results["phases"]) or results.get("chains", {}).get(
        "broken_chains"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
