"""The `product-shop` commands for the audit log: `audit verify` (every chain and checkpoint),
`audit export` (JSON lines for Audit & Compliance), `audit checkpoint` (take one now); and
`db grant` (the service role's privileges, docs/audit.md)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from product_shop.cli_events import aware_time
from product_shop.config import Settings
from product_shop.logging import configure_logging


def add_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="The audit log: verify, export, checkpoint")
    audit_sub = audit.add_subparsers(required=True, metavar="ACTION")

    verify = audit_sub.add_parser(
        "verify", help="Walk every chain and checkpoint; exit 0 only when all is intact"
    )
    _data_dir(verify)
    verify.add_argument("--quiet", action="store_true", help="No progress lines")
    verify.set_defaults(handler=_verify)

    export = audit_sub.add_parser("export", help="Entries and checkpoints as JSON lines")
    _data_dir(export)
    export.add_argument("--since", type=aware_time, required=True)
    export.add_argument("--until", type=aware_time, default=None)
    export.add_argument("--format", choices=("jsonl",), default="jsonl")
    export.add_argument("--output", type=Path, default=None, help="Default: standard output")
    export.set_defaults(handler=_export)

    checkpoint = audit_sub.add_parser("checkpoint", help="Take a checkpoint now")
    _data_dir(checkpoint)
    checkpoint.set_defaults(handler=_checkpoint)


def add_db_commands(db_sub: Any) -> None:
    """`db grant` (beside `db upgrade|current|revision`)."""
    grant = db_sub.add_parser(
        "grant",
        help="Grant the service role its privileges (run as the owner, after migrate)",
    )
    grant.add_argument("role")
    grant.add_argument("--create", action="store_true", help="Create the role when missing")
    grant.set_defaults(handler=_grant)


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="The embedded default's data directory (as `make demo`); without it, the"
        " configured database (PRODUCT_SHOP_DATABASE_URL)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    if args.data_dir is not None:
        from product_shop.demo.runtime import demo_settings

        settings = demo_settings(args.data_dir)
        url = settings.database_url
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            raise SystemExit(
                f"product-shop: {args.data_dir} holds no embedded database; run `make demo`"
                " first, or leave out --data-dir for the configured database"
            )
        return settings
    return Settings()


def _database_error(exc: Exception) -> int:
    print(
        "product-shop: the database could not be read as Product Shop's audit log"
        f" ({type(exc).__name__}); is it migrated (`product-shop db upgrade`)?",
        file=sys.stderr,
    )
    return 2


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise SystemExit("product-shop: --since/--until need a time zone, e.g. 2026-11-30T00:00Z")
    return value


def _verify(args: argparse.Namespace) -> int:
    from product_shop.audit.verify import Verification, verify
    from product_shop.db.engine import Database

    settings = _settings(args)
    database = Database(settings.database_url)

    def progress(state: Verification) -> None:
        print(
            f"... {state.entries:,} entries in {state.streams:,} streams checked",
            file=sys.stderr,
            flush=True,
        )

    try:
        with database.engine.connect() as connection:
            result = verify(connection, None if args.quiet else progress)
    except DBAPIError as exc:
        return _database_error(exc)
    finally:
        database.dispose()
    summary = (
        f"{result.entries:,} entries in {result.streams:,} streams,"
        f" {result.checkpoints:,} checkpoints"
    )
    if result.intact:
        print(f"intact: {summary}")
        return 0
    print(f"NOT INTACT: {summary}; first problem:")
    print(f"  {result.problems[0]}")
    for problem in result.problems[1:]:
        print(f"  also: {problem}")
    return 1


def _export(args: argparse.Namespace) -> int:
    from product_shop.audit.export import export_lines
    from product_shop.db.engine import Database

    settings = _settings(args)
    since, until = _aware(args.since), _aware(args.until)
    assert since is not None
    database = Database(settings.database_url)
    # To a file: written beside it and moved into place once complete, so an export that fails
    # (the database unreachable, the disk full) leaves the previous file as it was.
    partial = args.output.with_name(f".{args.output.name}.partial") if args.output else None
    out = partial.open("w", encoding="utf-8") if partial else sys.stdout
    count, done = 0, False
    try:
        with database.reading() as session:
            for line in export_lines(session, since, until):
                out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
                count += 1
        done = True
    except DBAPIError as exc:
        return _database_error(exc)
    finally:
        if partial is not None:
            out.close()
            if done:
                partial.replace(args.output)
            else:
                partial.unlink(missing_ok=True)
        database.dispose()
    print(f"exported {count} lines", file=sys.stderr)
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from product_shop.audit.log import AuditLog
    from product_shop.core.clock import SystemClock
    from product_shop.db.engine import Database
    from product_shop.jobs.audit_checkpoint import AuditCheckpointJob

    settings = _settings(args)
    configure_logging(settings.log_level, json=settings.log_json)
    database = Database(settings.database_url)
    clock = SystemClock()
    try:
        taken = AuditCheckpointJob(database, AuditLog(clock), clock).run_once(force=True)
    finally:
        database.dispose()
    if taken is None:
        print("another worker is taking a checkpoint now", file=sys.stderr)
        return 1
    print(
        f"checkpoint {taken.checkpoint_id}: {taken.streams} streams,"
        f" {taken.entries} entries, root {taken.root}"
    )
    return 0


def _grant(args: argparse.Namespace) -> int:
    from product_shop.db.engine import Database
    from product_shop.db.roles import grant_service_role

    settings = Settings()
    database = Database(settings.database_url)
    try:
        if database.dialect != "postgresql":
            print("product-shop: roles are PostgreSQL's; nothing to grant", file=sys.stderr)
            return 2
        with database.engine.begin() as connection:
            for statement in grant_service_role(connection, args.role, create=args.create):
                print(statement)
    finally:
        database.dispose()
    return 0
