"""Recommendations (spec §4.1, §10.3): a clinician of the practice recommends catalogue products
to one of its patients, chairside or after an appointment, with an optional note; staff list
them; a clinician withdraws one; the patient sees their own, framed as their care team's, with
each product's price and availability read from the catalogue at that moment.

Patient-facing product lists come only from the practice's curated catalogue and the patient's
own recommendations: nothing here ranks by what other patients did (spec §4.1: no retail
discovery).
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
from product_shop.catalogue.model import AvailabilityStatus
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.core.clock import Clock
from product_shop.core.cursors import decode_cursor, encode_cursor
from product_shop.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from product_shop.core.ids import new_id
from product_shop.recommendations.schemas import (
    PatientRecommendationList,
    PatientRecommendationOut,
    RecommendationIn,
    RecommendationList,
    RecommendationOut,
    RecommendedProduct,
    WithdrawIn,
)
from product_shop.recommendations.tables import Recommendation

PAGE_LIMIT = 200


class RecommendationService:
    def __init__(self, *, audit: AuditLog, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock

    # ---- the care team --------------------------------------------------------------------

    def recommend(
        self, session: Session, actor: Actor, patient_id: uuid.UUID, data: RecommendationIn
    ) -> RecommendationList:
        """One recommendation per product, for a patient of the clinician's own practice. Each
        product must be one the practice offers and not deprecated; a product the practice
        hides may be recommended (the patient sees it as not purchasable)."""
        require(actor, Action.RECOMMEND_PRODUCTS)
        if len(set(data.product_ids)) != len(data.product_ids):
            raise Unprocessable(
                "Each product may be recommended once per request.", code="duplicate_product"
            )
        practice_id = actor.practice_id
        assert practice_id is not None  # a practice role
        offered = self.recommendable(session, practice_id, data.product_ids)
        now = self._clock.now()
        made = [
            self.add(
                session,
                actor,
                patient_id,
                offered[product_id],
                note=data.note,
                appointment_id=data.appointment_id,
                at=now,
            )
            for product_id in data.product_ids
        ]
        return RecommendationList(items=made)

    @staticmethod
    def recommendable(
        session: Session, practice_id: uuid.UUID, product_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Product]:
        """The products, each one the practice offers and not deprecated (422 otherwise); a
        product the practice hides may be recommended (the patient sees it as not
        purchasable)."""
        offered = {
            product.product_id: (product, setting)
            for product, setting in catalogue.products_with_settings(
                session, practice_id, product_ids=list(product_ids)
            )
        }
        found: dict[uuid.UUID, Product] = {}
        for product_id in product_ids:
            product, setting = offered.get(product_id, (None, None))
            if product is None or setting is None:
                raise Unprocessable(
                    f"Product {product_id} is not in this practice's catalogue.",
                    code="product_not_offered",
                )
            if AvailabilityStatus(product.availability_status) is AvailabilityStatus.DEPRECATED:
                raise Unprocessable(
                    f"Product {product_id} is deprecated and can no longer be recommended.",
                    code="product_not_recommendable",
                )
            found[product_id] = product
        return found

    def add(
        self,
        session: Session,
        actor: Actor,
        patient_id: uuid.UUID,
        product: Product,
        *,
        note: str | None,
        appointment_id: str | None,
        at: datetime,
        suggestion_id: uuid.UUID | None = None,
    ) -> RecommendationOut:
        """One recommendation by `actor` (a clinician recommending, or the named clinician or
        staff member approving an AI suggestion, `suggestion_id`), audited. The caller has
        checked the product (`recommendable`); the actor's right is checked here too, so no
        path makes a recommendation for anyone else (the AI least of all: spec §7)."""
        if suggestion_id is None:
            require(actor, Action.RECOMMEND_PRODUCTS)
        else:
            require(actor, Action.DECIDE_AI_SUGGESTIONS)
        if not actor.name:
            raise Forbidden("A recommendation is made by a named clinician or staff member.")
        practice_id = actor.practice_id
        assert practice_id is not None  # a practice role
        row = Recommendation(
            recommendation_id=new_id(),
            practice_id=practice_id,
            patient_id=patient_id,
            product_id=product.product_id,
            recommended_by=actor.actor_id,
            recommended_by_name=actor.name,
            recommended_by_role=actor.role.value,
            appointment_id=appointment_id,
            note=note,
            status="active",
            created_at=at,
        )
        session.add(row)
        after: dict[str, object] = {
            "patient_id": str(patient_id),
            "product_id": str(product.product_id),
            "appointment_id": appointment_id,
            "has_note": note is not None,
        }
        if suggestion_id is not None:
            after["ai_suggestion_id"] = str(suggestion_id)
        self._audit.record(
            session,
            stream_type="recommendation",
            stream_id=row.recommendation_id,
            new_stream=True,
            action="recommendation.created",
            actor=actor.audit_actor(),
            practice_id=practice_id,
            after=after,
            at=at,
        )
        return _out(row, product)

    def list_for_practice(
        self,
        session: Session,
        actor: Actor,
        *,
        patient_id: uuid.UUID | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = PAGE_LIMIT,
    ) -> RecommendationList:
        """The practice's recommendations, newest first; of one patient when named."""
        require(actor, Action.VIEW_RECOMMENDATIONS)
        limit = max(1, min(limit, PAGE_LIMIT))
        statement = (
            select(Recommendation, Product)
            .join(Product, Product.product_id == Recommendation.product_id)
            .where(scoped(Recommendation.practice_id, actor.practice_id))
        )
        if patient_id is not None:
            statement = statement.where(Recommendation.patient_id == patient_id)
        if status is not None:
            statement = statement.where(Recommendation.status == status)
        if cursor is not None:
            at, last = decode_cursor(cursor)
            statement = statement.where(
                or_(
                    Recommendation.created_at < at,
                    and_(Recommendation.created_at == at, Recommendation.recommendation_id < last),
                )
            )
        rows = session.execute(
            statement.order_by(
                Recommendation.created_at.desc(), Recommendation.recommendation_id.desc()
            ).limit(limit + 1)
        ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [_out(recommendation, product) for recommendation, product in rows]
        next_cursor = (
            encode_cursor(rows[-1][0].created_at, rows[-1][0].recommendation_id)
            if more and rows
            else None
        )
        return RecommendationList(items=items, next_cursor=next_cursor)

    def withdraw(
        self,
        session: Session,
        actor: Actor,
        recommendation_id: uuid.UUID,
        data: WithdrawIn,
    ) -> RecommendationOut:
        """A clinician of the practice withdraws a recommendation: the patient no longer sees it."""
        require(actor, Action.RECOMMEND_PRODUCTS)
        row = session.get(Recommendation, recommendation_id, with_for_update=True)
        if row is None or not same(row.practice_id, actor.practice_id):
            raise NotFound("No such recommendation.")
        if row.status == "withdrawn":
            raise Conflict("The recommendation is already withdrawn.", code="already_withdrawn")
        now = self._clock.now()
        row.status, row.withdrawn_at, row.withdrawn_by = "withdrawn", now, actor.actor_id
        self._audit.record(
            session,
            stream_type="recommendation",
            stream_id=row.recommendation_id,
            action="recommendation.withdrawn",
            actor=actor.audit_actor(),
            practice_id=row.practice_id,
            before={"status": "active"},
            after={"status": "withdrawn", "has_reason": data.reason is not None},
            at=now,
        )
        product = session.get(Product, row.product_id)
        assert product is not None
        return _out(row, product)

    # ---- the patient ------------------------------------------------------------------------

    def get_for_practice(
        self, session: Session, actor: Actor, recommendation_id: uuid.UUID
    ) -> RecommendationOut:
        """One recommendation of the practice (404 for another practice's, as for none)."""
        require(actor, Action.VIEW_RECOMMENDATIONS)
        row = session.get(Recommendation, recommendation_id)
        if row is None or not same(row.practice_id, actor.practice_id):
            raise NotFound("No such recommendation.")
        product = session.get(Product, row.product_id)
        assert product is not None  # a foreign key
        return _out(row, product)

    def one_for_patient(
        self, session: Session, actor: Actor, recommendation_id: uuid.UUID
    ) -> PatientRecommendationOut:
        """One of the patient's own active recommendations (a notification's link); another
        patient's, another practice's, a withdrawn and an unknown one are the same 404."""
        require(actor, Action.VIEW_OWN_RECOMMENDATIONS)
        row = session.get(Recommendation, recommendation_id)
        if (
            row is None
            or not same(row.practice_id, actor.practice_id)
            or not same(row.patient_id, actor.patient_id)
            or row.status != "active"
        ):
            raise NotFound("No such recommendation.")
        ((product, setting),) = catalogue.products_with_settings(
            session, row.practice_id, product_ids=[row.product_id]
        )
        return _patient_out(row, product, setting)

    def for_patient(self, session: Session, actor: Actor) -> PatientRecommendationList:
        """The patient's own active recommendations, newest first, each product as the practice's
        catalogue shows it now."""
        require(actor, Action.VIEW_OWN_RECOMMENDATIONS)
        rows = list(
            session.scalars(
                select(Recommendation)
                .where(
                    scoped(Recommendation.practice_id, actor.practice_id),
                    scoped(Recommendation.patient_id, actor.patient_id),
                    Recommendation.status == "active",
                )
                .order_by(Recommendation.created_at.desc(), Recommendation.recommendation_id)
                .limit(PAGE_LIMIT)
            )
        )
        products = {
            product.product_id: (product, setting)
            for product, setting in catalogue.products_with_settings(
                session, actor.practice_id, product_ids=list({r.product_id for r in rows})
            )
        }
        return PatientRecommendationList(
            items=[_patient_out(row, *products[row.product_id]) for row in rows]
        )


def _patient_out(
    row: Recommendation, product: Product, setting: PracticeProductSetting | None
) -> PatientRecommendationOut:
    return PatientRecommendationOut(
        recommendation_id=row.recommendation_id,
        recommended_by_name=row.recommended_by_name,
        note=row.note,
        recommended_at=row.created_at,
        product=_as_patient_sees(product, setting),
    )


def _as_patient_sees(
    product: Product, setting: PracticeProductSetting | None
) -> RecommendedProduct:
    """The product through the patient's catalogue view; a product the patient's catalogue no
    longer shows keeps its name and description, with no price, and is not purchasable."""
    item = views.item("patient", product, setting)
    return RecommendedProduct(
        product_id=product.product_id,
        name=product.name,
        description=product.description,
        imagery_ref=product.imagery_ref,
        category=product.category,
        fulfilment_type=product.fulfilment_type,
        retail_price_minor=item.retail_price_minor if item else None,
        currency=product.currency,
        purchasable=bool(item and item.purchasable),
    )


def _out(row: Recommendation, product: Product) -> RecommendationOut:
    return RecommendationOut(
        recommendation_id=row.recommendation_id,
        practice_id=row.practice_id,
        patient_id=row.patient_id,
        product_id=row.product_id,
        product_name=product.name,
        recommended_by=row.recommended_by,
        recommended_by_name=row.recommended_by_name,
        recommended_by_role=row.recommended_by_role,
        appointment_id=row.appointment_id,
        note=row.note,
        status=row.status,
        created_at=row.created_at,
        withdrawn_at=row.withdrawn_at,
        withdrawn_by=row.withdrawn_by,
    )
