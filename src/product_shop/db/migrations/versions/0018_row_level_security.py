"""row-level security (PostgreSQL): every patient- or practice-bound table answers only the
current transaction's scope (`db/tenancy.py`), even to its owner (FORCE), so a bug in a
service-layer check cannot leak a row (docs/security.md, "Row-level security")

- tables with a practice and a patient: the system scope sees every row; a practice's scope,
  its own rows; a patient's scope, their own rows at their practice;
- the practice's product settings: the system scope, or the practice's staff and patients;
- lines and other rows that belong to one of those (checkout lines, captures, order lines,
  vouchers, refund lines): whoever may see the row they belong to.

Anything else (no scope set, an unknown scope) sees and writes nothing. SQLite has no row-level
security: nothing changes there.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY = "product_shop_tenant"

PATIENT_TABLES = (
    "appointment_contexts",
    "checkouts",
    "payment_exceptions",
    "points_redemptions",
    "recommendations",
    "ai_suggestions",
    "orders",
    "refunds",
    "cancellation_requests",
)
PRACTICE_TABLES = ("practice_product_settings",)
# table: (its column, the table it belongs to, that table's key)
CHILD_TABLES = {
    "checkout_lines": ("checkout_id", "checkouts", "checkout_id"),
    "payment_captures": ("checkout_id", "checkouts", "checkout_id"),
    "order_lines": ("order_id", "orders", "order_id"),
    "vouchers": ("order_id", "orders", "order_id"),
    "refund_lines": ("refund_id", "refunds", "refund_id"),
}

# Plain SQL functions, STABLE: the planner inlines them into each query, so a policy costs a
# comparison per row, not a function call.
FUNCTIONS = (
    """
    CREATE OR REPLACE FUNCTION product_shop_may_see(practice text, patient text)
    RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
      SELECT CASE current_setting('product_shop.scope', true)
        WHEN 'system' THEN true
        WHEN 'practice' THEN practice = current_setting('product_shop.practice_id', true)
        WHEN 'patient' THEN practice = current_setting('product_shop.practice_id', true)
          AND patient = current_setting('product_shop.patient_id', true)
        ELSE false
      END
    $$
    """,
    """
    CREATE OR REPLACE FUNCTION product_shop_may_see_practice(practice text)
    RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
      SELECT CASE current_setting('product_shop.scope', true)
        WHEN 'system' THEN true
        WHEN 'practice' THEN practice = current_setting('product_shop.practice_id', true)
        WHEN 'patient' THEN practice = current_setting('product_shop.practice_id', true)
        ELSE false
      END
    $$
    """,
    """
    CREATE OR REPLACE FUNCTION product_shop_system_scope()
    RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
      SELECT coalesce(current_setting('product_shop.scope', true) = 'system', false)
    $$
    """,
)


def _protect(table: str, condition: str) -> None:
    op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY {POLICY} ON "{table}" USING ({condition}) WITH CHECK ({condition})')


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for function in FUNCTIONS:
        op.execute(function)
    for table in PATIENT_TABLES:
        _protect(table, "product_shop_may_see(practice_id::text, patient_id::text)")
    for table in PRACTICE_TABLES:
        _protect(table, "product_shop_may_see_practice(practice_id::text)")
    for table, (column, parent, key) in CHILD_TABLES.items():
        # Names from the constants above, never from input.
        belongs = f'SELECT 1 FROM "{parent}" p WHERE p.{key} = "{table}".{column}'  # noqa: S608
        _protect(table, f"product_shop_system_scope() OR EXISTS ({belongs})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in (*CHILD_TABLES, *PRACTICE_TABLES, *PATIENT_TABLES):
        op.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
    op.execute("DROP FUNCTION IF EXISTS product_shop_may_see(text, text)")
    op.execute("DROP FUNCTION IF EXISTS product_shop_may_see_practice(text)")
    op.execute("DROP FUNCTION IF EXISTS product_shop_system_scope()")
