"""Alembic environment. The engine is handed in by `product_shop.db.migrate` (never a URL in
an ini file), so the same code migrates SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from product_shop.config import Settings
from product_shop.db.engine import make_engine
from product_shop.db.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine: Engine | None = config.attributes.get("engine")
    if engine is None:
        engine = make_engine(Settings().database_url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run_migrations_online()
