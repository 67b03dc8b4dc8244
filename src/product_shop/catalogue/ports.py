"""What the catalogue asks of other areas when a product changes (implemented outside it)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor


class OpenCheckouts(Protocol):
    """Stops unpaid checkouts of a product that can no longer be bought (spec §4.2, §15.2
    rule 7), in the catalogue change's transaction. `practice_id` None: at every practice."""

    def product_unpurchasable(
        self,
        session: Session,
        product_id: uuid.UUID,
        *,
        practice_id: uuid.UUID | None,
        actor: Actor,
        at: datetime,
    ) -> int: ...


class NoOpenCheckouts:
    def product_unpurchasable(
        self,
        session: Session,
        product_id: uuid.UUID,
        *,
        practice_id: uuid.UUID | None,
        actor: Actor,
        at: datetime,
    ) -> int:
        return 0
