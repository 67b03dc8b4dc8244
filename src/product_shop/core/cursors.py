"""Keyset page cursors: (time, id) of the last row a page gave, opaque to the client.

Every list that pages newest first by (created_at, id) uses these, so a cursor is read the same
everywhere and a forged or mangled one is 400 `invalid_cursor`, never a 500."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from product_shop.core.errors import BadRequest
from product_shop.core.moments import parse_timestamp


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        # Ours are aware and in range; a naive or out-of-range one would fail in the query.
        return parse_timestamp(at), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(
            "The cursor is not valid; start again without one.", code="invalid_cursor"
        ) from exc
