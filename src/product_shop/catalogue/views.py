"""How catalogue rows are shown: which view a caller gets, the item each view may see, the
snapshots written to the audit log and events, and the catalogue's page cursor. Pure functions
over rows already loaded; no session, no clock."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from product_shop.access.actor import Actor, Role
from product_shop.access.isolation import same
from product_shop.catalogue.model import (
    AvailabilityStatus,
    FulfilmentType,
    PracticeOffer,
    is_purchasable,
)
from product_shop.catalogue.repository import CataloguePosition
from product_shop.catalogue.schemas import CatalogueItem, CatalogueView
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.core.errors import BadRequest, NotFound


def view_for(actor: Actor, practice_id: uuid.UUID | None) -> tuple[CatalogueView, uuid.UUID | None]:
    """Which view a caller gets, and for which practice. Practice roles see only their own."""
    if (
        actor.practice_id is not None
        and practice_id is not None
        and not same(practice_id, actor.practice_id)
    ):
        raise NotFound("No such catalogue.")
    if actor.role is Role.PATIENT:
        return "patient", actor.practice_id
    if actor.is_practice_staff:
        return "practice", actor.practice_id
    if actor.role is Role.SERVICE:
        if practice_id is None:
            raise BadRequest(
                "Service callers must name the practice (?practice_id=...).",
                code="practice_id_required",
            )
        return "service", practice_id
    return "catalogue", practice_id


def item(
    view: CatalogueView, product: Product, setting: PracticeProductSetting | None
) -> CatalogueItem | None:
    """The item as this view may see it; None when the view may not see the product at all."""
    availability = AvailabilityStatus(product.availability_status)
    if view == "patient" and (
        setting is None or not setting.visible or availability is AvailabilityStatus.DEPRECATED
    ):
        return None
    if view == "service" and setting is None:
        return None
    offer = (
        PracticeOffer(
            retail_price_minor=setting.retail_price_minor,
            practice_note=setting.practice_note,
            visible=setting.visible,
            in_clinic_stock_available=setting.in_clinic_stock_available,
        )
        if setting is not None
        else None
    )
    fields: dict[str, Any] = {
        "product_id": product.product_id,
        "name": product.name,
        "description": product.description,
        "imagery_ref": product.imagery_ref,
        "category": product.category,
        "fulfilment_type": product.fulfilment_type,
        "availability_status": availability,
        "retail_price_minor": offer.retail_price_minor if offer else None,
        "currency": product.currency,
        "practice_note": offer.practice_note if offer else None,
        "purchasable": is_purchasable(availability, FulfilmentType(product.fulfilment_type), offer),
    }
    if view != "patient":
        fields["visible"] = offer.visible if offer else False
        fields["in_clinic_stock_available"] = offer.in_clinic_stock_available if offer else False
    if view in ("practice", "catalogue"):
        fields["cost_price_minor"] = product.cost_price_minor
    if view == "practice":
        fields["settings_version"] = setting.version if setting else 0
    return CatalogueItem(**fields)


def product_snapshot(product: Product) -> dict[str, Any]:
    """The product as the audit log, its events and the API's `Product` show it."""
    return {
        "product_id": str(product.product_id),
        "name": product.name,
        "description": product.description,
        "imagery_ref": product.imagery_ref,
        "category": product.category,
        "fulfilment_type": product.fulfilment_type,
        "cost_price_minor": product.cost_price_minor,
        "currency": product.currency,
        "availability_status": product.availability_status,
        "version": product.version,
    }


def settings_snapshot(setting: PracticeProductSetting, currency: str) -> dict[str, Any]:
    """A practice's settings for one product, as its audit entries and events show them."""
    return {
        "retail_price_minor": setting.retail_price_minor,
        "currency": currency,
        "practice_note": setting.practice_note,
        "visible": setting.visible,
        "in_clinic_stock_available": setting.in_clinic_stock_available,
    }


def changed_by(actor: Actor) -> dict[str, str]:
    """Who made a change, as catalogue events name them."""
    return {"actor_id": actor.actor_id, "role": actor.role.value}


def encode_cursor(product: Product) -> str:
    """The position after `product` in display order (category, name, product_id)."""
    position = [product.category, product.name, str(product.product_id)]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def decode_cursor(cursor: str) -> CataloguePosition:
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
        if (
            not isinstance(position, list)
            or len(position) != 3
            or not all(isinstance(part, str) for part in position)
        ):
            raise ValueError("a cursor is [category, name, product_id]")
        category, name, product_id = position
        return category, name, uuid.UUID(product_id)
    except ValueError as exc:  # also bad base64, UTF-8 and JSON
        raise BadRequest(
            "The cursor is not valid; start again without one.", code="invalid_cursor"
        ) from exc
