"""encrypt tracking: an order line's tracking number and tracking URL (they lead to the recipient
at the carrier) are stored encrypted like the other personal fields of 0017 (`db/encrypted.py`).
`order_lines.tracking_number` becomes TEXT (a token is longer than 120 characters);
`tracking_url` already is. The rows already there are encrypted with the current key of the
keyring the settings describe (the demo key when none is set); downgrading decrypts them again,
with that keyring, and gives `tracking_number` back its VARCHAR(120).

`order_lines` is under row-level security since 0018, forced on its owner too: on PostgreSQL the
rewrite works in the system scope (`db/tenancy.py`), which sees every row. SQLite changes the
column's type by adding a new column, copying, dropping the old one and renaming the new one,
as 0017 does.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from product_shop.core.crypto import current_keyring, is_token

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "order_lines"
KEY = "line_item_id"
COLUMNS = ("tracking_number", "tracking_url")
RETYPED = "tracking_number"  # VARCHAR(120) -> TEXT
BATCH = 500
_KEEP = object()  # a transform's answer: leave the value as it is


def _system_scope() -> None:
    """PostgreSQL: this transaction sees and writes every row of `order_lines` (row-level
    security is forced on the owner too)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT set_config('product_shop.scope', 'system', true)")


def _retype(*, to_text: bool) -> None:
    column = RETYPED
    new_type: Any = sa.Text() if to_text else sa.String(length=120)
    if op.get_bind().dialect.name == "postgresql":
        cast = "text" if to_text else "varchar(120)"
        op.alter_column(
            TABLE,
            column,
            type_=new_type,
            existing_nullable=True,
            postgresql_using=f"{column}::{cast}",
        )
        return
    declared = "TEXT" if to_text else "VARCHAR(120)"
    op.execute(f'ALTER TABLE "{TABLE}" ADD COLUMN "{column}__new" {declared}')
    op.execute(f'UPDATE "{TABLE}" SET "{column}__new" = "{column}"')  # noqa: S608 (our names)
    op.execute(f'ALTER TABLE "{TABLE}" DROP COLUMN "{column}"')
    op.execute(f'ALTER TABLE "{TABLE}" RENAME COLUMN "{column}__new" TO "{column}"')


def _rewrite(column: str, transform: Callable[[Any], Any]) -> None:
    """Each non-NULL value of a column through `transform`, in key order, in batches."""
    bind = op.get_bind()
    t = sa.table(TABLE, sa.column(KEY), sa.column(column, sa.Text()))
    key, value = t.c[KEY], t.c[column]
    after: Any = None
    while True:
        query = sa.select(key, value).where(value.is_not(None))
        if after is not None:
            query = query.where(key > after)
        rows = bind.execute(query.order_by(key).limit(BATCH)).all()
        if not rows:
            return
        for row_key, stored in rows:
            new = transform(stored)
            if new is not _KEEP:
                bind.execute(sa.update(t).where(key == row_key).values({column: new}))
        after = rows[-1][0]


def upgrade() -> None:
    keyring = current_keyring()
    _system_scope()
    _retype(to_text=True)
    for column in COLUMNS:
        context = f"{TABLE}.{column}"

        def seal(value: Any, context: str = context) -> Any:
            if is_token(value):
                return _KEEP
            return keyring.encrypt(str(value).encode(), context)

        _rewrite(column, seal)


def downgrade() -> None:
    keyring = current_keyring()
    _system_scope()
    for column in COLUMNS:
        context = f"{TABLE}.{column}"

        def open_value(value: Any, context: str = context) -> Any:
            if not is_token(value):
                return _KEEP
            return keyring.decrypt(value, context).decode()

        _rewrite(column, open_value)
    _retype(to_text=False)
