"""The relay's recording statements find their row by its key on a young table (session 12).

psycopg prepares a statement run five times on a connection, and PostgreSQL then keeps a generic
plan for it, made with whatever it knew when the tables were small: with no statistics (a young
table, autovacuum behind or off), the delivery's outcome (`events/statements.py` `MARKED`) was
read through `ix_event_deliveries_next`, the partial index of pending deliveries, filtering every
pending delivery for the one recorded (8,000 rows a delivery a minute into bench/checkout_bench.py).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from product_shop.db.engine import Database
from product_shop.events.statements import MARK, MARKED

pytestmark = pytest.mark.postgres_only


def _generic_plan(database: Database, statement: object) -> str:
    """EXPLAIN of `statement` prepared with every bound value a parameter, in a generic plan."""
    sql = str(statement.compile(dialect=postgresql.psycopg.dialect()))  # type: ignore[attr-defined]
    names: list[str] = []

    def number(found: re.Match[str]) -> str:
        if found.group(1) not in names:
            names.append(found.group(1))
        return f"${names.index(found.group(1)) + 1}"

    prepared = re.sub(r"%\(([a-z_0-9]+)\)s", number, sql)
    with database.engine.begin() as connection:
        connection.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        raw = connection.connection.dbapi_connection
        assert raw is not None
        # PREPARE names its own $n: sent as a simple query, outside the driver's parameters.
        result = raw.pgconn.exec_(f"PREPARE recording AS {prepared}".encode())
        assert result.error_message == b"", result.error_message
        nulls = ", ".join("NULL" for _ in names)
        plan = "\n".join(
            row[0] for row in connection.execute(text(f"EXPLAIN EXECUTE recording({nulls})"))
        )
        connection.execute(text("DEALLOCATE recording"))
    return plan


@pytest.mark.parametrize("statement", [MARK, MARKED], ids=["MARK", "MARKED"])
def test_a_delivery_is_recorded_through_its_primary_key_whatever_the_statistics(
    database: Database, statement: object
) -> None:
    plan = _generic_plan(database, statement)
    assert "pk_event_deliveries" in plan, plan
    assert "ix_event_deliveries" not in plan, plan
