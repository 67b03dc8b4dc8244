"""Recommendation-to-purchase conversion (spec §10.4, §15.4): a checkout line names the
recommendation it came from; a recommendation converted when such a line's checkout became a
paid order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import scoped
from product_shop.checkout.tables import Checkout, CheckoutLine
from product_shop.core.errors import Unprocessable
from product_shop.recommendations.tables import Recommendation


class _Line(Protocol):
    @property
    def product_id(self) -> uuid.UUID: ...
    @property
    def recommendation_id(self) -> uuid.UUID | None: ...


def check_recommended_lines(session: Session, actor: Actor, lines: Sequence[_Line]) -> None:
    """Each line naming a recommendation names one of this patient's active recommendations of
    that very product; else 422 `recommendation_not_found` (another patient's, a withdrawn one
    and an unknown one read the same)."""
    named = {line.recommendation_id: line.product_id for line in lines if line.recommendation_id}
    if not named:
        return
    found = {
        row.recommendation_id: row.product_id
        for row in session.execute(
            select(Recommendation.recommendation_id, Recommendation.product_id).where(
                Recommendation.recommendation_id.in_(list(named)),
                scoped(Recommendation.practice_id, actor.practice_id),
                scoped(Recommendation.patient_id, actor.patient_id),
                Recommendation.status == "active",
            )
        )
    }
    wrong = [str(rid) for rid, product_id in named.items() if found.get(rid) != product_id]
    if wrong:
        raise Unprocessable(
            "A line names a recommendation that is not yours for that product.",
            code="recommendation_not_found",
            recommendation_ids=wrong,
        )


class Conversion(BaseModel):
    practice_id: uuid.UUID
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    recommendations: int = Field(description="Recommendations made in the period")
    converted: int = Field(description="Of those, how many led to a paid order (ever since)")
    rate: float | None = Field(description="converted / recommendations; null when none")

    model_config = {"populate_by_name": True}


def conversion(
    session: Session, practice_id: uuid.UUID, start: datetime, end: datetime
) -> Conversion:
    """The practice's recommendations made in [start, end), and how many of them a paid order
    came from (a checkout line naming it, in a checkout that became an order)."""
    bought = (
        select(CheckoutLine.recommendation_id)
        .join(Checkout, Checkout.checkout_id == CheckoutLine.checkout_id)
        .where(
            CheckoutLine.recommendation_id == Recommendation.recommendation_id,
            Checkout.order_id.is_not(None),
        )
        .exists()
    )
    made, converted = session.execute(
        select(
            func.count(),
            func.count().filter(bought),
        ).where(
            Recommendation.practice_id == practice_id,
            Recommendation.created_at >= start,
            Recommendation.created_at < end,
        )
    ).one()
    return Conversion(
        practice_id=practice_id,
        from_=start,
        to=end,
        recommendations=made,
        converted=converted,
        rate=(converted / made) if made else None,
    )
