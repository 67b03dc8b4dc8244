"""Event delivery benchmark (issue 13): the relay's throughput to the webhook receivers and to
NATS JetStream, and how long a backlog takes to drain after a receiver's outage at the checkout
benchmark's order rate.

    .venv/bin/python bench/relay_bench.py [--events 4000] [--order-rate 60] [--outage 300]

Needs PostgreSQL (PRODUCT_SHOP_BENCH_ADMIN_URL, default the local server's `postgres` database;
a database `product_shop_relay_bench` is made afresh) and, for the JetStream part, NATS with
JetStream at 127.0.0.1:4222. The receivers simulator runs as its own process
(`product-shop simulate receivers`), so the relay and the receiver do not share an interpreter.

Phases:
1. webhook throughput: `--events` Communication Hub events (one per order, half of the orders
   with a second event behind the first), delivered by one destination loop;
2. JetStream throughput: the same for Finance set to `nats`;
3. outage: Communication Hub answers 503 for `--outage` seconds while orders arrive at
   `--order-rate` (each with its two Communication Hub events: confirmation and receipt) and
   the relay runs as in production (one loop per destination, the default retry policy); then
   it recovers while orders keep arriving. Reported: the backlog at recovery, and the time until
   every event of the outage was delivered (dominated by each delivery's next retry time under
   the backoff schedule), and the time until the backlog was gone once it was due.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from benchdb import fresh_database
from sqlalchemy import func, insert, select

from product_shop.core.clock import SystemClock
from product_shop.core.signing import demo_destination_secret
from product_shop.db.engine import Database
from product_shop.events.outbox import Outbox
from product_shop.events.relay import OutboxRelay
from product_shop.events.relay_thread import RelayThread
from product_shop.events.tables import EventDelivery, OutboxEvent
from product_shop.events.types import ORDER_CREATED, PAYMENT_RECEIPT, REVENUE_SALE, EventType
from product_shop.integrations.event_webhooks import WebhookSink
from product_shop.simulators.server import free_port

CH, FIN = "communication_hub", "finance"
DB_NAME = "product_shop_relay_bench"


def prepare_database(admin_url: str) -> str:
    url, database = fresh_database(admin_url, DB_NAME)
    database.dispose()
    return url


def emit_orders(database: Database, orders: int, types: tuple[EventType, ...]) -> None:
    """`types` for each of `orders` new orders, in one transaction per 500 orders."""
    outbox = Outbox(SystemClock())
    for start in range(0, orders, 500):
        rows = []
        for _ in range(min(500, orders - start)):
            order_id = str(uuid.uuid4())
            rows.extend(
                outbox.row(t, aggregate_id=order_id, data={"order_id": order_id}) for t in types
            )
        with database.unit_of_work() as session:
            session.execute(insert(OutboxEvent), rows)


def undelivered(database: Database, destination: str) -> int:
    with database.reading() as session:
        unrouted = session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.status == "pending")
        )
        pending = session.scalar(
            select(func.count())
            .select_from(EventDelivery)
            .where(EventDelivery.destination == destination, EventDelivery.status != "delivered")
        )
    return int(unrouted or 0) + int(pending or 0)


def drain(relay: OutboxRelay, destination: str) -> None:
    relay.route()
    while relay.deliver_round(destination).claimed:
        relay.route()


def throughput(database: Database, relay: OutboxRelay, destination: str, events: int) -> float:
    orders = events * 2 // 3  # half the orders have a second event behind their first
    emit_orders(database, orders // 2, (ORDER_CREATED, PAYMENT_RECEIPT))
    emit_orders(database, orders - orders // 2, (ORDER_CREATED,))
    total = undelivered(database, destination)
    started = time.perf_counter()
    drain(relay, destination)
    elapsed = time.perf_counter() - started
    assert undelivered(database, destination) == 0, "not everything was delivered"
    return total / elapsed


def outage(
    database: Database, receivers: str, order_rate: float, seconds: float
) -> dict[str, float]:
    sink = WebhookSink(f"{receivers}/{CH}", demo_destination_secret(CH))
    relay = OutboxRelay(database, {CH: sink}, SystemClock())
    background = RelayThread(relay, interval_seconds=0.2)
    stop_feeding = threading.Event()

    def feed() -> None:
        while not stop_feeding.is_set():
            emit_orders(database, max(1, round(order_rate)), (ORDER_CREATED, PAYMENT_RECEIPT))
            stop_feeding.wait(1.0)

    httpx.post(f"{receivers}/_simulator/{CH}/faults", json={"mode": "down"}).raise_for_status()
    feeder = threading.Thread(target=feed, daemon=True)
    background.start()
    feeder.start()
    time.sleep(seconds)
    backlog = undelivered(database, CH)
    with database.reading() as session:
        cutoff = session.scalar(select(func.max(OutboxEvent.position)))
        due_at = session.scalar(
            select(func.max(EventDelivery.next_attempt_at)).where(
                EventDelivery.destination == CH, EventDelivery.status == "pending"
            )
        )
    recovered = time.perf_counter()
    recovered_at = datetime.now(UTC)
    httpx.delete(f"{receivers}/_simulator/{CH}/faults").raise_for_status()
    while True:
        with database.reading() as session:
            left = session.scalar(
                select(func.count())
                .select_from(EventDelivery)
                .where(
                    EventDelivery.destination == CH,
                    EventDelivery.status != "delivered",
                    EventDelivery.event_position <= cutoff,
                )
            )
        if not left:
            break
        time.sleep(0.5)
    drained = time.perf_counter() - recovered
    stop_feeding.set()
    feeder.join()
    background.stop()
    relay.close()
    sink.close()
    last_due = (due_at - recovered_at).total_seconds() if due_at else 0.0
    return {
        "outage_seconds": seconds,
        "order_rate": order_rate,
        "backlog_at_recovery": backlog,
        "drained_seconds": round(drained, 1),
        "latest_retry_due_after_recovery_seconds": round(max(0.0, last_due), 1),
        "drained_after_last_due_seconds": round(max(0.0, drained - max(0.0, last_due)), 1),
    }


def jetstream_throughput(database: Database, events: int) -> float | None:
    from product_shop.integrations.event_nats import JetStreamSink

    stream = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
    sink = JetStreamSink(stream=stream, subject_prefix=f"bench.{stream.lower()}")
    relay = OutboxRelay(database, {FIN: sink}, SystemClock())
    try:
        from product_shop.events.types import FINANCE_ORDER_RECORDED

        orders = events * 2 // 3
        emit_orders(database, orders // 2, (FINANCE_ORDER_RECORDED, REVENUE_SALE))
        emit_orders(database, orders - orders // 2, (FINANCE_ORDER_RECORDED,))
        total = undelivered(database, FIN)
        started = time.perf_counter()
        drain(relay, FIN)
        elapsed = time.perf_counter() - started
        return total / elapsed
    finally:
        relay.close()
        sink.close()
        asyncio.run(_delete_stream(stream))


async def _delete_stream(stream: str) -> None:
    import nats

    connection = await nats.connect("nats://127.0.0.1:4222")
    try:
        await connection.jetstream().delete_stream(stream)
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--order-rate", type=float, default=60.0)
    parser.add_argument("--outage", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None, help="Write the results here too")
    args = parser.parse_args()
    admin_url = os.environ.get(
        "PRODUCT_SHOP_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    url = prepare_database(admin_url)
    database = Database(url)
    port = free_port()
    receivers = subprocess.Popen(
        [sys.executable, "-m", "product_shop", "simulate", "receivers", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/_simulator/received", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        results: dict[str, object] = {
            "machine": f"{platform.node()} {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
        }
        sink = WebhookSink(f"{base}/{CH}", demo_destination_secret(CH))
        relay = OutboxRelay(database, {CH: sink}, SystemClock())
        rate = throughput(database, relay, CH, args.events)
        relay.close()
        sink.close()
        httpx.delete(f"{base}/_simulator/received")
        results["webhook_events_per_second"] = round(rate, 1)
        print(f"webhook (Communication Hub): {rate:.1f} deliveries/s", flush=True)
        js_rate = jetstream_throughput(database, args.events)
        results["jetstream_events_per_second"] = round(js_rate, 1) if js_rate else None
        print(f"JetStream (Finance): {js_rate:.1f} deliveries/s", flush=True)
        print(
            f"outage: Communication Hub down {args.outage:.0f} s at {args.order_rate} orders/s...",
            flush=True,
        )
        results["outage"] = outage(database, base, args.order_rate, args.outage)
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        receivers.terminate()
        receivers.wait(10)
        database.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
