"""AI summaries of a practice's recommendation and order activity, for its staff (spec §7 "AI MAY
summarise order or recommendation activity for staff review").

The figures are counted here, from the recommendations, orders and suggestions themselves (one
source of truth); the AI's writer is given only those figures and turns them into sentences
under its own actor, which may write a summary and nothing else. The summary is audited, comes
with the figures it rests on, is never shown to patients and commits the practice to nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.catalogue.tables import Product
from product_shop.checkout.tables import CheckoutLine
from product_shop.core.clock import Clock
from product_shop.core.ids import new_id
from product_shop.orders.tables import Order
from product_shop.recommendations.ai.port import ActivityFigures, SummaryWriter
from product_shop.recommendations.conversion import conversion
from product_shop.recommendations.suggestion_schemas import ActivityFiguresOut, AiSummaryOut
from product_shop.recommendations.tables import AiSuggestion, Recommendation

TOP_CATEGORIES = 3


class SummaryService:
    def __init__(self, *, writer: SummaryWriter, audit: AuditLog, clock: Clock) -> None:
        self._writer = writer
        self._audit = audit
        self._clock = clock

    def recommendations_summary(
        self, session: Session, actor: Actor, start: datetime, end: datetime
    ) -> AiSummaryOut:
        require(actor, Action.VIEW_AI_SUMMARIES)
        practice_id = actor.practice_id
        assert practice_id is not None  # a practice role
        now = self._clock.now()
        figures = activity(session, practice_id, start, end, now=now)
        writer = self._writer.info
        ai = Actor.ai(writer.name, writer.version, practice_id)
        require(ai, Action.WRITE_AI_SUMMARY)
        text = self._writer.summarise(figures)
        self._audit.record(
            session,
            stream_type="ai_summary",
            stream_id=new_id(),
            new_stream=True,
            action="ai_summary.written",
            actor=ai.audit_actor(),
            practice_id=practice_id,
            after={
                "requested_by": actor.actor_id,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "summary": text,
            },
            at=now,
        )
        made = figures.recommendations_made
        return AiSummaryOut(
            practice_id=practice_id,
            from_=start,
            to=end,
            summary=text,
            figures=ActivityFiguresOut(
                recommendations_made=made,
                recommendations_withdrawn=figures.recommendations_withdrawn,
                patients_recommended=figures.patients_recommended,
                recommendations_purchased=figures.recommendations_purchased,
                conversion_rate=(figures.recommendations_purchased / made) if made else None,
                orders=figures.orders,
                orders_from_recommendations=figures.orders_from_recommendations,
                revenue_minor=figures.revenue_minor,
                currency=figures.currency,
                suggestions_pending=figures.suggestions_pending,
                suggestions_approved=figures.suggestions_approved,
                suggestions_rejected=figures.suggestions_rejected,
                suggestions_expired=figures.suggestions_expired,
                top_categories=list(figures.top_categories),
            ),
            written_by=f"{writer.name} {writer.version}",
        )


def activity(
    session: Session, practice_id: uuid.UUID, start: datetime, end: datetime, *, now: datetime
) -> ActivityFigures:
    """The practice's activity in [start, end): recommendations made (and how many of them were
    bought), withdrawn, the patients they were for, paid orders and their revenue (captured
    and redeemed value, before refunds), orders with a recommended line, and the AI
    suggestions made, by what became of them (an undecided one past its lifetime is expired)."""
    made = conversion(session, practice_id, start, end)
    in_period = (
        Recommendation.practice_id == practice_id,
        Recommendation.created_at >= start,
        Recommendation.created_at < end,
    )
    patients = session.scalar(
        select(func.count(distinct(Recommendation.patient_id))).where(*in_period)
    )
    withdrawn = session.scalar(
        select(func.count()).where(
            Recommendation.practice_id == practice_id,
            Recommendation.withdrawn_at >= start,
            Recommendation.withdrawn_at < end,
        )
    )
    categories = session.execute(
        select(Product.category, func.count())
        .select_from(Recommendation)
        .join(Product, Product.product_id == Recommendation.product_id)
        .where(*in_period)
        .group_by(Product.category)
        .order_by(func.count().desc(), Product.category)
        .limit(TOP_CATEGORIES)
    ).all()
    recommended_line = (
        select(CheckoutLine.checkout_id)
        .where(
            CheckoutLine.checkout_id == Order.checkout_id,
            CheckoutLine.recommendation_id.is_not(None),
        )
        .exists()
    )
    orders, revenue, from_recommendations = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Order.total_minor), 0),
            func.count().filter(recommended_line),
        ).where(Order.practice_id == practice_id, Order.created_at >= start, Order.created_at < end)
    ).one()
    currency = session.scalar(
        select(Order.currency)
        .where(Order.practice_id == practice_id, Order.created_at >= start, Order.created_at < end)
        .limit(1)
    )
    effective = case(
        (and_(AiSuggestion.status == "pending", AiSuggestion.expires_at <= now), "expired"),
        else_=AiSuggestion.status,
    )
    by_status: dict[str, int] = {"pending": 0, "approved": 0, "rejected": 0, "expired": 0}
    for status, count in session.execute(
        select(effective, func.count())
        .where(
            AiSuggestion.practice_id == practice_id,
            AiSuggestion.created_at >= start,
            AiSuggestion.created_at < end,
        )
        .group_by(effective)
    ):
        by_status[status] += count
    return ActivityFigures(
        period_from=start.isoformat(),
        period_to=end.isoformat(),
        currency=currency,
        recommendations_made=made.recommendations,
        recommendations_withdrawn=withdrawn or 0,
        patients_recommended=patients or 0,
        recommendations_purchased=made.converted,
        orders=orders,
        orders_from_recommendations=from_recommendations,
        revenue_minor=int(revenue),
        suggestions_pending=by_status["pending"],
        suggestions_approved=by_status["approved"],
        suggestions_rejected=by_status["rejected"],
        suggestions_expired=by_status["expired"],
        top_categories=tuple((category, count) for category, count in categories),
    )
