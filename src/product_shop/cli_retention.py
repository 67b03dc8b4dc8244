"""`product-shop retention [--dry-run] [--json]`: erase the personal data of orders placed longer
ago than `retention_days` (`orders/retention.py`, `jobs/retention.py`); with `--dry-run`, list
what would change and change nothing. Prints order ids and field names with counts, never a
personal value."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from product_shop.config import Settings
from product_shop.logging import configure_logging

if TYPE_CHECKING:
    from product_shop.jobs.retention import RetentionReport


def add_commands(sub: Any) -> None:
    """`retention` (the subparsers action of the top-level parser)."""
    retention = sub.add_parser(
        "retention",
        help="Erase the personal data of orders past the retention period (retention_days); "
        "amounts, dates and references stay",
    )
    retention.add_argument(
        "--dry-run", action="store_true", help="List what would change; change nothing"
    )
    retention.add_argument("--json", action="store_true", help="The report as one JSON document")
    retention.set_defaults(handler=_retention)


def _retention(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from product_shop.jobs.retention import configured

    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        with configured(settings) as job:
            report = job.run_once(dry_run=args.dry_run)
    except DBAPIError as exc:
        print(
            "product-shop: the database could not be read for retention"
            f" ({type(exc).__name__}); is it migrated (`product-shop db upgrade`)?",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(_text(report))
    return 0


def _text(report: RetentionReport) -> str:
    verb = "would erase" if report.dry_run else "erased"
    lines = [
        f"retention{' (dry run)' if report.dry_run else ''}: orders placed before"
        f" {report.cutoff.isoformat()} ({report.retention_days} days)",
        f"{verb} the personal data of {len(report.orders)} order(s)",
    ]
    for erasure in report.orders:
        fields = ", ".join(f"{name} ({count})" for name, count in sorted(erasure.fields.items()))
        lines.append(
            f"  {erasure.order_id} ordered {erasure.ordered_at.isoformat()}: {fields or '-'}"
        )
    if report.more_due:
        lines.append("more may be due: run again")
    return "\n".join(lines)
