"""PostgreSQL's row-level security, the second wall behind the service layer's tenant checks
(docs/security.md, "Row-level security"): raw SQL as the service role the app runs as sees and
writes only the current scope's rows (db/tenancy.py, migration 0018).

The whole PostgreSQL suite runs the app as that role (tests/conftest.py `pg_service_role`), and
the cross-tenant probe shows the policies alone hold with the service checks switched off
(`test_cross_tenant_probe.py::test_row_level_security_alone_holds_the_line`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from product_shop.access.actor import Actor, Role
from product_shop.config import ConfigurationError
from product_shop.context import AppContext
from product_shop.db import tenancy
from product_shop.db.engine import Database
from product_shop.db.models import metadata
from product_shop.db.roles import (
    refuse_a_role_that_bypasses_row_security,
    row_security_problems,
)
from product_shop.web.deps import tenant_scope
from tests.conftest import World
from tests.integration.checkout_support import Shop, paid_checkout

pytestmark = pytest.mark.postgres_only

TENANT_COLUMNS = ("practice_id", "patient_id")
# Tables bound to a practice or patient through the row they belong to (migration 0018).
CHILD_TABLES = {"checkout_lines", "payment_captures", "order_lines", "vouchers", "refund_lines"}
# Bound to a practice but deliberately outside row-level security: the audit log (one stream
# may span practices, and its chain must be read whole to append; docs/security.md says why).
NOT_PROTECTED = {"audit_entries"}


def _buy(client: TestClient, world: World, patient: Any, shop: Shop) -> str:
    checkout = paid_checkout(client, patient, [(shop.toothbrush, 1)])
    completed = client.post(f"/v1/checkouts/{checkout['id']}/complete", headers=patient.headers)
    assert completed.status_code in (200, 201), completed.text
    order_id: str = completed.json()["order_id"]
    return order_id


@pytest.fixture
def orders(
    client: TestClient, world: World, shop: Shop, offer: Callable[..., None]
) -> dict[str, str]:
    offer(world.admin_b, shop.toothbrush, 6499)
    return {
        "a": _buy(client, world, world.patient_a, shop),
        "a2": _buy(client, world, world.patient_a2, shop),
        "b": _buy(client, world, world.patient_b, shop),
    }


def _rows(database: Database, scope: tenancy.TenantScope, sql: str) -> list[Any]:
    with tenancy.scoped(scope), database.engine.begin() as connection:
        return list(connection.execute(text(sql)).all())


def _order_ids(database: Database, scope: tenancy.TenantScope) -> set[str]:
    return {str(r[0]) for r in _rows(database, scope, "SELECT order_id FROM orders")}


def test_a_raw_select_as_the_service_role_sees_only_the_current_practices_rows(
    context: AppContext, world: World, orders: dict[str, str]
) -> None:
    database = context.database
    assert _rows(database, tenancy.SYSTEM, "SELECT current_user")[0][0] == database.role
    practice_a = tenancy.practice_scope(world.practice_a)
    assert _order_ids(database, practice_a) == {orders["a"], orders["a2"]}
    assert _order_ids(database, tenancy.practice_scope(world.practice_b)) == {orders["b"]}
    # The lines, through the order they belong to; a count and a join see no more.
    lines = _rows(database, practice_a, "SELECT DISTINCT order_id FROM order_lines")
    assert {str(r[0]) for r in lines} == {orders["a"], orders["a2"]}
    assert _rows(database, practice_a, "SELECT count(*) FROM checkouts")[0][0] == 2
    joined = _rows(
        database,
        practice_a,
        "SELECT o.order_id FROM order_lines l JOIN orders o ON o.order_id = l.order_id",
    )
    assert {str(r[0]) for r in joined} == {orders["a"], orders["a2"]}
    # Asking for practice B's order by its id, with a WHERE that names it, finds nothing.
    asked = f"SELECT order_id FROM orders WHERE order_id = '{orders['b']}'"
    assert _rows(database, practice_a, asked) == []


def test_a_patient_scope_sees_only_their_own_rows_at_their_practice(
    context: AppContext, world: World, orders: dict[str, str]
) -> None:
    database = context.database
    patient = world.patient_a.actor
    assert patient.patient_id is not None
    own = tenancy.patient_scope(world.practice_a, patient.patient_id)
    assert _order_ids(database, own) == {orders["a"]}
    elsewhere = tenancy.patient_scope(world.practice_b, patient.patient_id)
    assert _order_ids(database, elsewhere) == set()


def test_no_scope_sees_nothing_and_the_system_scope_sees_every_practice(
    context: AppContext, orders: dict[str, str]
) -> None:
    database = context.database
    assert _order_ids(database, tenancy.NOBODY) == set()
    assert _rows(database, tenancy.NOBODY, "SELECT count(*) FROM order_lines")[0][0] == 0
    assert _order_ids(database, tenancy.SYSTEM) == set(orders.values())


def test_a_write_into_another_practice_is_refused_and_an_update_there_touches_nothing(
    context: AppContext, world: World, orders: dict[str, str]
) -> None:
    database = context.database
    practice_a = tenancy.practice_scope(world.practice_a)
    with tenancy.scoped(practice_a), database.engine.begin() as connection:
        changed = connection.execute(
            text("UPDATE orders SET pms_invoice_ref = 'X' WHERE order_id = :id"),
            {"id": orders["b"]},
        )
        assert changed.rowcount == 0
    with (
        pytest.raises(DBAPIError, match="row-level security"),
        tenancy.scoped(practice_a),
        database.engine.begin() as connection,
    ):
        # Moving one of A's own orders to practice B: the new row fails the policy's check.
        connection.execute(
            text("UPDATE orders SET practice_id = :b WHERE order_id = :id"),
            {"b": str(world.practice_b), "id": orders["a"]},
        )
    assert _order_ids(database, tenancy.practice_scope(world.practice_b)) == {orders["b"]}


def test_every_practice_or_patient_bound_table_is_protected_and_forced(
    context: AppContext,
) -> None:
    bound = {
        table.name
        for table in metadata.sorted_tables
        if any(column in table.columns for column in TENANT_COLUMNS)
    }
    expected = (bound | CHILD_TABLES) - NOT_PROTECTED
    with context.database.engine.connect() as connection:
        protected = {
            row.relname
            for row in connection.execute(
                text(
                    "SELECT c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                    " AND c.relrowsecurity AND c.relforcerowsecurity"
                )
            )
        }
        with_policy = {
            row.tablename
            for row in connection.execute(
                text("SELECT tablename FROM pg_policies WHERE schemaname = current_schema()")
            )
        }
    assert expected - protected == set()
    assert expected - with_policy == set()


def test_the_service_role_cannot_bypass_row_level_security_and_the_owner_could(
    context: AppContext, request: pytest.FixtureRequest
) -> None:
    with context.database.engine.connect() as connection:
        assert row_security_problems(connection) == []
    refuse_a_role_that_bypasses_row_security(context.database)  # starts
    owner: Database = request.getfixturevalue("pg_owner")
    with owner.engine.connect() as connection:
        problems = row_security_problems(connection)
    assert any("superuser" in problem for problem in problems)
    assert any("owns the tables" in problem for problem in problems)
    with pytest.raises(ConfigurationError, match=r"refusing to start in production.*superuser"):
        refuse_a_role_that_bypasses_row_security(owner)


@pytest.mark.parametrize(
    ("role", "practice", "expected"),
    [
        ("patient", True, "patient"),
        ("clinician", True, "practice"),
        ("practice_admin", True, "practice"),
        ("finance", True, "practice"),
        ("ai", True, "practice"),
        ("service", False, "system"),
        ("catalogue_admin", False, "system"),
        ("platform_operator", False, "system"),
    ],
)
def test_each_callers_scope(role: str, practice: bool, expected: str) -> None:
    practice_id = uuid.uuid4() if practice else None
    actor = Actor(
        actor_id=str(uuid.uuid4()),
        name="Someone",
        role=Role(role),
        practice_id=practice_id,
        mfa=False,
        auth_time=None,
    )
    scope = tenant_scope(actor)
    assert scope.kind == expected
    assert scope.practice_id == practice_id
    assert scope.patient_id == (actor.patient_id if expected == "patient" else None)


def test_the_relays_own_pool_holds_the_system_scope_and_the_apps_follows_the_caller(
    context: AppContext, world: World
) -> None:
    """The relay's pool (only system work uses it) sets the system scope once per connection;
    the app's pool sends the current scope with each transaction."""
    setting = "SELECT current_setting('product_shop.scope', true)"
    relay = context.relay.database
    assert relay is not context.database  # the relay's own pool (asynchronous commit)
    with tenancy.scoped(tenancy.NOBODY):
        with relay.engine.begin() as connection:
            assert connection.execute(text(setting)).scalar_one() == "system"
        with context.database.engine.begin() as connection:
            assert connection.execute(text(setting)).scalar_one() == "nobody"
    with (
        tenancy.scoped(tenancy.practice_scope(world.practice_a)),
        context.database.engine.begin() as connection,
    ):
        assert connection.execute(text(setting)).scalar_one() == "practice"


# A read of one parent's lines, as the app asks it: a prepared statement's generic plan.
LINES_OF_ONE = {
    "checkout_lines": "checkout_id",
    "payment_captures": "checkout_id",
    "order_lines": "order_id",
    "vouchers": "order_id",
    "refund_lines": "refund_id",
}


@pytest.mark.parametrize("table", sorted(LINES_OF_ONE))
def test_a_lines_policy_probes_its_parent_by_key_never_by_scanning_it(
    context: AppContext, world: World, orders: dict[str, str], table: str
) -> None:
    """Migration 0022: a child table's policy must never be planned as a hashed subplan, which
    reads every parent row the scope may see to answer for one parent's lines; with the small,
    never-analysed tables of a young database and a cached generic plan, migration 0018's
    EXISTS was (completing a checkout read every checkout of the practice)."""
    column = LINES_OF_ONE[table]
    patient = world.patient_a.actor
    assert patient.patient_id is not None
    scope = tenancy.patient_scope(world.practice_a, patient.patient_id)
    with tenancy.scoped(scope), context.database.engine.begin() as connection:
        connection.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        # PREPARE names its own $1: sent as a simple query, outside the driver's parameters.
        prepare = f"PREPARE lines_of_one(uuid) AS SELECT * FROM {table} WHERE {column} = $1"
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.pgconn.exec_(prepare.encode())
        plan = "\n".join(
            row[0]
            for row in connection.execute(text(f"EXPLAIN EXECUTE lines_of_one('{uuid.uuid4()}')"))
        )
        connection.execute(text("DEALLOCATE lines_of_one"))
    assert "SubPlan" in plan, plan  # the parent is still asked: the policy holds
    assert "hashed SubPlan" not in plan, plan
