"""Seeding the demo world through the real catalogue service, so its audit log and outbox are
exactly what production writes."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor, Role
from product_shop.catalogue.schemas import PracticeSettingsIn, ProductCreate, ProductPatch
from product_shop.catalogue.service import CatalogueService
from product_shop.catalogue.tables import Product
from product_shop.demo.data import CATALOGUE_ADMIN, PRACTICES, PRODUCTS, USERS, DemoUser


def actor_for(user: DemoUser) -> Actor:
    return Actor(
        actor_id=user.subject,
        name=user.name,
        role=Role(user.role),
        practice_id=user.practice.practice_id if user.practice else None,
        mfa=False,
        auth_time=None,
    )


def is_seeded(session: Session) -> bool:
    return bool(session.execute(select(func.count()).select_from(Product)).scalar_one())


def seed(session: Session, catalogue: CatalogueService) -> dict[str, uuid.UUID]:
    """Create the demo catalogue and practice offers. Returns product ids by demo key."""
    admin = actor_for(CATALOGUE_ADMIN)
    practice_admins = {
        user.practice.slug: actor_for(user)
        for user in USERS
        if user.role == "practice_admin" and user.practice is not None
    }
    ids: dict[str, uuid.UUID] = {}
    for product in PRODUCTS:
        created = catalogue.create_product(
            session,
            admin,
            ProductCreate.model_validate(
                {
                    "name": product.name,
                    "description": product.description,
                    "imagery_ref": product.imagery_ref,
                    "category": product.category,
                    "fulfilment_type": product.fulfilment_type,
                    "cost_price_minor": product.cost_price_minor,
                    "currency": "GBP",
                }
            ),
        )
        ids[product.key] = created.product_id
        for practice in PRACTICES:
            offer = product.offers.get(practice.slug)
            if offer is None:
                continue
            price, note, visible, stock = offer
            catalogue.set_practice_settings(
                session,
                practice_admins[practice.slug],
                created.product_id,
                PracticeSettingsIn(
                    retail_price_minor=price,
                    practice_note=note,
                    visible=visible,
                    in_clinic_stock_available=stock,
                ),
            )
        if product.availability_status != "available":
            catalogue.update_product(
                session,
                admin,
                created.product_id,
                ProductPatch.model_validate({"availability_status": product.availability_status}),
            )
    return ids
