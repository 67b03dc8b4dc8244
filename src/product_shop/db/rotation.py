"""Key rotation for the encrypted columns (`db/encrypted.py`; `product-shop keys rotate`).

Every value of an encrypted column not sealed under the keyring's current key is decrypted with
the key its token names and encrypted again with the current one. Columns are walked in primary
key order, `batch_size` rows at a time, each batch in a unit of work of its own, reading only
the rows still to do (`NOT LIKE 'v1.<current>.%'`). A batch's update names the token it read,
so a value changed meanwhile by a request is left alone (it was written under the current key).
Interrupted, it is simply run again: what is done is not read twice. A value found in plaintext
(written before encryption, outside the migration) is sealed too.

The values are read and written as raw text (untyped columns): nothing here depends on the
process-wide keyring; the keyring is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import CursorResult

from product_shop.core.crypto import TOKEN_VERSION, Keyring, is_token, key_id_of
from product_shop.db.encrypted import ENCRYPTED_COLUMNS, EncryptedJSON
from product_shop.db.engine import Database
from product_shop.db.models import metadata

__all__ = ["ColumnRotation", "key_counts", "rotate"]


@dataclass
class ColumnRotation:
    """What a rotation did to one column."""

    column: str  # table.column
    scanned: int = 0
    rotated: int = 0  # tokens under another key, now under the current one
    sealed: int = 0  # plaintext values, now encrypted
    skipped: int = 0  # changed by someone else meanwhile (already current)
    batches: int = 0
    by_key: dict[str, int] = field(default_factory=dict)  # old key id -> values rotated


def _raw_table(table_name: str, column: str) -> tuple[sa.TableClause, list[sa.ColumnClause[Any]]]:
    """The table with its primary key and `column` as untyped columns: values as stored."""
    keys = [c.name for c in metadata.tables[table_name].primary_key.columns]
    table = sa.table(table_name, *(sa.column(k) for k in keys), sa.column(column, sa.Text()))
    return table, [table.c[k] for k in keys]


def _is_json(table_name: str, column: str) -> bool:
    return isinstance(metadata.tables[table_name].c[column].type, EncryptedJSON)


def key_counts(database: Database, keyring: Keyring) -> dict[str, dict[str, int]]:
    """Per encrypted column: how many values each key id of the keyring holds, and `other`
    (a key the keyring does not hold, or plaintext)."""
    counts: dict[str, dict[str, int]] = {}
    with database.unit_of_work() as session:
        for table_name, columns in ENCRYPTED_COLUMNS.items():
            for column in columns:
                table, _ = _raw_table(table_name, column)
                value = table.c[column]
                total = session.execute(
                    sa.select(sa.func.count()).select_from(table).where(value.is_not(None))
                ).scalar_one()
                found: dict[str, int] = {}
                for key_id in sorted(keyring.keys):
                    found[key_id] = session.execute(
                        sa.select(sa.func.count())
                        .select_from(table)
                        .where(value.startswith(f"{TOKEN_VERSION}.{key_id}.", autoescape=True))
                    ).scalar_one()
                found["other"] = total - sum(found.values())
                counts[f"{table_name}.{column}"] = found
    return counts


def rotate(
    database: Database,
    keyring: Keyring,
    *,
    batch_size: int = 500,
    progress: Callable[[ColumnRotation], None] | None = None,
) -> list[ColumnRotation]:
    """Re-encrypt every encrypted value not under `keyring.current_id` (see the module)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = []
    for table_name, columns in ENCRYPTED_COLUMNS.items():
        for column in columns:
            done = _rotate_column(database, keyring, table_name, column, batch_size, progress)
            report.append(done)
    return report


def _rotate_column(
    database: Database,
    keyring: Keyring,
    table_name: str,
    column: str,
    batch_size: int,
    progress: Callable[[ColumnRotation], None] | None,
) -> ColumnRotation:
    context = f"{table_name}.{column}"
    as_json = _is_json(table_name, column)
    table, keys = _raw_table(table_name, column)
    value = table.c[column]
    current = f"{TOKEN_VERSION}.{keyring.current_id}."
    outcome = ColumnRotation(context)
    after: tuple[Any, ...] | None = None
    while True:
        query = sa.select(*keys, value).where(
            value.is_not(None), sa.not_(value.startswith(current, autoescape=True))
        )
        if after is not None:
            query = query.where(sa.tuple_(*keys) > sa.tuple_(*after))
        with database.unit_of_work() as session:
            rows = session.execute(query.order_by(*keys).limit(batch_size)).all()
            if not rows:
                return outcome
            for row in rows:
                stored: str = row[-1]
                outcome.scanned += 1
                old_key = key_id_of(stored) if is_token(stored) else ""
                plain = keyring.decrypt(stored, context) if old_key else _plaintext(stored, as_json)
                if plain is None:
                    continue
                sealed = keyring.encrypt(plain, context)
                where = sa.and_(
                    *(k == v for k, v in zip(keys, row[:-1], strict=True)), value == stored
                )
                result = cast(
                    CursorResult[Any],
                    session.execute(sa.update(table).where(where).values({column: sealed})),
                )
                if result.rowcount != 1:
                    outcome.skipped += 1
                elif old_key:
                    outcome.rotated += 1
                    outcome.by_key[old_key] = outcome.by_key.get(old_key, 0) + 1
                else:
                    outcome.sealed += 1
        outcome.batches += 1
        after = tuple(rows[-1][:-1])
        if progress is not None:
            progress(outcome)


def _plaintext(stored: str, as_json: bool) -> bytes | None:
    """A plaintext value's bytes as the column type seals them (None: a JSON null, left)."""
    if not as_json:
        return stored.encode()
    document = json.loads(stored)
    if document is None:
        return None
    return json.dumps(document, default=str, separators=(",", ":")).encode()
