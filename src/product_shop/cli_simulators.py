"""`product-shop simulate MODULE`: the other modules' simulators served on their own ports (the
demo runs them in-process; the tests on local ports)."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from starlette.types import ASGIApp

from product_shop.core.process import freeze_start_up
from product_shop.logging import configure_logging


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (1 to 65535): {text}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above zero (at most a day)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text}")
    return value


def serve_simulator(app: ASGIApp, args: argparse.Namespace) -> None:
    """Serve a simulator until stopped, what it built at start-up frozen out of the garbage
    collector's way, as the product's own processes do (`core/process.py`)."""
    freeze_start_up()
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)


def simulate_payments(args: argparse.Namespace) -> int:
    from product_shop.simulators.payments import SimulatorConfig, create_payments_simulator

    configure_logging("INFO", json=True)
    config = SimulatorConfig(
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        callback_url=args.callback_url,
        public_url=f"http://{args.host}:{args.port}",
        duplicate_callback_rate=args.duplicate_rate,
    )
    app = create_payments_simulator(config)
    serve_simulator(app, args)
    return 0


def simulate_suppliers(args: argparse.Namespace) -> int:
    from product_shop.simulators.suppliers import (
        SupplierSimulatorConfig,
        create_suppliers_simulator,
    )

    configure_logging("INFO", json=True)
    dispatch_after = max(0.0, args.dispatch_after)
    deliver_after = max(dispatch_after, args.deliver_after)
    config = SupplierSimulatorConfig(
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        callback_url=args.callback_url,
        dispatch_after_seconds=dispatch_after,
        in_transit_after_seconds=(dispatch_after + deliver_after) / 2,
        deliver_after_seconds=deliver_after,
        auto_advance=True,
    )
    try:
        app = create_suppliers_simulator(config)
    except ValueError as exc:
        print(f"product-shop simulate suppliers: {exc}", file=sys.stderr)
        return 2
    serve_simulator(app, args)
    return 0


def simulate_rewards(args: argparse.Namespace) -> int:
    from product_shop.simulators.rewards import RewardsSimulatorConfig, create_rewards_simulator

    configure_logging("INFO", json=True)
    try:
        practices = dict(_practice_value(option) for option in args.practice)
        config = RewardsSimulatorConfig(
            api_key=args.api_key,
            webhook_secret=args.webhook_secret,
            callback_url=args.callback_url,
            enabled_practices=practices,
            default_balance_points=args.balance,
            duplicate_callback_rate=args.duplicate_rate,
            auto_confirm=True,
        )
        app = create_rewards_simulator(config)
    except ValueError as exc:
        print(f"product-shop simulate rewards: {exc}", file=sys.stderr)
        return 2
    serve_simulator(app, args)
    return 0


def simulate_ai(args: argparse.Namespace) -> int:
    from product_shop.simulators.ai import AiSimulatorConfig, create_ai_simulator

    configure_logging("INFO", json=True)
    try:
        config = AiSimulatorConfig(
            api_key=args.api_key,
            failure_rate=args.failure_rate,
            latency_seconds=args.latency,
            seed=args.seed,
        )
        app = create_ai_simulator(config)
    except ValueError as exc:
        print(f"product-shop simulate ai: {exc}", file=sys.stderr)
        return 2
    serve_simulator(app, args)
    return 0


def simulate_appointments(args: argparse.Namespace) -> int:
    from product_shop.simulators.appointments import (
        AppointmentsSimulatorConfig,
        create_appointments_simulator,
    )

    configure_logging("INFO", json=True)
    try:
        config = AppointmentsSimulatorConfig(
            webhook_secret=args.webhook_secret,
            callback_url=args.callback_url or None,
            duplicate_rate=args.duplicate_rate,
            callback_attempts=args.attempts,
            seed=args.seed,
        )
        app = create_appointments_simulator(config)
    except ValueError as exc:
        print(f"product-shop simulate appointments: {exc}", file=sys.stderr)
        return 2
    serve_simulator(app, args)
    return 0


def _practice_value(option: str) -> tuple[str, int]:
    """`PRACTICE_ID` or `PRACTICE_ID=MINOR_PER_POINT` (--practice)."""
    practice_id, _, value = option.partition("=")
    if not practice_id.strip():
        raise ValueError(f"--practice {option!r}: give a practice id")
    try:
        return practice_id.strip(), int(value) if value else 1
    except ValueError:
        raise ValueError(
            f"--practice {option!r}: the value per point is not a whole number"
        ) from None
