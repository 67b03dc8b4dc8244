"""Catalogue queries."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import Session

from product_shop.catalogue.tables import PracticeProductSetting, Product


def get_product(
    session: Session, product_id: uuid.UUID, *, for_update: bool = False
) -> Product | None:
    statement = select(Product).where(Product.product_id == product_id)
    if for_update:
        statement = statement.with_for_update()
    return session.execute(statement).scalar_one_or_none()


def get_setting(
    session: Session, practice_id: uuid.UUID, product_id: uuid.UUID, *, for_update: bool = False
) -> PracticeProductSetting | None:
    statement = select(PracticeProductSetting).where(
        PracticeProductSetting.practice_id == practice_id,
        PracticeProductSetting.product_id == product_id,
    )
    if for_update:
        statement = statement.with_for_update()
    return session.execute(statement).scalar_one_or_none()


def products_with_settings(
    session: Session,
    practice_id: uuid.UUID | None,
    *,
    product_ids: list[uuid.UUID] | None = None,
    category: str | None = None,
    offered_only: bool = False,
) -> list[tuple[Product, PracticeProductSetting | None]]:
    """Every product (or those named) with the practice's settings, ordered for display."""
    statement: Select[Product, PracticeProductSetting] = select(
        Product, PracticeProductSetting
    ).outerjoin(
        PracticeProductSetting,
        and_(
            PracticeProductSetting.product_id == Product.product_id,
            PracticeProductSetting.practice_id == practice_id,
        ),
    )
    if product_ids is not None:
        statement = statement.where(Product.product_id.in_(product_ids))
    if category is not None:
        statement = statement.where(Product.category == category)
    if offered_only:
        statement = statement.where(PracticeProductSetting.product_id.is_not(None))
    statement = statement.order_by(Product.category, Product.name, Product.product_id)
    return [(product, setting) for product, setting in session.execute(statement).all()]
