"""`product-shop keys status|rotate|generate`: the field encryption keys (`core/crypto.py`,
`db/rotation.py`, docs/security.md).

- `keys status [--json]`: per encrypted column, how many values each key id holds (`other`: a
  key the settings do not hold, or plaintext). Prints counts and key ids, never a key or value.
- `keys rotate [--batch-size N]`: re-encrypt every value not under the current key
  (`encryption_key_id`), a batch per transaction, printing progress; run it again after an
  interruption. Keep the old key in `encryption_keys` until `keys status` shows it holds nothing.
- `keys generate [--id ID]`: print a new random key as `encryption_keys` takes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.exc import DBAPIError

from product_shop.config import ConfigurationError, Settings
from product_shop.core.crypto import KEY_ID, new_key_text
from product_shop.logging import configure_logging


def add_commands(sub: Any) -> None:
    """`keys` (the subparsers action of the top-level parser)."""
    keys = sub.add_parser("keys", help="Field encryption keys: status, rotation, a new key")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    status = actions.add_parser("status", help="Values per key id in every encrypted column")
    status.add_argument("--json", action="store_true", help="The counts as one JSON document")
    status.set_defaults(handler=_status)
    rotate = actions.add_parser(
        "rotate", help="Re-encrypt every value not under the current key, in batches"
    )
    rotate.add_argument(
        "--batch-size", type=int, default=500, help="Rows per transaction (default 500)"
    )
    rotate.set_defaults(handler=_rotate)
    generate = actions.add_parser("generate", help="Print a new random key (base64, 32 bytes)")
    generate.add_argument("--id", default=None, help="Print it as a JSON entry with this key id")
    generate.set_defaults(handler=_generate)


def _setup() -> tuple[Settings, Any] | None:
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        keyring = settings.keyring()
    except ConfigurationError as exc:
        print(f"product-shop: {exc}", file=sys.stderr)
        return None
    return settings, keyring


def _status(args: argparse.Namespace) -> int:
    from product_shop.db.engine import Database
    from product_shop.db.rotation import key_counts

    setup = _setup()
    if setup is None:
        return 2
    settings, keyring = setup
    database = Database(settings.database_url)
    try:
        counts = key_counts(database, keyring)
    except DBAPIError as exc:
        return _unreadable(exc)
    finally:
        database.dispose()
    if args.json:
        print(json.dumps({"current_key_id": keyring.current_id, "columns": counts}, indent=2))
        return 0
    print(f"current key: {keyring.current_id}")
    for column, found in counts.items():
        held = ", ".join(f"{key_id} {count}" for key_id, count in found.items() if count)
        print(f"  {column}: {held or 'empty'}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from product_shop.core.crypto import install_keyring
    from product_shop.db.engine import Database
    from product_shop.db.rotation import ColumnRotation, rotate

    if args.batch_size < 1:
        print("product-shop: --batch-size must be at least 1", file=sys.stderr)
        return 2
    setup = _setup()
    if setup is None:
        return 2
    settings, keyring = setup
    install_keyring(keyring)
    database = Database(settings.database_url)

    def progress(done: ColumnRotation) -> None:
        print(
            f"  {done.column}: batch {done.batches}, {done.rotated} re-encrypted,"
            f" {done.sealed} sealed, {done.skipped} changed meanwhile",
            flush=True,
        )

    print(f"rotating to key {keyring.current_id} (batches of {args.batch_size})", flush=True)
    try:
        report = rotate(database, keyring, batch_size=args.batch_size, progress=progress)
    except DBAPIError as exc:
        return _unreadable(exc)
    finally:
        database.dispose()
    total = sum(done.rotated + done.sealed for done in report)
    for done in report:
        if done.scanned:
            olds = ", ".join(f"{key} {count}" for key, count in sorted(done.by_key.items()))
            print(
                f"{done.column}: {done.rotated} re-encrypted ({olds or '-'}), {done.sealed} sealed"
            )
    print(f"done: {total} value(s) now under key {keyring.current_id}")
    return 0


def _unreadable(exc: Exception) -> int:
    print(
        f"product-shop: the database could not be read ({type(exc).__name__}); is it migrated"
        " (`product-shop db upgrade`)?",
        file=sys.stderr,
    )
    return 2


def _generate(args: argparse.Namespace) -> int:
    key = new_key_text()
    if args.id is None:
        print(key)
        return 0
    if not KEY_ID.match(args.id):
        print("product-shop: a key id is 1-32 letters, digits, '-' or '_'", file=sys.stderr)
        return 2
    print(json.dumps({args.id: key}))
    return 0
