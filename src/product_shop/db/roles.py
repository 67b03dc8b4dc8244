"""The two PostgreSQL roles (docs/audit.md): the owner, who runs the migrations and owns every
table, and the service role the API, the relay and the jobs connect as. The service role may
read and write the module's tables, but only read and append to the audit log's: no UPDATE,
DELETE or TRUNCATE there (and the tables' triggers refuse those to the owner too).

`product-shop db grant ROLE` (run as the owner, after `migrate`, again after each migration
that adds a table) grants exactly that; it is idempotent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from product_shop.config import ConfigurationError
from product_shop.db.base import Base

if TYPE_CHECKING:
    from product_shop.db.engine import Database

APPEND_ONLY_TABLES = ("audit_entries", "audit_checkpoints", "audit_checkpoint_heads")


def quoted_role(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain role name: {name!r}")
    return f'"{name}"'


def grant_service_role(connection: Connection, role: str, *, create: bool = False) -> list[str]:
    """Grant `role` what the service needs on the current schema's tables; with `create`, make
    the role first when it does not exist (NOLOGIN: the operator gives it a login and
    password, or a member role that logs in). Returns the statements run."""
    who = quoted_role(role)
    statements: list[str] = []
    if create:
        exists = connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
        ).first()
        if exists is None:
            statements.append(f"CREATE ROLE {who} NOLOGIN")
    schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    statements.append(f'GRANT USAGE ON SCHEMA "{schema}" TO {who}')
    for table in sorted(Base.metadata.tables):
        if table in APPEND_ONLY_TABLES:
            statements.append(f'REVOKE ALL ON "{schema}"."{table}" FROM {who}')
            statements.append(f'GRANT SELECT, INSERT ON "{schema}"."{table}" TO {who}')
        else:
            statements.append(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}"."{table}" TO {who}'
            )
    # Readiness compares the schema's revision with the code's (web/health.py): read only.
    statements.append(f'GRANT SELECT ON "{schema}"."alembic_version" TO {who}')
    statements.append(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {who}')
    for statement in statements:
        connection.execute(text(statement))
    return statements


def row_security_problems(connection: Connection) -> list[str]:
    """Why row-level security would not hold for the role this connection acts as (PostgreSQL;
    empty when it holds): a superuser or a role with BYPASSRLS skips every policy, and although
    the tables force their policies on the owner too, the owner may switch that off."""
    role = connection.execute(
        text(
            "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles"
            " WHERE rolname = current_user"
        )
    ).one()
    problems: list[str] = []
    if role.rolsuper:
        problems.append(f"the database role {role.name!r} is a superuser")
    if role.rolbypassrls:
        problems.append(f"the database role {role.name!r} has BYPASSRLS")
    owned = connection.execute(
        text(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            " AND tableowner = current_user"
        )
    ).scalar_one()
    if owned:
        problems.append(f"the database role {role.name!r} owns the tables (use the service role)")
    return problems


def refuse_a_role_that_bypasses_row_security(database: Database) -> None:
    """Production on PostgreSQL: refuse to start as a role row-level security would not hold
    for (`row_security_problems`). A database that cannot be reached is left to readiness."""
    if database.dialect != "postgresql":
        return
    try:
        with database.engine.connect() as connection:
            problems = row_security_problems(connection)
    except OperationalError:
        return
    if problems:
        raise ConfigurationError(
            "refusing to start in production: "
            + "; ".join(problems)
            + " (connect as the service role: docs/security.md)"
        )
