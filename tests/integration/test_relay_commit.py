"""The relay's own transactions commit asynchronously on PostgreSQL (`relay_synchronous_commit`,
default false): its pool's connections run with `synchronous_commit = off`, the API's never do,
and deliveries through that pool are still recorded (tests/integration/test_outbox_relay.py runs
every relay test through it)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from product_shop.config import Settings
from product_shop.context import AppContext
from product_shop.db.engine import Database


def _setting(database: Database) -> str:
    with database.engine.connect() as connection:
        return str(connection.execute(text("SHOW synchronous_commit")).scalar_one())


@pytest.mark.postgres_only
def test_the_relays_pool_commits_asynchronously_and_the_apis_does_not(
    settings: Settings, database: Database
) -> None:
    context = AppContext.build(settings, database=database)
    try:
        assert context.relay.database is not database
        assert _setting(context.relay.database) == "off"
        assert _setting(database) == "on"
        with context.relay.database.reading() as session:  # the same schema, the same tables
            assert session.execute(text("SELECT count(*) FROM outbox_events")).scalar_one() == 0
    finally:
        context.close()


@pytest.mark.postgres_only
def test_relay_synchronous_commit_keeps_the_relay_on_the_apis_pool(
    settings: Settings, database: Database
) -> None:
    context = AppContext.build(
        settings.model_copy(update={"relay_synchronous_commit": True}), database=database
    )
    try:
        assert context.relay.database is database
        assert _setting(context.relay.database) == "on"
    finally:
        context.close()


def test_sqlite_has_no_second_pool(settings: Settings, database: Database) -> None:
    if database.dialect != "sqlite":
        pytest.skip("SQLite only")
    context = AppContext.build(settings, database=database)
    try:
        assert context.relay.database is database
    finally:
        context.close()
