"""Models and migrations never drift; migrations go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from product_shop.db.engine import Database
from product_shop.db.migrate import current_revision, downgrade, head_revision, upgrade
from product_shop.db.models import metadata


def test_models_and_migrations_agree(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_migrations_downgrade_to_base_and_upgrade_to_head(database: Database) -> None:
    downgrade(database.engine, "base")
    with database.engine.connect() as connection:
        assert current_revision(connection) is None
    upgrade(database.engine)
    with database.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
