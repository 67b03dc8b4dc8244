from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from product_shop.db.base import Base, UTCDateTime
from product_shop.db.encrypted import EncryptedJSON


class IdempotencyKey(Base):
    """One row per (caller, key): in flight until the first request's transaction commits with
    its response stored here; replayed for at least 24 h."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    operation: Mapped[str] = mapped_column(String(120))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    # Who holds an in-flight claim: completion and release only act with the matching token.
    claim_token: Mapped[str] = mapped_column(String(64), server_default="")
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(
        EncryptedJSON("idempotency_keys.response_body")
    )
    response_location: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
