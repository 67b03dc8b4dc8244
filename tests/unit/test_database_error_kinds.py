"""How web/problems reads a database error (issue 9 item 4): SQLSTATE and constraint name from
psycopg 3's `sqlstate`/`diag`, from SQLite's message; and what each means for the caller.

The same reading against real violations on both engines: tests/integration/test_database_errors.py.
"""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import psycopg.errors
import pytest
from sqlalchemy import UniqueConstraint
from sqlalchemy.exc import (
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)

from product_shop.db.models import metadata
from product_shop.web.problems import (
    CONCURRENT_CHANGE_CONSTRAINTS,
    DatabaseFailure,
    database_error_kind,
    database_failure,
)


def _kind(exc: BaseException) -> str:
    return database_error_kind(exc, database_failure(exc))


def _pg(cls: type[Exception], wrapper: type[Exception] = OperationalError, **kw: bool) -> Exception:
    return wrapper("SELECT 1", {}, cls("driver message quoting values"), **kw)


def _id(value: object) -> str:
    orig = getattr(value, "orig", None)
    cause = f"{type(orig).__name__}:{orig}" if orig is not None else ""
    return f"{type(value).__name__}({cause})" if isinstance(value, Exception) else str(value)


def _sqlite(
    message: str, wrapper: type[Exception] = IntegrityError, statement: str = "SELECT 1"
) -> Exception:
    error_class = sqlite3.IntegrityError if wrapper is IntegrityError else sqlite3.OperationalError
    return wrapper(statement, (), error_class(message))


def test_every_concurrent_change_constraint_is_a_unique_key_of_the_schema() -> None:
    """A renamed or misspelt entry would silently turn its 409 into a 500."""
    unique_names: set[str] = set()
    for table in metadata.tables.values():
        unique_names.add(str(table.primary_key.name))
        unique_names |= {str(c.name) for c in table.constraints if isinstance(c, UniqueConstraint)}
        unique_names |= {str(index.name) for index in table.indexes if index.unique}
    assert set(CONCURRENT_CHANGE_CONSTRAINTS) <= unique_names


@pytest.mark.parametrize(
    ("message", "statement", "expected"),
    [
        (
            "UNIQUE constraint failed: practice_product_settings.practice_id, "
            "practice_product_settings.product_id",
            "INSERT INTO practice_product_settings ...",
            DatabaseFailure(
                "23505",
                "pk_practice_product_settings",
                "practice_product_settings.practice_id, practice_product_settings.product_id",
            ),
        ),
        (
            "UNIQUE constraint failed: audit_entries.stream_type, audit_entries.stream_id, "
            "audit_entries.stream_seq",
            "INSERT INTO audit_entries ...",
            DatabaseFailure(
                "23505",
                "uq_audit_entries_stream_type_stream_id_stream_seq",
                "audit_entries.stream_type, audit_entries.stream_id, audit_entries.stream_seq",
            ),
        ),
        (
            "UNIQUE constraint failed: order_lines.order_id, order_lines.line_no",
            "INSERT INTO order_lines ...",
            DatabaseFailure(
                "23505", "ix_order_lines_order", "order_lines.order_id, order_lines.line_no"
            ),
        ),
        (
            "UNIQUE constraint failed: index 'ix_some_expression'",
            "INSERT INTO x ...",
            DatabaseFailure("23505", "ix_some_expression"),
        ),
        (
            "UNIQUE constraint failed: nowhere.nothing",
            "INSERT INTO nowhere ...",
            DatabaseFailure("23505", None, "nowhere.nothing"),
        ),
        (
            "CHECK constraint failed: ck_orders_total_positive",
            "INSERT INTO orders ...",
            DatabaseFailure("23514", "ck_orders_total_positive"),
        ),
        (
            "FOREIGN KEY constraint failed",
            'INSERT INTO "practice_product_settings" (practice_id) VALUES (?)',
            DatabaseFailure("23503", "fk_practice_product_settings_product_id_products"),
        ),
        (  # orders has two foreign keys: SQLite does not say which one failed
            "FOREIGN KEY constraint failed",
            "INSERT INTO orders (order_id) VALUES (?)",
            DatabaseFailure("23503", None),
        ),
        (  # a delete or update can break another table's key: not guessed
            "FOREIGN KEY constraint failed",
            "DELETE FROM products WHERE product_id = ?",
            DatabaseFailure("23503", None),
        ),
        (
            "NOT NULL constraint failed: orders.payment_ref",
            "INSERT INTO orders ...",
            DatabaseFailure("23502", None, "orders.payment_ref"),
        ),
    ],
)
def test_sqlite_messages_give_the_sqlstate_and_constraint_name(
    message: str, statement: str, expected: DatabaseFailure
) -> None:
    assert database_failure(_sqlite(message, statement=statement)) == expected


def test_psycopg_errors_give_their_sqlstate_and_diagnostics() -> None:
    orig = SimpleNamespace(
        sqlstate="23514",
        diag=SimpleNamespace(constraint_name="ck_orders_paid", table_name=None, column_name=None),
    )
    assert database_failure(IntegrityError("INSERT", {}, orig)) == DatabaseFailure(  # type: ignore[arg-type]
        "23514", "ck_orders_paid"
    )
    not_null = SimpleNamespace(
        sqlstate="23502",
        diag=SimpleNamespace(constraint_name=None, table_name="orders", column_name="status"),
    )
    assert database_failure(IntegrityError("INSERT", {}, not_null)) == DatabaseFailure(  # type: ignore[arg-type]
        "23502", None, "orders.status"
    )
    assert database_failure(_pg(psycopg.errors.DeadlockDetected)) == DatabaseFailure("40P01")
    assert database_failure(RuntimeError("no orig")) == DatabaseFailure(None)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        # Integrity: only the listed unique constraints are a concurrent change.
        (
            _sqlite(
                "UNIQUE constraint failed: idempotency_keys.scope, idempotency_keys.key",
                statement="INSERT INTO idempotency_keys ...",
            ),
            "concurrent_change",
        ),
        (_sqlite("UNIQUE constraint failed: audit_entries.entry_id"), "bug"),
        (_sqlite("CHECK constraint failed: ck_orders_paid"), "bug"),
        (_sqlite("FOREIGN KEY constraint failed"), "bug"),
        (_sqlite("NOT NULL constraint failed: orders.status"), "bug"),
        (_pg(psycopg.errors.CheckViolation, IntegrityError), "bug"),
        (_pg(psycopg.errors.UniqueViolation, IntegrityError), "bug"),  # no constraint named
        # Busy: the loser of a deadlock, a serialization failure or a lock wait.
        (_pg(psycopg.errors.DeadlockDetected), "busy"),
        (_pg(psycopg.errors.SerializationFailure), "busy"),
        (_pg(psycopg.errors.LockNotAvailable), "busy"),
        (_sqlite("database is locked", OperationalError), "busy"),
        # Unreachable: the connection is gone or cannot be made.
        (_pg(psycopg.errors.AdminShutdown), "unavailable"),
        (_pg(psycopg.errors.CrashShutdown), "unavailable"),
        (_pg(psycopg.errors.CannotConnectNow), "unavailable"),
        (_pg(psycopg.errors.ConnectionFailure), "unavailable"),  # 08006
        (_pg(psycopg.errors.SqlclientUnableToEstablishSqlconnection), "unavailable"),  # 08001
        (_pg(psycopg.OperationalError, connection_invalidated=True), "unavailable"),
        (_pg(psycopg.InterfaceError, InterfaceError, connection_invalidated=True), "unavailable"),
        (DisconnectionError("pool connection lost"), "unavailable"),
        (_sqlite("unable to open database file", OperationalError), "unavailable"),
        # Anything else is a bug.
        (_pg(psycopg.errors.UndefinedTable), "bug"),  # 42P01
        (_pg(psycopg.errors.QueryCanceled), "bug"),  # 57014: a statement timeout
        (_pg(psycopg.OperationalError), "bug"),  # no SQLSTATE, connection not invalidated
        (_pg(psycopg.InterfaceError, InterfaceError), "bug"),
        (_sqlite("no such table: nowhere", OperationalError), "bug"),
        (_sqlite("disk I/O error", OperationalError), "bug"),
    ],
    ids=lambda value: _id(value),
)
def test_what_each_database_error_means_for_the_caller(error: Exception, kind: str) -> None:
    assert _kind(error) == kind
