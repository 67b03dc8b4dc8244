"""Running Alembic from code: `product-shop db upgrade` and `db revision`, readiness, tests and
the drift check. alembic.ini at the repository root says the same for the `alembic` command."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = str(resources.files("product_shop.db").joinpath("migrations"))
# Revision files are NNNN_slug.py with revision id "NNNN" (migrations/env.py numbers them).
FILE_TEMPLATE = "%(rev)s_%(slug)s"


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("file_template", FILE_TEMPLATE.replace("%", "%%"))  # ini escaping
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def next_revision_id(script: ScriptDirectory) -> str:
    """The number after the highest numbered revision: "0006" after "0005"."""
    numbers = [int(each.revision) for each in script.walk_revisions() if each.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def make_revision(message: str, *, engine: Engine | None = None, autogenerate: bool) -> Path:
    """Write the next migration file into the migrations directory and return its path. With
    `autogenerate`, its operations are what `engine`'s database (at head) lacks from the models;
    without, it is empty, for a hand-written migration (and needs no database)."""
    if autogenerate and engine is None:
        raise ValueError("autogenerate compares the models with a database: pass its engine")
    config = alembic_config(engine)
    rev_id = next_revision_id(ScriptDirectory.from_config(config))
    written = command.revision(config, message=message, autogenerate=autogenerate, rev_id=rev_id)
    scripts = written if isinstance(written, list) else [written]
    script = scripts[0]
    if not isinstance(script, Script):  # pragma: no cover (only with --sql, never used here)
        raise RuntimeError("alembic wrote no revision file")
    return Path(script.path)


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


@cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The database's revision, read quietly (readiness probes call this often)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(revision) if revision is not None else None
