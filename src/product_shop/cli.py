"""The `product-shop` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import sqlalchemy.exc
from pydantic import ValidationError
from pydantic_settings import SettingsError

from product_shop import (
    cli_access,
    cli_audit,
    cli_demo,
    cli_events,
    cli_jobs,
    cli_simulators,
)
from product_shop import serve as serving
from product_shop.config import ConfigurationError, Settings
from product_shop.core.signing import (
    DEMO_APPOINTMENTS_WEBHOOK_SECRET,
    DEMO_REWARDS_WEBHOOK_SECRET,
    DEMO_SUPPLIER_WEBHOOK_SECRET,
    DEMO_WEBHOOK_SECRET,
)
from product_shop.logging import configure_logging, get_logger

log = get_logger("product_shop.cli")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except ConfigurationError as exc:
        print(f"product-shop: {exc}", file=sys.stderr)
        return 2
    except OPERATOR_ERRORS as exc:
        # What an operator can put right (a setting, the database, a path, a port): one line,
        # no traceback (PRODUCT_SHOP_LOG_LEVEL=DEBUG shows it).
        if os.environ.get("PRODUCT_SHOP_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        print(f"product-shop: {operator_message(exc)}", file=sys.stderr)
        return 2
    return result


# Failures that come from the environment rather than from a bug: settings that do not
# validate, a database that cannot be reached, is not migrated or refuses the role, a file or a
# port that cannot be used.
OPERATOR_ERRORS: tuple[type[BaseException], ...] = (
    ValidationError,
    SettingsError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.ProgrammingError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DataError,
    sqlalchemy.exc.ArgumentError,
    OSError,
)


def operator_message(exc: BaseException) -> str:
    """One line saying what is wrong and where to look."""
    if isinstance(exc, ValidationError | SettingsError):
        fields = []
        if isinstance(exc, ValidationError):
            fields = [
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            ]
        detail = "; ".join(fields) if fields else str(exc).splitlines()[0]
        return f"the settings (PRODUCT_SHOP_*) are not valid: {detail}"
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return (
            f"the database (PRODUCT_SHOP_DATABASE_URL) could not be used: {first[:300]}"
            " (is it running, reachable, migrated with `product-shop db upgrade`?)"
        )
    assert isinstance(exc, OSError)
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}: {str(exc)[:300]}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="product-shop", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="Set up and serve the embedded demo (SQLite + demo data)")
    demo.add_argument("--port", type=cli_simulators.port, default=8000)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Default: $PRODUCT_SHOP_DATA_DIR, else the project's var/ (as make demo)",
    )
    demo.set_defaults(handler=cli_demo.run_demo)

    simulate = sub.add_parser("simulate", help="Serve a simulator of another Primoro module")
    simulate_sub = simulate.add_subparsers(required=True, metavar="MODULE")
    cli_events.add_receivers_simulator(simulate_sub)
    cli_access.add_access_simulator(simulate_sub)
    payments = simulate_sub.add_parser("payments", help="Integrated Payments (DNA Payments)")
    payments.add_argument("--port", type=cli_simulators.port, default=8101)
    payments.add_argument("--host", default="127.0.0.1")
    payments.add_argument("--callback-url", default=None, help="Where signed callbacks go")
    payments.add_argument("--api-key", default="demo-payments-api-key")
    payments.add_argument(
        "--webhook-secret",
        default=DEMO_WEBHOOK_SECRET,
        help="Standard Webhooks secret (whsec_ + base64) shared with the API",
    )
    payments.add_argument("--duplicate-rate", type=float, default=0.3)
    payments.set_defaults(handler=cli_simulators.simulate_payments)
    suppliers = simulate_sub.add_parser("suppliers", help="The supplier network (drop-ship)")
    suppliers.add_argument("--port", type=cli_simulators.port, default=8102)
    suppliers.add_argument("--host", default="127.0.0.1")
    suppliers.add_argument(
        "--callback-url",
        default=None,
        help="Where signed callbacks go, e.g. http://127.0.0.1:8000/v1/webhooks/suppliers",
    )
    suppliers.add_argument("--api-key", default="demo-suppliers-api-key")
    suppliers.add_argument(
        "--webhook-secret",
        default=DEMO_SUPPLIER_WEBHOOK_SECRET,
        help="Standard Webhooks secret (whsec_ + base64) shared with the API",
    )
    suppliers.add_argument(
        "--dispatch-after",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="Dispatch this long after acceptance (default %(default)s)",
    )
    suppliers.add_argument(
        "--deliver-after",
        type=float,
        default=12.0,
        metavar="SECONDS",
        help="Deliver this long after acceptance; in transit halfway from dispatch "
        "(default %(default)s)",
    )
    suppliers.set_defaults(handler=cli_simulators.simulate_suppliers)
    rewards = simulate_sub.add_parser("rewards", help="Rewards Manager (loyalty points)")
    rewards.add_argument("--port", type=cli_simulators.port, default=8103)
    rewards.add_argument("--host", default="127.0.0.1")
    rewards.add_argument(
        "--callback-url",
        default=None,
        help="Where signed callbacks go, e.g. http://127.0.0.1:8000/v1/webhooks/rewards",
    )
    rewards.add_argument("--api-key", default="demo-rewards-api-key")
    rewards.add_argument(
        "--webhook-secret",
        default=DEMO_REWARDS_WEBHOOK_SECRET,
        help="Standard Webhooks secret (whsec_ + base64) shared with the API",
    )
    rewards.add_argument(
        "--practice",
        action="append",
        default=[],
        metavar="PRACTICE_ID[=MINOR_PER_POINT]",
        help="A practice with rewards, its point worth this many minor units (default 1); "
        "repeat for more. Every other practice has none",
    )
    rewards.add_argument(
        "--balance",
        type=int,
        default=5000,
        metavar="POINTS",
        help="Points a patient first seen at a practice with rewards starts with "
        "(default %(default)s)",
    )
    rewards.add_argument("--duplicate-rate", type=float, default=0.3)
    rewards.set_defaults(handler=cli_simulators.simulate_rewards)
    ai = simulate_sub.add_parser("ai", help="The platform AI service (product suggestions)")
    ai.add_argument("--port", type=cli_simulators.port, default=8105)
    ai.add_argument("--host", default="127.0.0.1")
    ai.add_argument(
        "--api-key",
        default="demo-ai-service-api-key",
        help="The bearer key it expects (the API's demo ai_service_api_key by default)",
    )
    ai.add_argument(
        "--failure-rate",
        type=float,
        default=0.0,
        help="Chance a request is answered 503 (default %(default)s)",
    )
    ai.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="How long every answer takes (default %(default)s)",
    )
    ai.add_argument("--seed", type=int, default=None, help="Seed for the failure rate's draws")
    ai.set_defaults(handler=cli_simulators.simulate_ai)
    appointments = simulate_sub.add_parser(
        "appointments",
        help="Appointment Manager (signed appointment.ended events; end one with "
        "POST /_simulator/appointments/end)",
    )
    appointments.add_argument("--port", type=cli_simulators.port, default=8106)
    appointments.add_argument("--host", default="127.0.0.1")
    appointments.add_argument(
        "--callback-url",
        default="http://127.0.0.1:8000/v1/webhooks/appointments",
        help="Where signed events go (default %(default)s, the demo's)",
    )
    appointments.add_argument(
        "--webhook-secret",
        default=DEMO_APPOINTMENTS_WEBHOOK_SECRET,
        help="Standard Webhooks secret (whsec_ + base64) shared with the API",
    )
    appointments.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.3,
        help="Chance an event is delivered twice (default %(default)s)",
    )
    appointments.add_argument(
        "--attempts",
        type=_at_least_one,
        default=4,
        help="Deliveries of one copy before it is given up (default %(default)s)",
    )
    appointments.add_argument("--seed", type=int, default=None, help="Seed for duplicates")
    appointments.set_defaults(handler=cli_simulators.simulate_appointments)

    users = sub.add_parser("demo-users", help="Print the demo users with fresh tokens")
    users.add_argument("--json", action="store_true", help="JSON list (the only format)")
    users.add_argument("--mfa", action="store_true", help="Tokens that carry MFA (amr: mfa)")
    users.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="The demo's directory; default as for demo. Exits 1 if it holds no demo",
    )
    users.set_defaults(handler=_demo_users)

    serve = sub.add_parser(
        "serve", help="Serve the API with settings from PRODUCT_SHOP_* variables"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="Default 127.0.0.1; :: is IPv6 and IPv4, ::1 IPv6 only"
    )
    serve.add_argument("--port", type=cli_simulators.port, default=8000)
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        default=1,
        help="1 (production: one per container or unit); more: a supervisor on this host",
    )
    serve.add_argument(
        "--grace",
        type=cli_simulators.seconds,
        default=serving.DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help="With --workers > 1: how long workers may take to stop before they are killed "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--ssl-certfile",
        type=Path,
        default=None,
        help="Serve HTTPS with this certificate chain (PEM); sets PRODUCT_SHOP_SSL_CERTFILE",
    )
    serve.add_argument(
        "--ssl-keyfile",
        type=Path,
        default=None,
        help="The certificate's private key (PEM); sets PRODUCT_SHOP_SSL_KEYFILE",
    )
    serve.set_defaults(handler=_serve)

    cli_events.add_commands(sub)
    cli_audit.add_commands(sub)
    cli_jobs.add_commands(sub)
    from product_shop import cli_retention  # `retention`: personal data past retention_days

    cli_retention.add_commands(sub)
    from product_shop import cli_keys  # `keys`: field encryption keys, rotation

    cli_keys.add_commands(sub)

    refunds = sub.add_parser("refunds", help="Refunds whose outcome is not known yet")
    refunds_sub = refunds.add_subparsers(required=True, metavar="ACTION")
    settle = refunds_sub.add_parser(
        "settle",
        help="Settle refunds left pending (Integrated Payments did not answer): read each "
        "one's status, never refund twice",
    )
    settle.set_defaults(handler=_refunds_settle)

    db = sub.add_parser("db", help="Database migrations and roles")
    db_sub = db.add_subparsers(required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="Migrate PRODUCT_SHOP_DATABASE_URL to head")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=_db_upgrade)
    current = db_sub.add_parser("current", help="Print the database's revision and the head")
    current.set_defaults(handler=_db_current)
    revision = db_sub.add_parser(
        "revision",
        help="Write the next migration (NNNN_slug.py) into the source tree's migrations",
    )
    revision.add_argument("-m", "--message", required=True, help="What the migration does")
    revision.add_argument(
        "--autogenerate",
        action="store_true",
        help="Fill it with what PRODUCT_SHOP_DATABASE_URL's database (at head) lacks from the "
        "models; without, an empty one to write by hand",
    )
    revision.set_defaults(handler=_db_revision)
    cli_audit.add_db_commands(db_sub)
    return parser


def _demo_users(args: argparse.Namespace) -> int:
    from product_shop.demo.runtime import NoDemo, default_data_dir, demo_users

    try:
        users = demo_users(args.data_dir or default_data_dir(), mfa=args.mfa)
    except NoDemo as exc:
        print(f"product-shop demo-users: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(users, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    # In the environment, so the app's own settings check and every worker process see them.
    for name, value in (("SSL_CERTFILE", args.ssl_certfile), ("SSL_KEYFILE", args.ssl_keyfile)):
        if value is not None:
            os.environ[f"PRODUCT_SHOP_{name}"] = str(value.resolve())
    settings = Settings()
    settings.check()
    configure_logging(settings.log_level, json=settings.log_json)
    return serving.serve(args.host, args.port, workers=args.workers, grace=args.grace)


def _at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _refunds_settle(args: argparse.Namespace) -> int:
    from product_shop.context import AppContext

    settings = Settings()
    settings.check()
    configure_logging(settings.log_level, json=settings.log_json)
    context = AppContext.build(settings)
    try:
        print(f"settled {context.refund_settlement.run_once()} refunds")
        return 0
    finally:
        context.close()


def _db_upgrade(args: argparse.Namespace) -> int:
    from alembic.util import CommandError

    from product_shop.db.engine import make_engine
    from product_shop.db.migrate import current_revision, upgrade

    settings = Settings()
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine, args.revision)
    except CommandError as exc:  # an unknown revision, or one this code does not have
        print(f"product-shop: {exc}", file=sys.stderr)
        return 2
    with engine.connect() as connection:
        now = current_revision(connection)
    engine.dispose()
    if args.revision != "head" and now != args.revision:
        # Alembic moves only forward here: an older revision leaves the database where it is.
        print(
            f"product-shop: the database is at {now}, past {args.revision}; nothing was changed"
            " (an upgrade never goes back)",
            file=sys.stderr,
        )
        return 2
    print(f"migrated to {args.revision}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from product_shop.db.engine import make_engine
    from product_shop.db.migrate import current_revision, head_revision

    with make_engine(Settings().database_url).connect() as connection:
        print(json.dumps({"current": current_revision(connection), "head": head_revision()}))
    return 0


def _db_revision(args: argparse.Namespace) -> int:
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    from product_shop.db.engine import make_engine
    from product_shop.db.migrate import make_revision

    engine = make_engine(Settings().database_url) if args.autogenerate else None
    try:
        # alembic says "Generating <path> ...  done"
        make_revision(args.message, engine=engine, autogenerate=args.autogenerate)
    except (CommandError, OperationalError) as exc:
        hint = " (run `product-shop db upgrade` first)" if "up to date" in str(exc) else ""
        print(f"product-shop db revision: {exc}{hint}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
