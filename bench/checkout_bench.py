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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from product_shop.access.demo_idp import ensure_key_pair, issue_token, public_key_file
from product_shop.config import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from product_shop.context import AppContext
from product_shop.config import Settings
from product_shop.db.engine import Database
from product_shop.db.migrate import upgrade
from product_shop.demo.data import HARBOUR
from product_shop.demo.seed import seed
from product_shop.simulators.server import free_port

ROOT = Path(__file__).resolve().parent
SUCCESS_CARD = "4242424242424242"
ADDRESS = {"recipient_name": "Bench Patient", "line1": "1 Quay St", "city": "Bristol", "postcode": "BS1 4AA"}


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


def prepare_database(admin_url: str, name: str) -> str:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    upgrade(database.engine)
    context = AppContext.build(Settings(database_url=url, jwt_public_key="unused"), database=database)
    with database.unit_of_work() as session:
        seed(session, context.catalogue)
    context.close()
    database.dispose()
    return url


def products(api: str, token: str) -> list[str]:
    items = httpx.get(f"{api}/v1/catalogue", headers={"Authorization": f"Bearer {token}"}).json()["items"]
    drop_ship = [i["product_id"] for i in items if i["purchasable"] and i["fulfilment_type"] == "Drop-Ship"]
    return drop_ship[:2]


async def one_flow(client: httpx.AsyncClient, api: str, token: str, product_ids: list[str], samples: Samples) -> None:
    try:
        await _flow(client, api, token, product_ids, samples)
    except httpx.TransportError:
        samples.errors += 1


async def _flow(client: httpx.AsyncClient, api: str, token: str, product_ids: list[str], samples: Samples) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    body = {"lines": [{"product_id": p, "quantity": 1} for p in product_ids], "delivery_address": ADDRESS}
    created = await client.post(
        f"{api}/v1/checkouts", json=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
    )
    intent_done = time.perf_counter()
    if created.status_code != 201:
        samples.errors += 1
        return
    checkout = created.json()
    paid = await client.post(checkout["payment"]["payment_url"], json={"card_number": SUCCESS_CARD})
    if paid.status_code != 200:
        samples.errors += 1
        return
    complete_started = time.perf_counter()
    completed = await client.post(f"{api}/v1/checkouts/{checkout['id']}/complete", headers=headers)
    finished = time.perf_counter()
    if completed.status_code != 200:
        samples.errors += 1
        return
    samples.intent_ms.append((intent_done - started) * 1000)
    samples.complete_ms.append((finished - complete_started) * 1000)
    samples.flow_ms.append((finished - started) * 1000)
    server = timing(completed.headers.get("server-timing", ""), "order-create")
    if server is not None:
        samples.order_ms.append(server)


async def flow_phase(api: str, tokens: list[str], product_ids: list[str], concurrency: int, seconds: float) -> tuple[Samples, float]:
    samples = Samples()
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        stop_at = time.perf_counter() + seconds

        async def patient(index: int) -> None:
            while time.perf_counter() < stop_at:
                await one_flow(client, api, tokens[index % len(tokens)], product_ids, samples)

        started = time.perf_counter()
        await asyncio.gather(*(patient(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return samples, elapsed


async def completion_phase(api: str, tokens: list[str], product_ids: list[str], concurrency: int, count: int) -> tuple[Samples, float]:
    """Pre-create and pay `count` checkouts (not timed), then complete them all at `concurrency`."""
    samples = Samples()
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        ready: list[tuple[str, str]] = []
        semaphore = asyncio.Semaphore(32)

        async def make(index: int) -> None:
            async with semaphore:
                token = tokens[index % len(tokens)]
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
                body = {"lines": [{"product_id": p, "quantity": 1} for p in product_ids], "delivery_address": ADDRESS}
                checkout = (await client.post(f"{api}/v1/checkouts", json=body, headers=headers)).json()
                await client.post(checkout["payment"]["payment_url"], json={"card_number": SUCCESS_CARD})
                ready.append((token, checkout["id"]))

        await asyncio.gather(*(make(i) for i in range(count)))
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for item in ready:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                token, checkout_id = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.post(
                        f"{api}/v1/checkouts/{checkout_id}/complete", headers={"Authorization": f"Bearer {token}"}
                    )
                except httpx.TransportError:
                    samples.errors += 1
                    continue
                if response.status_code != 200:
                    samples.errors += 1
                    continue
                samples.complete_ms.append((time.perf_counter() - started) * 1000)
                server = timing(response.headers.get("server-timing", ""), "order-create")
                if server is not None:
                    samples.order_ms.append(server)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return samples, elapsed


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


def cpu_snapshot(server_pid: int, simulator_pid: int) -> dict[str, float]:
    return {
        "api": sum(_cpu_seconds(p) for p in _tree(server_pid)),
        "simulator": _cpu_seconds(simulator_pid),
        "load generator": _cpu_seconds(os.getpid()),
        "postgres": sum(_cpu_seconds(p) for p in _postgres_pids()),
    }


def cpu_share(before: dict[str, float], after: dict[str, float], elapsed: float) -> str:
    used = {k: after[k] - before[k] for k in before}
    return ", ".join(f"{k} {v / elapsed:.0%}" for k, v in used.items()) + f" (of 1 core; {os.cpu_count()} cores)"


def pgbench(url: str, clients: int, seconds: int) -> float:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-f", str(ROOT / "completion.sql"), "-c", str(clients), "-j", "2", "-T", str(seconds), plain],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    if not found:
        raise RuntimeError(result.stdout + result.stderr)
    return float(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("PRODUCT_SHOP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    url = prepare_database(args.database_url, "product_shop_bench")
    data_dir = Path(tempfile.mkdtemp(prefix="product-shop-bench-"))
    pair = ensure_key_pair(data_dir)
    sim_port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "PRODUCT_SHOP_DATABASE_URL": url,
        "PRODUCT_SHOP_JWT_PUBLIC_KEY_FILE": str(public_key_file(data_dir)),
        "PRODUCT_SHOP_PAYMENTS_BASE_URL": f"http://127.0.0.1:{sim_port}",
        "PRODUCT_SHOP_LOG_LEVEL": "WARNING",
    }
    python = sys.executable
    simulator = subprocess.Popen([python, "-m", "product_shop", "simulate", "payments", "--port", str(sim_port), "--duplicate-rate", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([python, "-m", "product_shop", "serve", "--port", str(api_port), "--workers", str(args.workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, object] = {}
    try:
        wait_ready(f"{api}/readyz")
        now = datetime.now(UTC)
        tokens = [
            issue_token(pair.private_pem, subject=str(uuid.uuid4()), role="patient", issuer=DEFAULT_ISSUER,
                        audience=DEFAULT_AUDIENCE, now=now, practice_id=str(HARBOUR.practice_id))
            for _ in range(max(levels))
        ]
        product_ids = products(api, tokens[0])
        asyncio.run(flow_phase(api, tokens, product_ids, 4, 2))  # warm-up
        flows = {}
        cpu: dict[str, str] = {}
        for level in levels:
            before = cpu_snapshot(server.pid, simulator.pid)
            samples, elapsed = asyncio.run(flow_phase(api, tokens, product_ids, level, args.seconds))
            cpu[f"flow_{level}"] = cpu_share(before, cpu_snapshot(server.pid, simulator.pid), elapsed)
            flows[level] = (samples, elapsed)
        completions = {}
        for level in levels:
            count = max(200, level * 10)
            samples, elapsed = asyncio.run(completion_phase(api, tokens, product_ids, level, count))
            completions[level] = (samples, elapsed)
    finally:
        server.terminate()
        simulator.terminate()
        server.wait(timeout=30)
        simulator.wait(timeout=30)
    raw = {level: pgbench(url, level, int(args.seconds)) for level in levels if level > 1}

    print(f"\nProduct Shop checkout benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, API workers {args.workers}")
    print("\nWhole flow (create checkout -> pay -> complete), client-side ms except order creation (server-side)")
    print(f"{'patients':>8} {'flows/s':>8} {'intent p50/p95/p99':>22} {'order-create p50/p95/p99':>26} {'flow p50/p95/p99':>24} {'errors':>6}")
    for level, (s, elapsed) in flows.items():
        print(f"{level:>8} {len(s.flow_ms)/elapsed:>8.1f} "
              f"{pct(s.intent_ms,50):>6.1f}/{pct(s.intent_ms,95):>6.1f}/{pct(s.intent_ms,99):>6.1f}   "
              f"{pct(s.order_ms,50):>7.1f}/{pct(s.order_ms,95):>7.1f}/{pct(s.order_ms,99):>7.1f}   "
              f"{pct(s.flow_ms,50):>6.1f}/{pct(s.flow_ms,95):>6.1f}/{pct(s.flow_ms,99):>6.1f} {s.errors:>6}")
        results[f"flow_{level}"] = {"flows_per_s": len(s.flow_ms) / elapsed, "intent_ms": [pct(s.intent_ms, p) for p in (50, 95, 99)],
                                    "order_create_ms": [pct(s.order_ms, p) for p in (50, 95, 99)], "flow_ms": [pct(s.flow_ms, p) for p in (50, 95, 99)], "errors": s.errors}
    print("\nCompletion only (pre-paid checkouts): completions/s, complete call p50/p95/p99 ms, order-create p95 ms (server)")
    for level, (s, elapsed) in completions.items():
        rate = len(s.complete_ms) / elapsed
        raw_tps = raw.get(level)
        ratio = f"{rate / raw_tps:.0%}" if raw_tps else "-"
        print(f"{level:>8} {rate:>8.1f}   {pct(s.complete_ms,50):>6.1f}/{pct(s.complete_ms,95):>6.1f}/{pct(s.complete_ms,99):>6.1f}   "
              f"order-create p95 {pct(s.order_ms,95):>6.1f}   raw DB limit {raw_tps or float('nan'):>8.1f} tx/s   ratio {ratio}   errors {s.errors}")
        results[f"completion_{level}"] = {"completions_per_s": rate, "complete_ms": [pct(s.complete_ms, p) for p in (50, 95, 99)],
                                          "order_create_p95_ms": pct(s.order_ms, 95), "raw_tps": raw_tps, "errors": s.errors}
    print("\nCPU use during the whole-flow phases (process CPU seconds / wall seconds)")
    for name, share in cpu.items():
        print(f"  {name}: {share}")
    results["cpu"] = cpu
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
