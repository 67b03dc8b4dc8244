"""Encrypted column types (`core/crypto.py`): the ORM, Core and `db.fast` (which applies each
column type's bind and result processors on both engines) read and write plaintext Python
values; the database holds only `v1.<key_id>.<...>` tokens, as TEXT.

Each column is declared with its place, `"table.column"`, which is the associated data of its
tokens: a token moved to another column does not decrypt. These columns cannot be compared
or searched in SQL (each encryption of a value differs); only NULL tests work (None is stored
as SQL NULL, never encrypted).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from product_shop.core.crypto import current_keyring
from product_shop.db.base import json_default

__all__ = ["ENCRYPTED_COLUMNS", "EncryptedJSON", "EncryptedText"]

# Every encrypted column by table, for key rotation, the migration and the tests.
ENCRYPTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "checkouts": ("delivery_address", "patient_first_name"),
    "refunds": ("note",),
    "cancellation_requests": ("reason",),
    "recommendations": ("note",),
    "appointment_contexts": ("reason",),
    "ai_suggestions": ("inputs", "decision_reason"),
    "idempotency_keys": ("response_body",),
    "outbox_events": ("data",),
    "order_lines": ("tracking_number", "tracking_url"),
    "portal_sessions": ("claims", "pending"),
}


class EncryptedText(TypeDecorator[str]):
    """A text value stored encrypted."""

    impl = Text
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return current_keyring().encrypt(value.encode(), self.context)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return current_keyring().decrypt(value, self.context).decode()


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON document stored encrypted (its compact JSON text, sealed). Python None is SQL
    NULL (a JSON column would have stored JSON null)."""

    impl = Text
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        text = json.dumps(value, default=json_default, separators=(",", ":"))
        return current_keyring().encrypt(text.encode(), self.context)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(current_keyring().decrypt(value, self.context))
