"""field encryption: personal free-text fields (delivery addresses, recipient names, notes) and
every copy of them are stored encrypted (AES-GCM, key id with each value; `core/crypto.py`,
`db/encrypted.py`). The JSON columns among them become TEXT (a token), as does the patient's
first name (a token is longer than 80 characters); the rows already there are encrypted with the
current key of the keyring the settings describe (PRODUCT_SHOP_ENCRYPTION_KEYS, ..._KEY_FILE,
..._KEY_ID; the demo key when none is set). Downgrading decrypts them again, with that keyring.

SQLite changes a column's type by adding the new column, copying, dropping the old one and
renaming the new one (no table rebuild: rebuilding `outbox_events` would drop it, and a dropped
table's rows cascade to `event_deliveries` while foreign keys are on). SQLite adds a NOT NULL
column only with a default, so `outbox_events.data` and `ai_suggestions.inputs` keep DEFAULT ''
there (every insert gives a value).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from product_shop.core.crypto import current_keyring, is_token

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (primary key columns, JSON columns, text columns)
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "checkouts": (("checkout_id",), ("delivery_address",), ("patient_first_name",)),
    "refunds": (("refund_id",), (), ("note",)),
    "cancellation_requests": (("request_id",), (), ("reason",)),
    "recommendations": (("recommendation_id",), (), ("note",)),
    "appointment_contexts": (("appointment_context_id",), (), ("reason",)),
    "ai_suggestions": (("suggestion_id",), ("inputs",), ("decision_reason",)),
    "idempotency_keys": (("scope", "key"), ("response_body",), ()),
    "outbox_events": (("position",), ("data",), ()),
}
NOT_NULL = {("outbox_events", "data"), ("ai_suggestions", "inputs")}
# Columns whose type changes (to TEXT), with the type they had.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
RETYPED: dict[tuple[str, str], Any] = {
    ("checkouts", "delivery_address"): JSON_TYPE,
    ("checkouts", "patient_first_name"): sa.String(length=80),
    ("ai_suggestions", "inputs"): JSON_TYPE,
    ("idempotency_keys", "response_body"): JSON_TYPE,
    ("outbox_events", "data"): JSON_TYPE,
}
BATCH = 500
_KEEP = object()  # a transform's answer: leave the value as it is


def _retype(table: str, column: str, new_type: Any, *, to_text: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        cast = "text" if to_text else ("jsonb" if new_type is JSON_TYPE else "varchar(80)")
        op.alter_column(
            table,
            column,
            type_=new_type,
            postgresql_using=f"{column}::{cast}",
            existing_nullable=(table, column) not in NOT_NULL,
        )
        return
    declared = "TEXT" if to_text else ("JSON" if new_type is JSON_TYPE else "VARCHAR(80)")
    not_null = " NOT NULL DEFAULT ''" if (table, column) in NOT_NULL else ""
    op.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}__new" {declared}{not_null}')
    op.execute(f'UPDATE "{table}" SET "{column}__new" = "{column}"')  # noqa: S608 (our names)
    op.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    op.execute(f'ALTER TABLE "{table}" RENAME COLUMN "{column}__new" TO "{column}"')


def _rewrite(
    table: str, keys: tuple[str, ...], column: str, transform: Callable[[Any], Any]
) -> None:
    """Each non-NULL value of a column through `transform`, in key order, in batches."""
    bind = op.get_bind()
    t = sa.table(table, *(sa.column(k) for k in keys), sa.column(column, sa.Text()))
    key_columns = [t.c[k] for k in keys]
    after: tuple[Any, ...] | None = None
    while True:
        query = sa.select(*key_columns, t.c[column]).where(t.c[column].is_not(None))
        if after is not None:
            query = query.where(sa.tuple_(*key_columns) > sa.tuple_(*after))
        rows = bind.execute(query.order_by(*key_columns).limit(BATCH)).all()
        if not rows:
            return
        for row in rows:
            new = transform(row[-1])
            if new is _KEEP:
                continue
            where = sa.and_(*(c == v for c, v in zip(key_columns, row[:-1], strict=True)))
            bind.execute(sa.update(t).where(where).values({column: new}))
        after = tuple(rows[-1][:-1])


def upgrade() -> None:
    keyring = current_keyring()
    for (table, column), _old in RETYPED.items():
        _retype(table, column, sa.Text(), to_text=True)
    for table, (keys, json_columns, text_columns) in COLUMNS.items():
        for column in json_columns:
            context = f"{table}.{column}"

            def seal_json(
                value: Any, context: str = context, nullable: bool = (table, column) not in NOT_NULL
            ) -> Any:
                if is_token(value):
                    return _KEEP
                document = json.loads(value) if isinstance(value, str) else value
                if document is None and nullable:  # JSON null: SQL NULL now
                    return None
                text = json.dumps(document, default=str, separators=(",", ":"))
                return keyring.encrypt(text.encode(), context)

            _rewrite(table, keys, column, seal_json)
        for column in text_columns:
            context = f"{table}.{column}"

            def seal_text(value: Any, context: str = context) -> Any:
                if is_token(value):
                    return _KEEP
                return keyring.encrypt(str(value).encode(), context)

            _rewrite(table, keys, column, seal_text)


def downgrade() -> None:
    keyring = current_keyring()
    for table, (keys, json_columns, text_columns) in COLUMNS.items():
        for column in (*json_columns, *text_columns):
            context = f"{table}.{column}"

            def open_value(value: Any, context: str = context) -> Any:
                if not is_token(value):
                    return _KEEP
                return keyring.decrypt(value, context).decode()

            _rewrite(table, keys, column, open_value)
    for (table, column), old in RETYPED.items():
        _retype(table, column, old, to_text=False)
