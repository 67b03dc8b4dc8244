from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from product_shop.catalogue.schemas import PracticeSettingsIn, ProductCreate
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.simulators.server import BackgroundServer, serve_in_background
from product_shop.web.app import create_app
from tests.conftest import Person, TokenFactory, World
from tests.integration.checkout_support import Shop


@pytest.fixture
def make_product(context: AppContext, world: World) -> Callable[..., uuid.UUID]:
    def factory(**fields: Any) -> uuid.UUID:
        values: dict[str, Any] = {
            "name": "Oral-B Pro 3 Electric Toothbrush",
            "description": "Round head, pressure control.",
            "category": "Electric toothbrushes",
            "fulfilment_type": "Drop-Ship",
            "cost_price_minor": 3999,
        }
        values.update(fields)
        with context.database.unit_of_work() as session:
            product = context.catalogue.create_product(
                session, world.catalogue_admin.actor, ProductCreate.model_validate(values)
            )
        return product.product_id

    return factory


@pytest.fixture
def offer(context: AppContext) -> Callable[..., None]:
    def factory(
        admin: Person,
        product_id: uuid.UUID,
        price: int = 5999,
        *,
        visible: bool = True,
        stock: bool = False,
        note: str | None = None,
    ) -> None:
        with context.database.unit_of_work() as session:
            context.catalogue.set_practice_settings(
                session,
                admin.actor,
                product_id,
                PracticeSettingsIn(
                    retail_price_minor=price,
                    practice_note=note,
                    visible=visible,
                    in_clinic_stock_available=stock,
                ),
            )

    return factory


def count_rows(database: Database, table: Any, *where: Any) -> int:
    with database.engine.connect() as connection:
        statement = select(func.count()).select_from(table)
        for condition in where:
            statement = statement.where(condition)
        return int(connection.execute(statement).scalar_one())


@pytest.fixture
def shop(make_product: Callable[..., uuid.UUID], offer: Callable[..., None], world: World) -> Shop:
    toothbrush = make_product(
        name="Oral-B Pro 3", fulfilment_type="Drop-Ship", cost_price_minor=3999
    )
    voucher = make_product(name="Hygienist voucher", fulfilment_type="Digital", cost_price_minor=0)
    kit = make_product(
        name="Home Whitening Kit", fulfilment_type="In-Clinic", cost_price_minor=9500
    )
    offer(world.admin_a, toothbrush, 5999)
    offer(world.admin_a, voucher, 6000)
    offer(world.admin_a, kit, 24900, stock=True)
    return Shop(toothbrush, voucher, kit)


@pytest.fixture
def live_api(context: AppContext, suppliers_url: str) -> Iterator[BackgroundServer]:
    """The API over real HTTP, with the supplier simulator's callbacks pointed at it."""
    server = serve_in_background(create_app(context=context))
    httpx.post(
        f"{suppliers_url}/_simulator/config",
        json={"callback_url": f"{server.url}/v1/webhooks/suppliers"},
    ).raise_for_status()
    yield server
    server.stop()


@pytest.fixture
def with_mfa(make_token: TokenFactory) -> Callable[..., dict[str, str]]:
    """Headers for a person's token with MFA performed `age` ago (or without MFA): what a
    refund needs (spec §9)."""

    def headers(
        person: Person, *, age: timedelta = timedelta(0), mfa: bool = True
    ) -> dict[str, str]:
        actor = person.actor
        token = make_token(
            role=actor.role.value,
            subject=actor.actor_id,
            practice_id=actor.practice_id,
            name=actor.name,
            mfa=mfa,
            now=datetime.now(UTC) - age,
        )
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def rewards(rewards_url: str, live_api: BackgroundServer, world: World) -> str:
    """Rewards for practice A (1 point = 1p), none for practice B; the simulator confirms
    redemptions by callback to the API; the patient starts with 8,000 points."""
    httpx.post(
        f"{rewards_url}/_simulator/config",
        json={
            "callback_url": f"{live_api.url}/v1/webhooks/rewards",
            "enabled_practices": {str(world.practice_a): 1},
            "auto_confirm": True,
        },
    ).raise_for_status()
    httpx.put(
        f"{rewards_url}/_simulator/accounts/{world.patient_a.actor.actor_id}",
        json={"practice_id": str(world.practice_a), "balance_points": 8000},
    ).raise_for_status()
    return rewards_url
