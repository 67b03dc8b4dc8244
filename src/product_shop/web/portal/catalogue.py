"""Portal pages for the practice's catalogue settings (spec §3, §15.3): every product the
practice can offer with its retail price, note, visibility and in-clinic stock flag, and a form
per product.

The list and the form read what `GET /v1/catalogue` reads (`context.catalogue`, the practice
view); saving calls what `PUT /v1/catalogue/{id}/practice-settings` calls, with the version the
form was read at as its If-Match. The practice view carries the cost price: no page shows it
(the templates never name the field).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from product_shop.access.policy import Action, require
from product_shop.catalogue.model import AvailabilityStatus, FulfilmentType
from product_shop.catalogue.schemas import CatalogueItem, PracticeSettingsIn
from product_shop.core.errors import BadRequest, PreconditionFailed, ProductShopError
from product_shop.core.money import MAX_MINOR
from product_shop.web.deps import ContextDep, SessionDep
from product_shop.web.portal.auth import FormDep, PortalUser, PortalUserDep
from product_shop.web.portal.forms import form_version, minor_units
from product_shop.web.portal.render import PREFIX, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 50
PRICE_HELP = "Enter the retail price in pounds and pence, e.g. 12.50."


def price_minor(text: str) -> int:
    """ "12.50" (or "£12.50", "12.5") -> 1250, "12" -> 1200; BadRequest for anything else.
    Parsed as text, never through a float."""
    minor = minor_units(text, help_text=PRICE_HELP, code="invalid_price")
    if minor < 1:
        raise BadRequest("The retail price must be at least £0.01.", code="invalid_price")
    if minor > MAX_MINOR:
        raise BadRequest("The retail price is too large.", code="invalid_price")
    return minor


def _pounds(minor: int | None) -> str:
    """Minor units as the form's field shows them: 1250 -> "12.50"."""
    return "" if minor is None else f"{minor // 100}.{minor % 100:02d}"


def _entered(form: FormData) -> dict[str, str]:
    """The form as entered, for showing it again; a checkbox is sent only when ticked."""
    fields = {name: form.get(name) for name in ("retail_price", "practice_note", "version")}
    kept = {k: v for k, v in fields.items() if isinstance(v, str)}
    for flag in ("visible", "in_clinic_stock_available"):
        kept[flag] = "1" if form.get(flag) is not None else ""
    return kept


def _stored(item: CatalogueItem) -> dict[str, str]:
    """The practice's saved settings as form fields (a product not yet offered: shown)."""
    offered = item.retail_price_minor is not None
    return {
        "retail_price": _pounds(item.retail_price_minor),
        "practice_note": item.practice_note or "",
        "visible": "1" if item.visible or not offered else "",
        "in_clinic_stock_available": "1" if item.in_clinic_stock_available else "",
        "version": str(item.settings_version or 0),
    }


def settings_body(fields: dict[str, str]) -> PracticeSettingsIn:
    """The API's input model, validated from the form."""
    raw = {
        "retail_price_minor": price_minor(fields.get("retail_price", "")),
        "practice_note": fields.get("practice_note", "").strip() or None,
        "visible": bool(fields.get("visible")),
        "in_clinic_stock_available": bool(fields.get("in_clinic_stock_available")),
    }
    try:
        return PracticeSettingsIn.model_validate(raw)
    except ValidationError as exc:
        problems = {str(e["loc"][0]) if e["loc"] else "form" for e in exc.errors()}
        if "practice_note" in problems:
            detail = "The practice note must be at most 500 characters of text."
        else:
            detail = "Check the settings: " + ", ".join(sorted(problems)).replace("_", " ") + "."
        raise BadRequest(detail, code="validation_failed") from exc


def _form_page(
    request: Request,
    user: PortalUser,
    item: CatalogueItem,
    fields: dict[str, str],
    *,
    problem: ProductShopError | None = None,
    saved: str | None = None,
    current: CatalogueItem | None = None,
) -> Response:
    return page(
        request,
        "catalogue_product.html",
        {
            "item": item,
            "fields": fields,
            "problem": problem,
            "saved": saved,
            "current": current,
            "deprecated": item.availability_status is AvailabilityStatus.DEPRECATED,
            "in_clinic": item.fulfilment_type is FulfilmentType.IN_CLINIC,
        },
        status=problem.status if problem else 200,
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


@router.get("/catalogue")
def catalogue_list(
    request: Request,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    require(user.actor, Action.CONFIGURE_PRACTICE_CATALOGUE)
    catalogue = context.catalogue.catalogue(
        session, user.actor, limit=PAGE_SIZE, cursor=cursor or None
    )
    return page(
        request,
        "catalogue.html",
        {"items": catalogue.items, "next_cursor": catalogue.next_cursor},
        actor=user.actor,
        csrf_token=user.csrf_token,
    )


@router.get("/catalogue/{product_id}")
def product_settings(
    request: Request,
    product_id: uuid.UUID,
    user: PortalUserDep,
    session: SessionDep,
    context: ContextDep,
    saved: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    require(user.actor, Action.CONFIGURE_PRACTICE_CATALOGUE)
    item = context.catalogue.catalogue_item(session, user.actor, product_id)
    return _form_page(request, user, item, _stored(item), saved=saved)


@router.post("/catalogue/{product_id}")
def save_product_settings(
    request: Request,
    product_id: uuid.UUID,
    user: PortalUserDep,
    form: FormDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    require(user.actor, Action.CONFIGURE_PRACTICE_CATALOGUE)
    fields = _entered(form)
    try:
        expected = form_version(fields.get("version", ""))
        body = settings_body(fields)
        # A write runs in Database.run, as the API's: a deadlock or serialization failure is
        # retried. The request's own session is not used before it (it reads afterwards).
        context.database.run(
            lambda unit: context.catalogue.set_practice_settings(
                unit, user.actor, product_id, body, expected_version=expected
            )
        )
    except ProductShopError as exc:
        if exc.status >= 500 or exc.status in (401, 403, 404):
            raise
        item = context.catalogue.catalogue_item(session, user.actor, product_id)
        current = None
        if isinstance(exc, PreconditionFailed):
            # Someone saved since this form was read: show what is saved now beside what was
            # entered; saving again (at the current version) is a deliberate choice.
            current = item
            fields["version"] = str(item.settings_version or 0)
        return _form_page(request, user, item, fields, problem=exc, current=current)
    return RedirectResponse(f"{PREFIX}/catalogue/{product_id}?saved=settings", status_code=303)
