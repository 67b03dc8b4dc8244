"""Catalogue queries."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from product_shop.catalogue.model import AvailabilityStatus
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.db.fast import Row, Statements


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
    statement = _with_settings(practice_id)
    if product_ids is not None:
        statement = statement.where(Product.product_id.in_(product_ids))
    if category is not None:
        statement = statement.where(Product.category == category)
    if offered_only:
        statement = statement.where(PracticeProductSetting.product_id.is_not(None))
    statement = statement.order_by(Product.category, Product.name, Product.product_id)
    return [(product, setting) for product, setting in session.execute(statement).all()]


# What pricing needs of one product and the practice's offer of it (the offer's columns are
# None when the practice has no settings for the product).
_OFFER = (
    select(
        Product.product_id,
        Product.name,
        Product.currency,
        Product.fulfilment_type,
        Product.availability_status,
        PracticeProductSetting.retail_price_minor,
        PracticeProductSetting.practice_note,
        PracticeProductSetting.visible,
        PracticeProductSetting.in_clinic_stock_available,
    )
    .outerjoin(
        PracticeProductSetting,
        and_(
            PracticeProductSetting.product_id == Product.product_id,
            PracticeProductSetting.practice_id == bindparam("practice_id"),
        ),
    )
    .where(Product.product_id == bindparam("product_id"))
)


def offers(
    session: Session, practice_id: uuid.UUID, product_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Row]:
    """The named products that exist, each with the practice's offer, by product id: one
    statement per product, all in one round trip on PostgreSQL (`db.fast`), for pricing."""
    results = Statements(session).many(
        *((_OFFER, {"practice_id": practice_id, "product_id": pid}) for pid in product_ids)
    )
    return {rows[0]["product_id"]: rows[0] for rows in results if rows}


# A position in the catalogue's display order: (category, name, product_id).
CataloguePosition = tuple[str, str, uuid.UUID]


def catalogue_page(
    session: Session,
    practice_id: uuid.UUID | None,
    *,
    limit: int,
    after: CataloguePosition | None = None,
    category: str | None = None,
    offered_only: bool = False,
    visible_only: bool = False,
) -> list[tuple[Product, PracticeProductSetting | None]]:
    """At most `limit` products after `after`, in display order (category, name, product_id: a
    total order, so keyset pages neither skip nor repeat). Every filter is applied here, before
    the limit, so a page is short only when nothing follows it.

    `offered_only`: products the practice has settings for; `visible_only` also drops products
    the practice hides and deprecated products (the patient's view)."""
    statement = _with_settings(practice_id)
    if category is not None:
        statement = statement.where(Product.category == category)
    if offered_only or visible_only:
        statement = statement.where(PracticeProductSetting.product_id.is_not(None))
    if visible_only:
        statement = statement.where(
            PracticeProductSetting.visible.is_(True),
            Product.availability_status != AvailabilityStatus.DEPRECATED.value,
        )
    if after is not None:
        after_category, after_name, after_id = after
        statement = statement.where(
            or_(
                Product.category > after_category,
                and_(Product.category == after_category, Product.name > after_name),
                and_(
                    Product.category == after_category,
                    Product.name == after_name,
                    Product.product_id > after_id,
                ),
            )
        )
    statement = statement.order_by(Product.category, Product.name, Product.product_id).limit(limit)
    return [(product, setting) for product, setting in session.execute(statement).all()]


def _with_settings(practice_id: uuid.UUID | None) -> Select[Product, PracticeProductSetting]:
    """Products, each with the practice's settings row or None."""
    return select(Product, PracticeProductSetting).outerjoin(
        PracticeProductSetting,
        and_(
            PracticeProductSetting.product_id == Product.product_id,
            PracticeProductSetting.practice_id == practice_id,
        ),
    )
