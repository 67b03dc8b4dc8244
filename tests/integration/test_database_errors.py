"""Database errors that do not hide bugs (issue 9 item 4), on SQLite and PostgreSQL.

- Only a unique violation that means a concurrent change of the same record is 409
  `concurrent_change` (web/problems.py's CONCURRENT_CHANGE_CONSTRAINTS).
- Every other integrity error is 500 `internal_error`; the log names the constraint and the
  SQLSTATE, never the values.
- A deadlock or serialization failure that reaches the web layer is 503 `database_busy`; a lost
  or unreachable database is 503 `database_unavailable` (a real one:
  test_database_reconnect.py); any other operational error is 500.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg.errors
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from product_shop.audit.tables import AuditEntry
from product_shop.catalogue import repository
from product_shop.catalogue.tables import PracticeProductSetting
from product_shop.context import AppContext
from product_shop.db.engine import Database
from product_shop.idempotency.tables import IdempotencyKey
from product_shop.logging import configure_logging
from product_shop.web.problems import (
    PROBLEM_MEDIA_TYPE,
    DatabaseFailure,
    database_error_kind,
    database_failure,
)
from tests.conftest import World
from tests.integration.conftest import count_rows

MakeProduct = Callable[..., uuid.UUID]
# A value that must never leave the database error: not in the response, not in the log.
SECRET_NOTE = "Note-for-Dr-Quimby-7731"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    configure_logging("INFO")


def _lines(logs: io.StringIO, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == event]


def _setting(
    practice_id: uuid.UUID, product_id: uuid.UUID, **fields: Any
) -> PracticeProductSetting:
    values: dict[str, Any] = {
        "practice_id": practice_id,
        "product_id": product_id,
        "retail_price_minor": 5999,
        "practice_note": SECRET_NOTE,
        "visible": True,
        "in_clinic_stock_available": False,
        "version": 1,
        "updated_at": NOW,
        "updated_by": "someone",
    }
    values.update(fields)
    return PracticeProductSetting(**values)


def _audit_entry(**fields: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "entry_id": uuid.uuid4(),
        "stream_type": "practice_catalogue",
        "stream_id": "p-1",
        "stream_seq": 1,
        "recorded_at": NOW,
        "actor_id": "a-1",
        "actor_role": "practice_admin",
        "actor_name": None,
        "action": "practice_product.settings_changed",
        "practice_id": None,
        "before": None,
        "after": None,
        "prev_hash": "0" * 64,
        "entry_hash": "1" * 64,
    }
    values.update(fields)
    return AuditEntry(**values)


def _idempotency_key() -> IdempotencyKey:
    return IdempotencyKey(
        scope="caller-1",
        key="key-1",
        operation="createCheckout",
        fingerprint="f" * 64,
        status="in_flight",
        claim_token="t",
        created_at=NOW,
        expires_at=NOW + timedelta(hours=24),
    )


def _violation(database: Database, first: Any, second: Any) -> IntegrityError:
    """Insert `first` (if any) and commit, then `second`: the integrity error it raises."""
    if first is not None:
        with Session(database.engine) as session:
            session.add(first)
            session.commit()
    with Session(database.engine) as session:
        session.add(second)
        with pytest.raises(IntegrityError) as raised:
            session.flush()
        session.rollback()
    return raised.value


# ---- reading real violations -------------------------------------------------------------


def test_real_violations_are_read_the_same_way_on_both_engines(
    database: Database, make_product: MakeProduct
) -> None:
    product, practice, entry = make_product(), uuid.uuid4(), uuid.uuid4()
    cases: list[tuple[Any, Any, DatabaseFailure, str]] = [
        (  # two admins create the same setting at once
            _setting(practice, product),
            _setting(practice, product),
            DatabaseFailure("23505", "pk_practice_product_settings"),
            "concurrent_change",
        ),
        (  # two requests claim one Idempotency-Key
            _idempotency_key(),
            _idempotency_key(),
            DatabaseFailure("23505", "pk_idempotency_keys"),
            "concurrent_change",
        ),
        (  # two writers append to one audit stream from the same head
            _audit_entry(),
            _audit_entry(),
            DatabaseFailure("23505", "uq_audit_entries_stream_type_stream_id_stream_seq"),
            "concurrent_change",
        ),
        (  # a generated id used twice: a bug, not a race
            _audit_entry(entry_id=entry, stream_id="p-2"),
            _audit_entry(entry_id=entry, stream_id="p-3"),
            DatabaseFailure("23505", "uq_audit_entries_entry_id"),
            "bug",
        ),
        (
            None,
            _setting(practice, make_product(), retail_price_minor=-1),
            DatabaseFailure("23514", "ck_practice_product_settings_retail_price_positive"),
            "bug",
        ),
        (
            None,
            _setting(practice, uuid.uuid4()),
            DatabaseFailure("23503", "fk_practice_product_settings_product_id_products"),
            "bug",
        ),
        (
            None,
            _setting(practice, make_product(), visible=None),
            DatabaseFailure("23502", None, "practice_product_settings.visible"),
            "bug",
        ),
    ]
    for first, second, expected, kind in cases:
        error = _violation(database, first, second)
        failure = database_failure(error)
        # SQLite names the columns of an unnamed unique; only the constraint is compared there.
        assert (failure.sqlstate, failure.constraint) == (expected.sqlstate, expected.constraint)
        if expected.columns is not None:
            assert failure.columns == expected.columns
        assert database_error_kind(error, failure) == kind, expected


def test_a_missing_table_is_read_as_a_bug_on_both_engines(database: Database) -> None:
    with Session(database.engine) as session, pytest.raises(Exception) as raised:  # noqa: PT011
        session.execute(text("SELECT * FROM no_such_table"))
    # SQLite: an OperationalError (which used to be answered 503); PostgreSQL: a ProgrammingError
    assert database_error_kind(raised.value, database_failure(raised.value)) == "bug"


# ---- through the API ---------------------------------------------------------------------


def _put_settings(client: TestClient, world: World, product: uuid.UUID) -> Any:
    return client.put(
        f"/v1/catalogue/{product}/practice-settings",
        headers=world.admin_a.headers,
        json={"retail_price_minor": 4999, "visible": True},
    )


def _insert_instead(
    monkeypatch: pytest.MonkeyPatch, context: AppContext, row: Callable[[uuid.UUID], Any]
) -> None:
    """The settings route's service writes `row(product_id)` instead: a bug that breaks a
    constraint, with personal text in the row."""

    def broken(session: Session, actor: Any, product_id: uuid.UUID, *_: Any, **__: Any) -> Any:
        session.add(row(product_id))
        session.flush()
        raise AssertionError("the flush should have failed")

    monkeypatch.setattr(context.catalogue, "set_practice_settings", broken)


@pytest.mark.parametrize(
    ("bad_row", "constraint", "sqlstate"),
    [
        (
            lambda practice, product: _setting(practice, product, retail_price_minor=-1),
            "ck_practice_product_settings_retail_price_positive",
            "23514",
        ),
        (
            lambda practice, _product: _setting(practice, uuid.uuid4()),
            "fk_practice_product_settings_product_id_products",
            "23503",
        ),
    ],
    ids=["check", "foreign_key"],
)
def test_a_constraint_a_bug_breaks_is_a_500_and_the_log_names_it_without_values(
    client: TestClient,
    context: AppContext,
    world: World,
    make_product: MakeProduct,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    bad_row: Callable[[uuid.UUID, uuid.UUID], Any],
    constraint: str,
    sqlstate: str,
) -> None:
    product = make_product()
    _insert_instead(monkeypatch, context, lambda product_id: bad_row(world.practice_a, product_id))

    response = _put_settings(client, world, product)

    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    problem = response.json()
    assert (problem["code"], problem["type"]) == ("internal_error", "/problems/internal_error")
    assert SECRET_NOTE not in response.text
    assert constraint not in response.text  # the caller learns nothing of the schema either
    (logged,) = _lines(logs, "database_error")
    assert logged["constraint"] == constraint
    assert logged["sqlstate"] == sqlstate
    assert logged["error"].startswith("sqlalchemy.exc.IntegrityError <- ")
    assert logged["route"] == "/v1/catalogue/{product_id}/practice-settings"
    assert logged["request_id"] == problem["request_id"]
    assert SECRET_NOTE not in logs.getvalue()
    assert str(world.practice_a) not in logs.getvalue()
    assert count_rows(context.database, PracticeProductSetting) == 0


def test_settings_created_by_another_admin_since_they_were_read_are_a_409(
    client: TestClient,
    context: AppContext,
    world: World,
    make_product: MakeProduct,
    offer: Callable[..., None],
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race, replayed: the row another admin committed is not seen by this request's read."""
    product = make_product()
    offer(world.admin_a, product, 5999)
    monkeypatch.setattr(repository, "get_setting", lambda *_, **__: None)

    response = _put_settings(client, world, product)

    assert response.status_code == 409, response.text
    problem = response.json()
    assert (problem["code"], problem["type"]) == (
        "concurrent_change",
        "/problems/concurrent_change",
    )
    (logged,) = _lines(logs, "concurrent_change")
    assert (logged["constraint"], logged["sqlstate"]) == ("pk_practice_product_settings", "23505")
    assert not _lines(logs, "database_error")
    monkeypatch.undo()
    assert _put_settings(client, world, product).status_code == 200  # the retry goes through


def test_two_admins_creating_the_same_settings_at_once_get_one_200_and_one_409(
    client: TestClient,
    context: AppContext,
    world: World,
    make_product: MakeProduct,
    monkeypatch: pytest.MonkeyPatch,
    engine_name: str,
) -> None:
    """A real race on PostgreSQL: both requests read "no settings yet" (no row to lock) before
    either writes; the loser gets 409. On SQLite the locking read takes the database's write
    lock, so the second request waits, finds the first one's row and updates it: both 200."""
    product = make_product()
    both_read = threading.Barrier(2, timeout=10)
    read = repository.get_setting

    def get_setting_then_wait(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait(timeout=None if engine_name == "postgresql" else 1)
        return found

    monkeypatch.setattr(repository, "get_setting", get_setting_then_wait)
    responses: list[Any] = []

    def put() -> None:
        responses.append(_put_settings(client, world, product))

    threads = [threading.Thread(target=put) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    statuses = sorted(r.status_code for r in responses)
    if engine_name == "sqlite":
        assert statuses == [200, 200], [r.text for r in responses]
    else:
        assert statuses == [200, 409], [r.text for r in responses]
        (conflict,) = [r for r in responses if r.status_code == 409]
        assert conflict.json()["code"] == "concurrent_change"
    assert count_rows(context.database, PracticeProductSetting) == 1


def _fail_reads_with(
    monkeypatch: pytest.MonkeyPatch, context: AppContext, error: Exception
) -> None:
    def failing(*_: Any, **__: Any) -> Any:
        raise error

    monkeypatch.setattr(context.catalogue, "catalogue", failing)


@pytest.mark.parametrize(
    "orig",
    [psycopg.errors.DeadlockDetected("deadlock detected"), psycopg.errors.SerializationFailure()],
    ids=["deadlock", "serialization_failure"],
)
def test_a_deadlock_or_serialization_failure_that_reaches_the_api_is_a_503_busy(
    client: TestClient,
    context: AppContext,
    world: World,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    orig: Exception,
) -> None:
    _fail_reads_with(monkeypatch, context, OperationalError("SELECT 1", {}, orig))

    response = client.get("/v1/catalogue", headers=world.patient_a.headers)

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    problem = response.json()
    assert (problem["code"], problem["type"]) == ("database_busy", "/problems/database_busy")
    (logged,) = _lines(logs, "database_busy")
    assert logged["sqlstate"] == orig.sqlstate  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "error",
    [
        OperationalError(
            "SELECT 1", {}, psycopg.OperationalError("server closed"), connection_invalidated=True
        ),
        OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("terminating connection")),
        DisconnectionError("connection lost"),
        OperationalError(None, None, sqlite3.OperationalError("unable to open database file")),
    ],
    ids=["connection_invalidated", "admin_shutdown", "disconnection", "sqlite_cannot_open"],
)
def test_a_lost_or_unreachable_database_is_a_503_unavailable(
    client: TestClient,
    context: AppContext,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    _fail_reads_with(monkeypatch, context, error)

    response = client.get("/v1/catalogue", headers=world.patient_a.headers)

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["code"] == "database_unavailable"
    assert "terminating" not in response.text
    assert "server closed" not in response.text


def test_any_other_operational_error_is_a_500(
    client: TestClient,
    context: AppContext,
    world: World,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    orig = psycopg.errors.UndefinedTable('relation "nowhere" does not exist')
    _fail_reads_with(monkeypatch, context, OperationalError("SELECT * FROM nowhere", {}, orig))

    response = client.get("/v1/catalogue", headers=world.patient_a.headers)

    assert response.status_code == 500, response.text
    assert response.json()["code"] == "internal_error"
    assert "nowhere" not in response.text
    (logged,) = _lines(logs, "database_error")
    assert logged["sqlstate"] == "42P01"
    assert logged["route"] == "/v1/catalogue"


def test_a_missing_table_is_a_500_on_both_engines(
    client: TestClient, context: AppContext, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite reports it as an OperationalError, which used to be answered 503 "unavailable"."""

    def reads_a_missing_table(session: Session, *_: Any, **__: Any) -> Any:
        return session.execute(text("SELECT * FROM no_such_table")).all()

    monkeypatch.setattr(context.catalogue, "catalogue", reads_a_missing_table)

    response = client.get("/v1/catalogue", headers=world.patient_a.headers)

    assert response.status_code == 500, response.text
    assert response.json()["code"] == "internal_error"
