"""The `product-shop` commands for events: `relay` (deliver them, its own process at scale),
`events status|redeliver` (operations), and `simulate receivers` (the receiving modules)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from datetime import datetime
from typing import Any

from product_shop.cli_simulators import port, seconds, serve_simulator
from product_shop.config import Settings
from product_shop.core.moments import RANGE, parse_timestamp
from product_shop.core.process import freeze_start_up
from product_shop.events.routing import FEED_DESTINATIONS, Destination
from product_shop.logging import configure_logging, get_logger

log = get_logger("product_shop.cli")


def add_commands(sub: Any) -> None:
    """`relay` and `events` (the subparsers action of the top-level parser)."""
    relay = sub.add_parser("relay", help="Deliver outbox events (its own process at scale)")
    relay.add_argument("--once", action="store_true", help="Deliver what is due, then exit")
    relay.add_argument("--interval", type=seconds, default=1.0)
    relay.set_defaults(handler=_relay)

    events = sub.add_parser("events", help="Event delivery to the other modules")
    events_sub = events.add_subparsers(required=True, metavar="ACTION")
    status = events_sub.add_parser(
        "status", help="Backlog, oldest undelivered age and parked count per destination"
    )
    status.add_argument("--json", action="store_true", help="One JSON document")
    status.set_defaults(handler=_events_status)
    redeliver = events_sub.add_parser("redeliver", help="Queue parked deliveries again")
    redeliver.add_argument("--destination", choices=[d.value for d in Destination], default=None)
    redeliver.add_argument(
        "--since",
        type=aware_time,
        default=None,
        metavar="TIME",
        help="Only events that occurred at or after this ISO 8601 time (with its offset)",
    )
    redeliver.set_defaults(handler=_events_redeliver)


def add_receivers_simulator(simulate_sub: Any) -> None:
    receivers = simulate_sub.add_parser(
        "receivers",
        help="The modules that receive our events over signed webhooks (Communication Hub, "
        "Finance, Financial Insights, Hygiene Subscriptions, module owners)",
    )
    receivers.add_argument("--port", type=port, default=8104)
    receivers.add_argument("--host", default="127.0.0.1")
    receivers.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="DESTINATION=SECRET",
        help="A destination's Standard Webhooks secret (default: its demo secret)",
    )
    receivers.set_defaults(handler=_simulate_receivers)


def aware_time(value: str) -> datetime:
    """An argparse type: an ISO 8601 time with its offset, in the years the service holds."""
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time with its offset (e.g. 2026-11-30T09:00:00+00:00) in {RANGE}:"
            f" {value}"
        ) from exc


def _relay(args: argparse.Namespace) -> int:
    """Deliver until stopped: one loop per destination (`RelayThread`). The background jobs
    (refunds left pending, unpaid checkouts, the audit feed and checkpoints, ...) are
    `product-shop worker`'s."""
    from product_shop.context import AppContext
    from product_shop.events.relay_thread import RelayThread

    settings = Settings()
    settings.check()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.relay_nice:
        os.nice(settings.relay_nice)
    context = AppContext.build(settings)
    try:
        if args.once:
            print(f"delivered {context.relay.run_once()} events")
            return 0
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        freeze_start_up()
        relay = RelayThread(context.relay, args.interval)
        relay.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            relay.stop()
        return 0
    finally:
        context.close()


def _events_status(args: argparse.Namespace) -> int:
    from product_shop.context import AppContext
    from product_shop.events.status import delivery_status

    settings = Settings()
    context = AppContext.build(settings)
    try:
        with context.database.reading() as session:
            status = delivery_status(session, context.clock.now(), context.feeds.kinds)
    finally:
        context.close()
        context.database.dispose()
    if args.json:
        document = {
            "unrouted": status.unrouted,
            "oldest_unrouted_at": status.oldest_unrouted_at,
            "destinations": [d.as_dict() for d in status.destinations],
        }
        print(json.dumps(document, default=str, indent=2))
        return 0
    print(f"{'destination':<24}{'sink':<9}{'pending':>9}{'oldest (s)':>13}{'parked':>9}")
    for d in status.destinations:
        age = f"{d.oldest_pending_age_seconds:.0f}" if d.oldest_pending_age_seconds else "-"
        print(f"{d.destination:<24}{d.sink:<9}{d.pending:>9}{age:>13}{d.parked:>9}")
    print(f"not yet routed: {status.unrouted}")
    return 0


def _events_redeliver(args: argparse.Namespace) -> int:
    from product_shop.context import AppContext

    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    context = AppContext.build(settings)
    try:
        queued = context.relay.redeliver(destination=args.destination, since=args.since)
    finally:
        context.close()
        context.database.dispose()
    log.info("parked_deliveries_queued", queued=queued, destination=args.destination)
    print(f"queued {queued} parked deliveries again")
    return 0


def _simulate_receivers(args: argparse.Namespace) -> int:
    import sys

    from product_shop.core.signing import demo_destination_secret
    from product_shop.simulators.receivers import (
        ReceiversSimulatorConfig,
        create_receivers_simulator,
    )

    configure_logging("INFO", json=True)
    secrets = {d.value: demo_destination_secret(d.value) for d in FEED_DESTINATIONS}
    try:
        for option in args.secret:
            key, _, secret = option.partition("=")
            if key not in secrets or not secret:
                raise ValueError(f"--secret {key}=...: known destinations {', '.join(secrets)}")
            secrets[key] = secret
        app = create_receivers_simulator(ReceiversSimulatorConfig(secrets=secrets))
    except ValueError as exc:
        print(f"product-shop simulate receivers: {exc}", file=sys.stderr)
        return 2
    serve_simulator(app, args)
    return 0
