"""AI suggestions behind the staff approval gate (spec §4.1, §7, §8, §11.1): what staff do with
the pending suggestions an ended appointment left (`suggestion_intake.py`). Staff see them; a
named clinician or staff member approves one (it becomes a recommendation attributed to them:
the only way a suggestion ever reaches a patient) or rejects it with a reason. Approval and
rejection are audited. A suggestion left undecided past its lifetime is expired and can no
longer be approved.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.isolation import same, scoped
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.catalogue import repository as catalogue
from product_shop.catalogue import views
from product_shop.catalogue.tables import Product
from product_shop.core.clock import Clock
from product_shop.core.cursors import decode_cursor, encode_cursor
from product_shop.core.errors import Conflict, Forbidden, NotFound
from product_shop.recommendations.service import RecommendationService
from product_shop.recommendations.suggestion_schemas import (
    AppointmentOut,
    ApproveIn,
    RejectIn,
    SuggestedProduct,
    SuggestionList,
    SuggestionOut,
    SuggestionStatus,
)
from product_shop.recommendations.tables import AiSuggestion, AppointmentContext

PAGE_LIMIT = 200


class SuggestionService:
    def __init__(
        self,
        *,
        recommendations: RecommendationService,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self._recommendations = recommendations
        self._audit = audit
        self._clock = clock

    def list_for_practice(
        self,
        session: Session,
        actor: Actor,
        *,
        status: SuggestionStatus | None = None,
        patient_id: uuid.UUID | None = None,
        cursor: str | None = None,
        limit: int = PAGE_LIMIT,
    ) -> SuggestionList:
        """The practice's suggestions, newest first; by status (an undecided one past its
        lifetime counts as expired) and patient when asked."""
        require(actor, Action.VIEW_AI_SUGGESTIONS)
        limit = max(1, min(limit, PAGE_LIMIT))
        now = self._clock.now()
        statement = (
            select(AiSuggestion, AppointmentContext, Product)
            .join(
                AppointmentContext,
                AppointmentContext.appointment_context_id == AiSuggestion.appointment_context_id,
            )
            .join(Product, Product.product_id == AiSuggestion.product_id)
            .where(scoped(AiSuggestion.practice_id, actor.practice_id))
        )
        if status == "pending":
            statement = statement.where(
                AiSuggestion.status == "pending", AiSuggestion.expires_at > now
            )
        elif status == "expired":
            statement = statement.where(
                or_(
                    AiSuggestion.status == "expired",
                    and_(AiSuggestion.status == "pending", AiSuggestion.expires_at <= now),
                )
            )
        elif status is not None:
            statement = statement.where(AiSuggestion.status == status)
        if patient_id is not None:
            statement = statement.where(AiSuggestion.patient_id == patient_id)
        if cursor is not None:
            at, last = decode_cursor(cursor)
            statement = statement.where(
                or_(
                    AiSuggestion.created_at < at,
                    and_(AiSuggestion.created_at == at, AiSuggestion.suggestion_id < last),
                )
            )
        rows = session.execute(
            statement.order_by(
                AiSuggestion.created_at.desc(), AiSuggestion.suggestion_id.desc()
            ).limit(limit + 1)
        ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        purchasable = self._purchasable(session, actor.practice_id, [r[2] for r in rows])
        items = [self._out(s, c, p, purchasable, now) for s, c, p in rows]
        return SuggestionList(
            items=items,
            next_cursor=encode_cursor(rows[-1][0].created_at, rows[-1][0].suggestion_id)
            if more and rows
            else None,
        )

    def get(self, session: Session, actor: Actor, suggestion_id: uuid.UUID) -> SuggestionOut:
        require(actor, Action.VIEW_AI_SUGGESTIONS)
        row = session.get(AiSuggestion, suggestion_id)
        if row is None or not same(row.practice_id, actor.practice_id):
            raise NotFound("No such suggestion.")
        return self._present(session, row)

    def approve(
        self, session: Session, actor: Actor, suggestion_id: uuid.UUID, data: ApproveIn
    ) -> SuggestionOut:
        """A named clinician or staff member approves: the suggestion becomes a recommendation
        attributed to them (the patient sees it from now on), with their note if they give
        one. Only a pending, unexpired suggestion of their practice (409 otherwise)."""
        row, context = self._decidable(session, actor, suggestion_id)
        now = self._clock.now()
        product = self._recommendations.recommendable(session, row.practice_id, [row.product_id])[
            row.product_id
        ]
        made = self._recommendations.add(
            session,
            actor,
            row.patient_id,
            product,
            note=data.note,
            appointment_id=context.appointment_id,
            at=now,
            suggestion_id=row.suggestion_id,
        )
        session.flush()  # the recommendation exists before the suggestion names it
        self._decide(row, actor, "approved", now, reason=None)
        row.recommendation_id = made.recommendation_id
        self._audit.record(
            session,
            stream_type="ai_suggestion",
            stream_id=row.suggestion_id,
            action="ai_suggestion.approved",
            actor=actor.audit_actor(),
            practice_id=row.practice_id,
            before={"status": "pending"},
            after={
                "status": "approved",
                "recommendation_id": str(made.recommendation_id),
                "has_note": data.note is not None,
            },
            at=now,
        )
        session.flush()
        return self._present(session, row)

    def reject(
        self, session: Session, actor: Actor, suggestion_id: uuid.UUID, data: RejectIn
    ) -> SuggestionOut:
        """A named clinician or staff member rejects, with a reason: it never reaches the
        patient."""
        row, _context = self._decidable(session, actor, suggestion_id)
        now = self._clock.now()
        self._decide(row, actor, "rejected", now, reason=data.reason)
        self._audit.record(
            session,
            stream_type="ai_suggestion",
            stream_id=row.suggestion_id,
            action="ai_suggestion.rejected",
            actor=actor.audit_actor(),
            practice_id=row.practice_id,
            before={"status": "pending"},
            after={"status": "rejected", "has_reason": bool(data.reason)},
            at=now,
        )
        session.flush()
        return self._present(session, row)

    def _decidable(
        self, session: Session, actor: Actor, suggestion_id: uuid.UUID
    ) -> tuple[AiSuggestion, AppointmentContext]:
        require(actor, Action.DECIDE_AI_SUGGESTIONS)
        if not actor.actor_id or not actor.name:
            raise Forbidden(
                "A suggestion is approved or rejected by a named clinician or staff member; "
                "the token names nobody."
            )
        row = session.get(AiSuggestion, suggestion_id, with_for_update=True)
        if row is None or not same(row.practice_id, actor.practice_id):
            raise NotFound("No such suggestion.")
        if row.status != "pending":
            raise Conflict(
                f"The suggestion is already {row.status}.",
                code="suggestion_decided",
                current_status=row.status,
            )
        if row.expires_at <= self._clock.now():
            raise Conflict(
                "The suggestion expired undecided; it can no longer be approved or rejected.",
                code="suggestion_expired",
            )
        context = session.get(AppointmentContext, row.appointment_context_id)
        assert context is not None  # a foreign key
        return row, context

    @staticmethod
    def _decide(
        row: AiSuggestion, actor: Actor, status: str, now: datetime, *, reason: str | None
    ) -> None:
        row.status = status
        row.decided_at = now
        row.decided_by = actor.actor_id
        row.decided_by_name = actor.name
        row.decided_by_role = actor.role.value
        row.decision_reason = reason

    def _present(self, session: Session, row: AiSuggestion) -> SuggestionOut:
        context = session.get(AppointmentContext, row.appointment_context_id)
        product = session.get(Product, row.product_id)
        assert context is not None  # a foreign key
        assert product is not None  # a foreign key
        purchasable = self._purchasable(session, row.practice_id, [product])
        return self._out(row, context, product, purchasable, self._clock.now())

    @staticmethod
    def _purchasable(
        session: Session, practice_id: uuid.UUID | None, products: list[Product]
    ) -> set[uuid.UUID]:
        if not products or practice_id is None:
            return set()
        return {
            product.product_id
            for product, setting in catalogue.products_with_settings(
                session, practice_id, product_ids=list({p.product_id for p in products})
            )
            if (item := views.item("patient", product, setting)) is not None and item.purchasable
        }

    @staticmethod
    def _out(
        row: AiSuggestion,
        context: AppointmentContext,
        product: Product,
        purchasable: set[uuid.UUID],
        now: datetime,
    ) -> SuggestionOut:
        status = row.status
        if status == "pending" and row.expires_at <= now:
            status = "expired"
        return SuggestionOut(
            suggestion_id=row.suggestion_id,
            practice_id=row.practice_id,
            patient_id=row.patient_id,
            product=SuggestedProduct(
                product_id=product.product_id,
                name=product.name,
                category=product.category,
                purchasable=product.product_id in purchasable,
            ),
            engine=row.engine,
            engine_version=row.engine_version,
            rationale=row.rationale,
            score=row.score,
            status=status,
            created_at=row.created_at,
            expires_at=row.expires_at,
            appointment=AppointmentOut(
                appointment_id=context.appointment_id,
                clinician_id=context.clinician_id,
                clinician_name=context.clinician_name,
                treatment_codes=list(context.treatment_codes),
                reason=context.reason,
                ended_at=context.ended_at,
            ),
            decided_at=row.decided_at,
            decided_by=row.decided_by,
            decided_by_name=row.decided_by_name,
            decided_by_role=row.decided_by_role,
            decision_reason=row.decision_reason,
            recommendation_id=row.recommendation_id,
        )
