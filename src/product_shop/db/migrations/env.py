"""Alembic environment, for `product-shop db ...` and for `alembic ...` run from the repository
root (alembic.ini). The database is never a URL in an ini file: `product_shop.db.migrate` hands
its engine in, and otherwise it is PRODUCT_SHOP_DATABASE_URL (the project's settings), so the same
code migrates SQLite and PostgreSQL.

A new revision is numbered after the highest one ("0006" after "0005", in 0006_<slug>.py) unless
`alembic revision --rev-id` names it.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine

from product_shop.config import Settings
from product_shop.db.engine import make_engine
from product_shop.db.migrate import next_revision_id
from product_shop.db.models import metadata

config = context.config


def _number_the_revision(
    _context: MigrationContext, _revision: Any, directives: list[MigrationScript]
) -> None:
    if getattr(config.cmd_opts, "rev_id", None):  # alembic revision --rev-id ...: as given
        return
    for directive in directives:
        directive.rev_id = next_revision_id(context.script)


def _command_name() -> str:
    """The alembic command run from the command line ("" when called from code)."""
    command = getattr(config.cmd_opts, "cmd", None)  # (function, positional, keyword names)
    return str(getattr(command[0], "__name__", "")) if command else ""


def _engine() -> tuple[Engine, bool]:
    """The engine to migrate or compare against, and whether this file made it (and disposes it).

    `alembic revision` without --autogenerate (and `alembic merge`) only writes a file: an
    in-memory database stands in, so making a hand-written migration needs no database."""
    handed_in: Engine | None = config.attributes.get("engine")
    if handed_in is not None:
        return handed_in, False
    name = _command_name()
    autogenerate = bool(getattr(config.cmd_opts, "autogenerate", False))
    if name == "merge" or (name == "revision" and not autogenerate):
        return create_engine("sqlite://"), True
    return make_engine(Settings().database_url), True


def run_migrations_online() -> None:
    if config.config_file_name is not None and "engine" not in config.attributes:
        # The alembic command line: its log lines (what autogenerate found), as alembic.ini says.
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine, owned = _engine()
    try:
        with engine.begin() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                process_revision_directives=_number_the_revision,
            )
            context.run_migrations()
    finally:
        if owned:
            engine.dispose()


run_migrations_online()
