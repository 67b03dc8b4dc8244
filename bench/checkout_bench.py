"""Checkout benchmark (spec §16 Performance): run with `make bench`.

Sets up a fresh PostgreSQL database, starts the Integrated Payments simulator and the API
(`product-shop serve`, 2 workers) as their own processes, then drives concurrent patients through
create checkout -> pay on the hosted page -> complete, at 1, 16 and 64 concurrent patients. It
reports throughput and p50/p95/p99 for payment-intent creation, order creation after capture
confirmation (server-side, from the Server-Timing header) and the whole flow; then a completion-only
phase (pre-paid checkouts, completions only) for completion throughput; and in the same run the
raw database limit for the same rows (bench/completion.sql through pgbench) and our ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchdb import fresh_database
from loadgen import LoadgenError, Pool
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from product_shop.access.demo_idp import ensure_key_pair, issue_token, public_key_file
from product_shop.config import DEFAULT_AUDIENCE, DEFAULT_ISSUER, Settings
from product_shop.context import AppContext
from product_shop.db.roles import grant_service_role
from product_shop.demo.data import HARBOUR
from product_shop.demo.seed import seed
from product_shop.simulators.server import free_port

ROOT = Path(__file__).resolve().parent
SUCCESS_CARD = "4242424242424242"
ADDRESS = {
    "recipient_name": "Bench Patient",
    "line1": "1 Quay St",
    "city": "Bristol",
    "postcode": "BS1 4AA",
}


@dataclass
class Samples:
    intent_ms: list[float] = field(default_factory=list)
    order_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    flow_ms: list[float] = field(default_factory=list)
    errors: int = 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def timing(header: str, name: str) -> float | None:
    found = re.search(rf"{name};dur=([0-9.]+)", header or "")
    return float(found.group(1)) if found else None


def wait_ready(url: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


# The role the API and relay act as (`product-shop db grant`): no superuser, no BYPASSRLS.
SERVICE_ROLE = "product_shop_bench_service"


def prepare_database(admin_url: str, name: str) -> str:
    url, database = fresh_database(admin_url, name)
    context = AppContext.build(
        Settings(database_url=url, jwt_public_key="unused"), database=database
    )
    with database.unit_of_work() as session:
        seed(session, context.catalogue)
    # The processes connect as the service role, as in production: row-level security holds.
    with database.engine.begin() as connection:
        grant_service_role(connection, SERVICE_ROLE, create=True)
    context.close()
    database.dispose()
    return url


def products(api: str, token: str) -> list[str]:
    items = httpx.get(f"{api}/v1/catalogue", headers={"Authorization": f"Bearer {token}"}).json()[
        "items"
    ]
    drop_ship = [
        i["product_id"] for i in items if i["purchasable"] and i["fulfilment_type"] == "Drop-Ship"
    ]
    return drop_ship[:2]


async def one_flow(
    pool: Pool, api: str, token: str, product_ids: list[str], samples: Samples
) -> None:
    try:
        await _flow(pool, api, token, product_ids, samples)
    except LoadgenError:
        samples.errors += 1


async def _flow(pool: Pool, api: str, token: str, product_ids: list[str], samples: Samples) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    body = {
        "lines": [{"product_id": p, "quantity": 1} for p in product_ids],
        "delivery_address": ADDRESS,
    }
    created = await pool.request(
        "POST",
        f"{api}/v1/checkouts",
        json_body=body,
        headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
    )
    intent_done = time.perf_counter()
    if created.status != 201:
        samples.errors += 1
        return
    checkout = created.json()
    paid = await pool.request(
        "POST", checkout["payment"]["payment_url"], json_body={"card_number": SUCCESS_CARD}
    )
    if paid.status != 200:
        samples.errors += 1
        return
    complete_started = time.perf_counter()
    completed = await pool.request(
        "POST", f"{api}/v1/checkouts/{checkout['id']}/complete", headers=auth
    )
    finished = time.perf_counter()
    if completed.status != 200:
        samples.errors += 1
        return
    samples.intent_ms.append((intent_done - started) * 1000)
    samples.complete_ms.append((finished - complete_started) * 1000)
    samples.flow_ms.append((finished - started) * 1000)
    server = timing(completed.headers.get("server-timing", ""), "order-create")
    if server is not None:
        samples.order_ms.append(server)


async def flow_phase(
    api: str, tokens: list[str], product_ids: list[str], concurrency: int, seconds: float
) -> tuple[Samples, float]:
    samples = Samples()
    stop_at = time.perf_counter() + seconds

    async def patient(index: int) -> None:
        pool = Pool()
        try:
            while time.perf_counter() < stop_at:
                await one_flow(pool, api, tokens[index % len(tokens)], product_ids, samples)
        finally:
            await pool.close()

    started = time.perf_counter()
    await asyncio.gather(*(patient(i) for i in range(concurrency)))
    return samples, time.perf_counter() - started


async def paid_checkouts(
    api: str, tokens: list[str], product_ids: list[str], count: int
) -> list[tuple[str, str]]:
    """`count` checkouts created and paid on the simulator's page (not timed)."""
    ready: list[tuple[str, str]] = []
    body = {
        "lines": [{"product_id": p, "quantity": 1} for p in product_ids],
        "delivery_address": ADDRESS,
    }

    async def maker(first: int) -> None:
        pool = Pool()
        try:
            for index in range(first, count, 32):
                token = tokens[index % len(tokens)]
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
                checkout = (
                    await pool.request(
                        "POST", f"{api}/v1/checkouts", json_body=body, headers=headers
                    )
                ).json()
                await pool.request(
                    "POST",
                    checkout["payment"]["payment_url"],
                    json_body={"card_number": SUCCESS_CARD},
                )
                ready.append((token, checkout["id"]))
        finally:
            await pool.close()

    await asyncio.gather(*(maker(i) for i in range(32)))
    return ready


async def completion_phase(
    api: str, ready: list[tuple[str, str]], concurrency: int
) -> tuple[Samples, float]:
    """Complete already-paid checkouts, `concurrency` at a time."""
    samples = Samples()
    queue = iter(ready)

    async def worker() -> None:
        pool = Pool()
        try:
            for token, checkout_id in queue:
                started = time.perf_counter()
                try:
                    response = await pool.request(
                        "POST",
                        f"{api}/v1/checkouts/{checkout_id}/complete",
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except LoadgenError:
                    samples.errors += 1
                    continue
                if response.status != 200:
                    samples.errors += 1
                    continue
                samples.complete_ms.append((time.perf_counter() - started) * 1000)
                server = timing(response.headers.get("server-timing", ""), "order-create")
                if server is not None:
                    samples.order_ms.append(server)
        finally:
            await pool.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if ppid == pid:
                children.append(int(entry.name))
    return [pid, *[c for child in children for c in _tree(child)]]


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# Each part's connections carry their own `application_name`, so PostgreSQL's CPU can be split
# by whose backend spent it (pg_stat_activity names the backends).
API_APP, RELAY_APP = "bench-api", "bench-relay"


def _with_app(url: str, name: str) -> str:
    return (
        make_url(url)
        .update_query_dict({"application_name": name})
        .render_as_string(hide_password=False)
    )


def _backends_by_app(url: str) -> dict[str, list[int]]:
    """Backend pids of the benchmark's database, by application name."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT application_name, pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()
    engine.dispose()
    found: dict[str, list[int]] = {}
    for name, pid in rows:
        found.setdefault(str(name), []).append(int(pid))
    return found


@dataclass
class Processes:
    api: subprocess.Popen[bytes]
    simulator: subprocess.Popen[bytes]
    relay: subprocess.Popen[bytes]
    suppliers: subprocess.Popen[bytes]
    url: str = ""

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each part (PostgreSQL: every backend alive now; the API
        keeps its pooled connections, so its backends live through a phase; "pg api" and "pg
        relay" are the parts of it that the API's and the relay's connections used)."""
        backends = _backends_by_app(self.url) if self.url else {}
        return {
            "pg api": sum(_cpu_seconds(p) for p in backends.get(API_APP, [])),
            "pg relay": sum(_cpu_seconds(p) for p in backends.get(RELAY_APP, [])),
            "api": sum(_cpu_seconds(p) for p in _tree(self.api.pid)),
            "relay": _cpu_seconds(self.relay.pid),
            "simulator": _cpu_seconds(self.simulator.pid),
            "suppliers": _cpu_seconds(self.suppliers.pid),
            "load generator": _cpu_seconds(os.getpid()),
            "postgres": sum(_cpu_seconds(p) for p in _postgres_pids()),
            "machine": _machine_busy_seconds(),
        }

    def stop(self) -> None:
        for process in (self.api, self.relay, self.simulator, self.suppliers):
            process.terminate()
        for process in (self.api, self.relay, self.simulator, self.suppliers):
            process.wait(timeout=30)


def cpu_per_item(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
    """CPU milliseconds per completed item, by part."""
    return {k: round((after[k] - before[k]) / max(items, 1) * 1000, 2) for k in before}


def pgbench(url: str, clients: int, seconds: int) -> tuple[float, float]:
    """Transactions per second of bench/completion.sql, and machine CPU ms per transaction."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    busy = _machine_busy_seconds()
    result = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            "-f",
            str(ROOT / "completion.sql"),
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            plain,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    busy = _machine_busy_seconds() - busy
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    if not found:
        raise RuntimeError(result.stdout + result.stderr)
    tps = float(found.group(1))
    return tps, busy / max(tps * seconds, 1) * 1000


def relay_pending(url: str) -> int:
    """Deliveries not made yet to the destinations the benchmark's relay has a sink for
    (routed or still to be routed)."""
    engine = create_engine(url)
    with engine.connect() as connection:
        pending = connection.execute(
            text(
                "SELECT (SELECT count(*) FROM event_deliveries WHERE status = 'pending'"
                " AND destination IN ('integrated_payments', 'supplier_network'))"
                " + (SELECT count(*) FROM outbox_events WHERE status = 'pending')"
            )
        ).scalar_one()
    engine.dispose()
    return int(pending)


def wait_for_relay(url: str, deadline_s: float) -> float:
    """Wait until the relay has made every delivery; the seconds it took."""
    started = time.monotonic()
    while relay_pending(url) and time.monotonic() - started < deadline_s:
        time.sleep(0.2)
    return time.monotonic() - started


def drain_relay(url: str, processes: Processes) -> dict[str, Any]:
    """`--relay-drain`: the relay, stopped through the load phases, resumed alone: how long it
    takes to make the deliveries left behind, and its CPU (and PostgreSQL's) per order."""
    orders = relay_backlog(url)[0]
    deliveries = relay_pending(url)
    before = processes.cpu()
    processes.relay.send_signal(signal.SIGCONT)
    seconds = wait_for_relay(url, deadline_s=900)
    return {
        "orders": orders,
        "deliveries": deliveries,
        "seconds": round(seconds, 1),
        "cpu_ms_per_order": cpu_per_item(before, processes.cpu(), orders),
    }


def relay_backlog(url: str) -> tuple[int, dict[str, int]]:
    """Order references not delivered yet, and the errors of those already tried."""
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT coalesce(d.last_error, 'not tried yet'), count(*) FROM outbox_events e"
                " LEFT JOIN event_deliveries d ON d.event_position = e.position"
                " AND d.destination = 'integrated_payments'"
                " WHERE coalesce(d.status, 'unrouted') <> 'delivered'"
                " AND e.event_type LIKE '%payment.order_reference%'"
                " GROUP BY 1"
            )
        ).all()
    engine.dispose()
    errors = {str(error)[:120]: int(count) for error, count in rows}
    return sum(errors.values()), errors


def start(url: str, data_dir: Path, workers: int) -> tuple[Processes, str]:
    sim_port, api_port, suppliers_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PRODUCT_SHOP_DATABASE_URL": url,
        "PRODUCT_SHOP_DATABASE_ROLE": SERVICE_ROLE,
        "PRODUCT_SHOP_JWT_PUBLIC_KEY_FILE": str(public_key_file(data_dir)),
        "PRODUCT_SHOP_PAYMENTS_BASE_URL": f"http://127.0.0.1:{sim_port}",
        # Drop-ship lines are submitted to the supplier network by the relay (no callbacks here:
        # the benchmark measures checkout and completion, not the shipments' later stages).
        "PRODUCT_SHOP_SUPPLIERS_BASE_URL": f"http://127.0.0.1:{suppliers_port}",
        "PRODUCT_SHOP_LOG_LEVEL": "WARNING",
        # Each benchmark patient starts checkouts far faster than a person, and every payment
        # callback comes from the one simulator address: the rate limits are lifted here.
        "PRODUCT_SHOP_CHECKOUT_RATE_LIMIT": "1000000/minute",
        "PRODUCT_SHOP_WEBHOOK_RATE_LIMIT": "1000000/minute",
        # As in production: the relay is its own process, not a thread in each API worker.
        "PRODUCT_SHOP_RELAY_IN_PROCESS": "false",
        # The event feeds (Communication Hub, Finance, ...) wait in the outbox here, as before
        # they had sinks, so the figures stay comparable; bench/relay_bench.py measures them.
        "PRODUCT_SHOP_EVENT_SINKS": json.dumps(
            {
                key: {"kind": "off"}
                for key in (
                    "communication_hub",
                    "finance",
                    "financial_insights",
                    "hygiene_subscriptions",
                    "module_owners",
                    "audit_compliance",
                )
            }
        ),
    }
    python = sys.executable
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    api_env = {**env, "PRODUCT_SHOP_DATABASE_URL": _with_app(url, API_APP)}
    logged = {
        "stdout": subprocess.DEVNULL,
        "stderr": (data_dir / "relay.log").open("wb"),
        "env": {**env, "PRODUCT_SHOP_DATABASE_URL": _with_app(url, RELAY_APP)},
    }
    processes = Processes(
        simulator=subprocess.Popen(
            [
                python,
                "-m",
                "product_shop",
                "simulate",
                "payments",
                "--port",
                str(sim_port),
                "--duplicate-rate",
                "0",
            ],
            **quiet,
        ),
        api=subprocess.Popen(
            [
                python,
                "-m",
                "product_shop",
                "serve",
                "--port",
                str(api_port),
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=api_env,
        ),
        relay=subprocess.Popen(
            [python, "-m", "product_shop", "relay", "--interval", "0.2"], **logged
        ),
        suppliers=subprocess.Popen(
            [python, "-m", "product_shop", "simulate", "suppliers", "--port", str(suppliers_port)],
            **quiet,
        ),
        url=url,
    )
    return processes, f"http://127.0.0.1:{api_port}"


def ms(values: list[float]) -> str:
    return "/".join(f"{pct(values, p):.1f}" for p in (50, 95, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PRODUCT_SHOP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--completions", type=int, default=3000, help="paid checkouts completed per level"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--relay-drain",
        action="store_true",
        help="stop the relay through the load phases (checkout figures without it), then time"
        " it making the deliveries left behind, with its CPU per order",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    url = prepare_database(args.database_url, "product_shop_bench")
    data_dir = Path(tempfile.mkdtemp(prefix="product-shop-bench-"))
    pair = ensure_key_pair(data_dir)
    processes, api = start(url, data_dir, args.workers)
    results: dict[str, object] = {}
    flows: dict[int, tuple[Samples, float, dict[str, float]]] = {}
    completions: dict[int, tuple[Samples, float, dict[str, float]]] = {}
    drain: dict[str, Any] = {}
    try:
        wait_ready(f"{api}/readyz")
        now = datetime.now(UTC)
        tokens = [
            issue_token(
                pair.private_pem,
                subject=str(uuid.uuid4()),
                role="patient",
                issuer=DEFAULT_ISSUER,
                audience=DEFAULT_AUDIENCE,
                now=now,
                practice_id=str(HARBOUR.practice_id),
            )
            for _ in range(max(levels))
        ]
        product_ids = products(api, tokens[0])
        asyncio.run(flow_phase(api, tokens, product_ids, 4, 2))  # warm-up
        if args.relay_drain:
            wait_for_relay(url, deadline_s=60)  # the warm-up's deliveries made, then it stops
            processes.relay.send_signal(signal.SIGSTOP)
        for level in levels:
            before = processes.cpu()
            samples, elapsed = asyncio.run(
                flow_phase(api, tokens, product_ids, level, args.seconds)
            )
            flows[level] = (
                samples,
                elapsed,
                cpu_per_item(before, processes.cpu(), len(samples.flow_ms)),
            )
        for level in levels:
            ready = asyncio.run(paid_checkouts(api, tokens, product_ids, args.completions))
            time.sleep(1)  # let the relay catch up with the set-up's own events
            before = processes.cpu()
            samples, elapsed = asyncio.run(completion_phase(api, ready, level))
            completions[level] = (
                samples,
                elapsed,
                cpu_per_item(before, processes.cpu(), len(samples.complete_ms)),
            )
        if args.relay_drain:
            drain = drain_relay(url, processes)
        time.sleep(2)
        backlog, backlog_errors = relay_backlog(url)
        if processes.relay.poll() is not None:
            print(
                f"the relay exited ({processes.relay.returncode}); its log: {data_dir / 'relay.log'}"
            )
    finally:
        processes.stop()
    raw = {level: pgbench(url, level, int(args.seconds)) for level in levels}

    print(f"\nProduct Shop checkout benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, API workers {args.workers}, relay: own process"
    )
    print(
        "\nWhole flow (create checkout -> pay -> complete), client-side ms except order creation (server-side)"
    )
    print(
        f"{'patients':>8} {'flows/s':>8} {'intent p50/95/99':>20} {'order-create p50/95/99':>24} {'flow p50/95/99':>22} {'errors':>6}"
    )
    for level, (s, elapsed, _cpu) in flows.items():
        print(
            f"{level:>8} {len(s.flow_ms) / elapsed:>8.1f} {ms(s.intent_ms):>20} {ms(s.order_ms):>24} {ms(s.flow_ms):>22} {s.errors:>6}"
        )
        results[f"flow_{level}"] = {
            "flows_per_s": len(s.flow_ms) / elapsed,
            "intent_ms": [pct(s.intent_ms, p) for p in (50, 95, 99)],
            "order_create_ms": [pct(s.order_ms, p) for p in (50, 95, 99)],
            "flow_ms": [pct(s.flow_ms, p) for p in (50, 95, 99)],
            "errors": s.errors,
            "cpu_ms_per_flow": _cpu,
        }
    print(
        "\nCompletion only (paid checkouts, completions only) against the raw database limit (pgbench, same rows, same clients)"
    )
    print(
        f"{'clients':>8} {'compl/s':>8} {'complete p50/95/99':>22} {'order-create p50/95/99':>24} {'raw tx/s':>9} {'ratio':>6} {'errors':>6}"
    )
    for level, (s, elapsed, _cpu) in completions.items():
        rate = len(s.complete_ms) / elapsed
        raw_tps, _raw_cpu = raw[level]
        print(
            f"{level:>8} {rate:>8.1f} {ms(s.complete_ms):>22} {ms(s.order_ms):>24} {raw_tps:>9.1f} {rate / raw_tps:>6.0%} {s.errors:>6}"
        )
        results[f"completion_{level}"] = {
            "completions_per_s": rate,
            "complete_ms": [pct(s.complete_ms, p) for p in (50, 95, 99)],
            "order_create_ms": [pct(s.order_ms, p) for p in (50, 95, 99)],
            "raw_tps": raw_tps,
            "ratio": rate / raw_tps,
            "errors": s.errors,
            "cpu_ms_per_completion": _cpu,
        }
    print(
        "\nCPU ms per flow / per completion, by process ('machine' = all CPU on the machine; 2 cores = 2,000 ms/s)"
    )
    for label, table in (("flow", flows), ("completion", completions)):
        for level, (_s, _elapsed, cpu) in table.items():
            print(f"  {label} {level:>3}: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    for level, (tps, cpu) in raw.items():
        print(f"  pgbench {level:>3}: machine {cpu:.2f} ms per transaction ({tps:.0f} tx/s)")
    if args.relay_drain:
        print(
            f"\nrelay stopped through the phases, then alone: {drain['deliveries']} deliveries"
            f" ({drain['orders']} orders) made in {drain['seconds']} s; CPU ms per order: "
            + ", ".join(f"{k} {v:.2f}" for k, v in drain["cpu_ms_per_order"].items())
        )
        results["relay_drain"] = drain
    print(f"\nrelay backlog 2 s after the last phase: {backlog} order references not yet delivered")
    for error, count in backlog_errors.items():
        print(f"  {count:>6} {error}")
    results["raw"] = {str(k): {"tps": v[0], "machine_cpu_ms_per_tx": v[1]} for k, v in raw.items()}
    results["relay_backlog"] = backlog
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
