"""Catalogue routes: patients browse, practice admins set prices, the catalogue team manages."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.catalogue.schemas import (
    Catalogue,
    CatalogueItem,
    PracticeSettingsIn,
    Product,
    ProductCreate,
    ProductPatch,
)
from product_shop.core.text import NO_CONTROL_CHARACTERS
from product_shop.idempotency.store import Claim
from product_shop.web.deps import ActorDep, ContextDep, IfMatchDep, SessionDep, permitted
from product_shop.web.docs import response_headers
from product_shop.web.idempotency import (
    IDEMPOTENT_CREATE,
    IdempotencyKeyHeader,
    creating_responses,
    run_idempotent,
)
from product_shop.web.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["catalogue"])

PracticeQuery = Annotated[
    uuid.UUID | None,
    Query(description="Service and catalogue-team callers: the practice whose offer to show."),
]


@router.get(
    "/catalogue",
    operation_id="listCatalogue",
    response_model=Catalogue,
    response_model_exclude_unset=True,
    summary="The catalogue as the caller may see it",
    description=(
        "Patients: their practice's visible products with retail price and note, never cost. "
        "Practice staff: every product with cost price and the practice's settings. "
        "Services (Hygiene Subscriptions): the practice's offered products, price and "
        "availability, read live."
    ),
    responses=problem_responses(400, 401, 403, 404, 422),
)
def list_catalogue(
    actor: ActorDep,
    session: SessionDep,
    context: ContextDep,
    practice_id: PracticeQuery = None,
    category: Annotated[str | None, Query(max_length=80, pattern=NO_CONTROL_CHARACTERS)] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=4096, description="next_cursor of the previous page")
    ] = None,
) -> Catalogue:
    return context.catalogue.catalogue(
        session, actor, practice_id=practice_id, category=category, limit=limit, cursor=cursor
    )


@router.get(
    "/catalogue/{product_id}",
    operation_id="getCatalogueItem",
    response_model=CatalogueItem,
    response_model_exclude_unset=True,
    summary="One product as the caller may see it",
    responses=problem_responses(400, 401, 403, 404, 422),
)
def get_catalogue_item(
    product_id: uuid.UUID,
    actor: ActorDep,
    session: SessionDep,
    context: ContextDep,
    practice_id: PracticeQuery = None,
) -> CatalogueItem:
    return context.catalogue.catalogue_item(session, actor, product_id, practice_id=practice_id)


@router.put(
    "/catalogue/{product_id}/practice-settings",
    operation_id="setPracticeSettings",
    response_model=CatalogueItem,
    response_model_exclude_unset=True,
    summary="Set the caller's practice's retail price, note, visibility and in-clinic stock flag",
    responses={
        **problem_responses(400, 401, 403, 404, 409, 412, 422),
        200: response_headers("ETag"),
    },
)
def put_practice_settings(
    product_id: uuid.UUID,
    body: PracticeSettingsIn,
    actor: Annotated[Actor, Depends(permitted(Action.CONFIGURE_PRACTICE_CATALOGUE))],
    context: ContextDep,
    expected_version: IfMatchDep,
    response: Response,
) -> CatalogueItem:
    # A write runs in Database.run: a deadlock or serialization failure is retried.
    item = context.database.run(
        lambda session: context.catalogue.set_practice_settings(
            session, actor, product_id, body, expected_version=expected_version
        )
    )
    response.headers["ETag"] = f'"{item.settings_version}"'
    return item


@router.post(
    "/products",
    operation_id="createProduct",
    response_model=Product,
    status_code=status.HTTP_201_CREATED,
    summary="Create a catalogue product (Primoro catalogue team); Idempotency-Key required",
    responses=creating_responses(401, 403, 409, 422),
    openapi_extra=IDEMPOTENT_CREATE,
)
def create_product(
    body: ProductCreate,
    actor: Annotated[Actor, Depends(permitted(Action.MANAGE_PRODUCTS))],
    context: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    def create(claim: Claim) -> tuple[Product, str]:
        def work(session: Session) -> tuple[Product, str]:
            product = context.catalogue.create_product(session, actor, body)
            location = f"/v1/products/{product.product_id}"
            context.idempotency.complete(
                session, claim, 201, product.model_dump(mode="json"), location
            )
            return product, location

        return context.database.run(work)

    return run_idempotent(context, actor, idempotency_key, "POST /v1/products", body, create)


@router.get(
    "/products/{product_id}",
    operation_id="getProduct",
    response_model=Product,
    summary="Read a catalogue product (Primoro catalogue team)",
    responses={**problem_responses(401, 403, 404, 422), 200: response_headers("ETag")},
)
def get_product(
    product_id: uuid.UUID,
    actor: ActorDep,
    session: SessionDep,
    context: ContextDep,
    response: Response,
) -> Product:
    product = context.catalogue.get_product(session, actor, product_id)
    response.headers["ETag"] = f'"{product.version}"'
    return product


@router.patch(
    "/products/{product_id}",
    operation_id="updateProduct",
    response_model=Product,
    summary="Change a catalogue product; availability_status 'deprecated' retires it",
    responses={
        **problem_responses(400, 401, 403, 404, 409, 412, 422),
        200: response_headers("ETag"),
    },
)
def patch_product(
    product_id: uuid.UUID,
    body: ProductPatch,
    actor: Annotated[Actor, Depends(permitted(Action.MANAGE_PRODUCTS))],
    context: ContextDep,
    expected_version: IfMatchDep,
    response: Response,
) -> Product:
    product = context.database.run(
        lambda session: context.catalogue.update_product(
            session, actor, product_id, body, expected_version=expected_version
        )
    )
    response.headers["ETag"] = f'"{product.version}"'
    return product
