"""Models and migrations never drift; migrations go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from product_shop.db.engine import Database
from product_shop.db.migrate import current_revision, downgrade, head_revision, upgrade
from product_shop.db.models import metadata
from product_shop.db.roles import grant_service_role


def test_models_and_migrations_agree(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_migrations_downgrade_to_base_and_upgrade_to_head(database: Database) -> None:
    # Migrations run as the owner (docs/security.md); the app's role is granted again after.
    owner = Database(database.url) if database.role else database
    try:
        downgrade(owner.engine, "base")
        with owner.engine.connect() as connection:
            assert current_revision(connection) is None
        upgrade(owner.engine)
        with owner.engine.begin() as connection:
            assert current_revision(connection) == head_revision()
            if database.role:
                grant_service_role(connection, database.role)
    finally:
        if owner is not database:
            owner.dispose()
