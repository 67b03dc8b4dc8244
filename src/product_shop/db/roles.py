"""The two PostgreSQL roles (docs/audit.md): the owner, who runs the migrations and owns every
table, and the service role the API, the relay and the jobs connect as. The service role may
read and write the module's tables, but only read and append to the audit log's: no UPDATE,
DELETE or TRUNCATE there (and the tables' triggers refuse those to the owner too).

`product-shop db grant ROLE` (run as the owner, after `migrate`, again after each migration
that adds a table) grants exactly that; it is idempotent.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from product_shop.db.base import Base

APPEND_ONLY_TABLES = ("audit_entries", "audit_checkpoints", "audit_checkpoint_heads")


def _quoted(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain role name: {name!r}")
    return f'"{name}"'


def grant_service_role(connection: Connection, role: str, *, create: bool = False) -> list[str]:
    """Grant `role` what the service needs on the current schema's tables; with `create`, make
    the role first when it does not exist (NOLOGIN: the operator gives it a login and
    password, or a member role that logs in). Returns the statements run."""
    who = _quoted(role)
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
    statements.append(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {who}')
    for statement in statements:
        connection.execute(text(statement))
    return statements
