"""row-level security: a line's policy looks up the one row it belongs to, never the whole parent

Migration 0018 wrote the policy of each table whose rows belong to a checkout, an order or a
refund as `system scope OR EXISTS (SELECT 1 FROM parent p WHERE p.key = t.column)`. PostgreSQL
may plan such an EXISTS inside an OR as a *hashed* subplan: on the first row it reads every
parent row the scope may see into a hash table, then probes it. On a table whose statistics are
missing or stale (a fresh database, autovacuum behind or off, a prepared statement's generic
plan cached while the table was small) it does so even to read the two lines of one checkout:
completing a checkout then read every checkout of the patient's practice, and the cost grew
with the table (bench/checkout_bench.py: 18 ms mean per completion's line read after 12,000
checkouts, PostgreSQL's CPU per flow doubled).

The policies now use a scalar subquery on the parent's primary key instead. PostgreSQL never
hashes a correlated scalar subquery: each line the query reads costs one index probe of its
parent, which is itself filtered by the parent's own policy, whatever the statistics say. Who
may see and write what is unchanged (`tests/integration/test_row_level_security.py`), and
`::test_a_lines_policy_probes_its_parent_by_key_never_by_scanning_it` pins the plan.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY = "product_shop_tenant"
# table: (its column, the table it belongs to, that table's key); as in migration 0018.
CHILD_TABLES = {
    "checkout_lines": ("checkout_id", "checkouts", "checkout_id"),
    "payment_captures": ("checkout_id", "checkouts", "checkout_id"),
    "order_lines": ("order_id", "orders", "order_id"),
    "vouchers": ("order_id", "orders", "order_id"),
    "refund_lines": ("refund_id", "refunds", "refund_id"),
}


def _replace(table: str, condition: str) -> None:
    op.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
    op.execute(f'CREATE POLICY {POLICY} ON "{table}" USING ({condition}) WITH CHECK ({condition})')


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (column, parent, key) in CHILD_TABLES.items():
        # Names from the constants above, never from input. NULL (no visible parent) is
        # refused by USING and by WITH CHECK alike.
        parent_row = f'SELECT true FROM "{parent}" p WHERE p.{key} = "{table}".{column}'  # noqa: S608
        _replace(table, f"product_shop_system_scope() OR ({parent_row})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (column, parent, key) in CHILD_TABLES.items():
        belongs = f'SELECT 1 FROM "{parent}" p WHERE p.{key} = "{table}".{column}'  # noqa: S608
        _replace(table, f"product_shop_system_scope() OR EXISTS ({belongs})")
