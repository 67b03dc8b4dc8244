"""db.fast.Statements on both engines: reads, queued writes, types, errors and the audit chain.

Every row written through `Statements` is read back twice, through `Statements` and through the
ORM, so the psycopg path (PostgreSQL) and the Core path (SQLite) are held to the same answers,
and to what SQLAlchemy itself does on the same database.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    StatementError,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import CompilerElement

from product_shop.audit.log import (
    GENESIS_HASH,
    STREAM_HEAD,
    AuditActor,
    AuditLog,
    compute_hash,
    entry_document,
    verify_stream,
)
from product_shop.audit.tables import AuditEntry
from product_shop.core.clock import FrozenClock
from product_shop.db import fast
from product_shop.db.engine import Database
from product_shop.db.fast import Statements
from product_shop.events.tables import OutboxEvent
from tests.conftest import as_owner
from tests.integration.fast_support import (
    EVENT,
    EVENTS,
    KOLKATA,
    LOCKED_EVENT,
    LOCKED_EVENT_NOWAIT,
    NOW,
    TRANSACTION_ID,
    assert_utc,
    event_row,
    use_far_time_zone,
)

ACTOR = AuditActor(actor_id="staff-1", role="staff", name="Stan Staff")

EVENTS_OF = EVENTS.where(OutboxEvent.aggregate_id == bindparam("aggregate_id"))
FIRST_EVENT = EVENTS.limit(1)
AUDIT_ENTRIES = select(
    AuditEntry.entry_id,
    AuditEntry.stream_type,
    AuditEntry.stream_id,
    AuditEntry.stream_seq,
    AuditEntry.recorded_at,
    AuditEntry.practice_id,
    AuditEntry.before,
    AuditEntry.after,
).order_by(AuditEntry.position)


def audit_row(**overrides: Any) -> dict[str, Any]:
    """A complete audit row (hashes are placeholders: only the chain tests hash)."""
    row: dict[str, Any] = {
        "entry_id": uuid.uuid4(),
        "stream_type": "order",
        "stream_id": "order-1",
        "stream_seq": 1,
        "recorded_at": NOW,
        "actor_id": ACTOR.actor_id,
        "actor_role": ACTOR.role,
        "actor_name": ACTOR.name,
        "action": "order.created",
        "practice_id": uuid.uuid4(),
        "before": None,
        "after": {"status": "created"},
        "prev_hash": GENESIS_HASH,
        "entry_hash": "1" * 64,
    }
    row.update(overrides)
    return row


def commit_rows(database: Database, model: Any, rows: list[dict[str, Any]]) -> None:
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(model, rows)
        statements.flush()


def stored_events(database: Database) -> list[dict[str, Any]]:
    with database.unit_of_work() as session:
        return Statements(session).all(EVENTS)


def orm_events(database: Database) -> list[OutboxEvent]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.position)))


def orm_audit(database: Database, stream_id: str | None = None) -> list[AuditEntry]:
    statement = select(AuditEntry).order_by(AuditEntry.stream_seq, AuditEntry.position)
    if stream_id is not None:
        statement = statement.where(AuditEntry.stream_id == stream_id)
    with database.unit_of_work() as session:
        return list(session.scalars(statement))


def status_of(statements: Statements, event_id: uuid.UUID) -> str:
    found = statements.one(EVENT, event_id=event_id)
    assert found is not None
    status: str = found["status"]
    return status


def assert_naive_refused(error: BaseException) -> None:
    """ValueError from UTCDateTime, raised as is (psycopg path) or wrapped by SQLAlchemy."""
    if isinstance(error, StatementError):
        error = error.orig  # type: ignore[assignment]
    assert isinstance(error, ValueError)
    assert "naive datetime refused" in str(error)


# ---- 1. types ------------------------------------------------------------------------------


def test_inserted_rows_read_back_with_python_types_through_statements_and_the_orm(
    database: Database, engine_name: str
) -> None:
    document_id = uuid.uuid4()
    rows = [
        event_row(
            aggregate_id=f"order-{n}",
            occurred_at=(NOW + timedelta(minutes=n)).astimezone(KOLKATA),
            next_attempt_at=NOW + timedelta(hours=n),
            data={
                "n": n,
                "lines": [{"sku": "A", "quantity": 2}],
                "paid": True,
                "note": None,
                # Encoded with json_default, as SQLAlchemy's engine encodes them.
                "id": document_id,
                "at": NOW.astimezone(KOLKATA),
            },
        )
        for n in range(3)
    ]
    expected_data = [
        {
            "n": n,
            "lines": [{"sku": "A", "quantity": 2}],
            "paid": True,
            "note": None,
            "id": str(document_id),
            "at": "2025-03-14T09:26:53.589793+00:00",
        }
        for n in range(3)
    ]
    with database.unit_of_work() as session:
        use_far_time_zone(session, engine_name)
        statements = Statements(session)
        statements.insert(OutboxEvent, rows)
        statements.flush()
        read = statements.all(EVENTS)
        second = statements.one(EVENT, event_id=rows[1]["event_id"])

    assert [r["event_id"] for r in read] == [r["event_id"] for r in rows]
    for n, (got, sent) in enumerate(zip(read, rows, strict=True)):
        assert type(got["event_id"]) is uuid.UUID
        assert_utc(got["occurred_at"], NOW + timedelta(minutes=n))
        assert_utc(got["next_attempt_at"], NOW + timedelta(hours=n))
        assert got["delivered_at"] is None
        assert got["data"] == expected_data[n]
        assert type(got["data"]) is dict
        assert (got["status"], got["attempts"], got["last_error"]) == ("pending", 0, None)
        assert got["aggregate_id"] == sent["aggregate_id"]
    assert second == read[1]

    orm = orm_events(database)
    assert [
        (
            e.position,
            e.event_id,
            e.aggregate_id,
            e.occurred_at,
            e.next_attempt_at,
            e.data,
            e.status,
            e.attempts,
        )
        for e in orm
    ] == [
        (
            r["position"],
            r["event_id"],
            r["aggregate_id"],
            r["occurred_at"],
            r["next_attempt_at"],
            r["data"],
            r["status"],
            r["attempts"],
        )
        for r in read
    ]
    assert all(e.occurred_at.tzinfo is not None for e in orm)
    # A second session reads what was committed, the same way.
    assert stored_events(database) == read


def test_audit_rows_keep_uuid_json_and_timestamps_on_both_paths(
    database: Database, engine_name: str
) -> None:
    practice = uuid.uuid4()
    row = audit_row(
        practice_id=practice,
        recorded_at=NOW.astimezone(KOLKATA),
        before={"status": "awaiting_payment"},
        after={"status": "completed", "order_id": "o-1", "lines": [1, 2]},
    )
    with database.unit_of_work() as session:
        use_far_time_zone(session, engine_name)
        statements = Statements(session)
        statements.insert(AuditEntry, [row])
        statements.flush()
        [read] = statements.all(AUDIT_ENTRIES)
    assert read["practice_id"] == practice
    assert type(read["practice_id"]) is uuid.UUID
    assert_utc(read["recorded_at"], NOW)
    assert read["before"] == {"status": "awaiting_payment"}
    assert read["after"] == {"status": "completed", "order_id": "o-1", "lines": [1, 2]}

    [entry] = orm_audit(database)
    assert (entry.entry_id, entry.practice_id, entry.before, entry.after) == (
        row["entry_id"],
        practice,
        read["before"],
        read["after"],
    )
    assert entry.recorded_at == NOW


# ---- 2. update -----------------------------------------------------------------------------


def test_update_changes_only_the_matching_row(database: Database, engine_name: str) -> None:
    rows = [event_row(aggregate_id="order-1"), event_row(aggregate_id="order-2")]
    commit_rows(database, OutboxEvent, rows)
    before = stored_events(database)
    delivered = (NOW + timedelta(seconds=30)).astimezone(KOLKATA)

    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.update(
            OutboxEvent,
            {"event_id": rows[1]["event_id"]},
            {
                "status": "delivered",
                "attempts": 3,
                "delivered_at": delivered,
                "data": {"delivered": True, "at": delivered},
            },
        )
        statements.flush()

    after = stored_events(database)
    assert after[0] == before[0]
    changed = after[1]
    assert (changed["status"], changed["attempts"]) == ("delivered", 3)
    assert_utc(changed["delivered_at"], NOW + timedelta(seconds=30))
    assert changed["data"] == {"delivered": True, "at": "2025-03-14T09:27:23.589793+00:00"}
    assert {
        k: v for k, v in changed.items() if k not in ("status", "attempts", "delivered_at", "data")
    } == {
        k: v
        for k, v in before[1].items()
        if k not in ("status", "attempts", "delivered_at", "data")
    }
    orm = orm_events(database)
    assert [(e.status, e.attempts, e.delivered_at) for e in orm] == [
        ("pending", 0, None),
        ("delivered", 3, NOW + timedelta(seconds=30)),
    ]


def test_update_where_matches_all_keys_and_a_timestamp_key(database: Database) -> None:
    later = NOW + timedelta(minutes=5)
    rows = [
        event_row(aggregate_id="order-1", occurred_at=NOW),
        event_row(aggregate_id="order-1", occurred_at=later),
        event_row(aggregate_id="order-2", occurred_at=later),
    ]
    commit_rows(database, OutboxEvent, rows)

    with database.unit_of_work() as session:
        statements = Statements(session)
        # Both keys must match: only the second row. The timestamp key goes through UTCDateTime.
        statements.update(
            OutboxEvent,
            {"aggregate_id": "order-1", "occurred_at": later.astimezone(KOLKATA)},
            {"status": "parked"},
        )
        # No row matches: nothing changes, nothing fails (any number of rows was allowed).
        statements.update(OutboxEvent, {"aggregate_id": "order-9"}, {"status": "lost"}, expect=None)
        statements.flush()

    assert [e["status"] for e in stored_events(database)] == ["pending", "parked", "pending"]
    assert [e.status for e in orm_events(database)] == ["pending", "parked", "pending"]


def test_queued_writes_run_in_order_within_one_flush(database: Database) -> None:
    row = event_row()
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, [row])
        statements.update(OutboxEvent, {"event_id": row["event_id"]}, {"attempts": 1})
        statements.update(OutboxEvent, {"event_id": row["event_id"]}, {"attempts": 2})
        statements.flush()
    assert [(e.event_id, e.attempts) for e in orm_events(database)] == [(row["event_id"], 2)]


# ---- 3. queued until flush -----------------------------------------------------------------


def test_writes_are_queued_until_flush_and_roll_back_with_the_unit_of_work(
    database: Database,
) -> None:
    committed = event_row(aggregate_id="order-0")
    commit_rows(database, OutboxEvent, [committed])
    row = event_row(aggregate_id="order-1")

    class Abort(Exception):
        pass

    def queue_check_and_abort() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.insert(OutboxEvent, [row])
            statements.insert(AuditEntry, [audit_row()])
            statements.update(OutboxEvent, {"event_id": committed["event_id"]}, {"status": "gone"})
            assert statements.one(EVENT, event_id=row["event_id"]) is None
            assert statements.all(AUDIT_ENTRIES) == []
            assert status_of(statements, committed["event_id"]) == "pending"
            statements.flush()
            found = statements.one(EVENT, event_id=row["event_id"])
            assert found is not None
            assert found["aggregate_id"] == "order-1"
            assert len(statements.all(AUDIT_ENTRIES)) == 1
            assert status_of(statements, committed["event_id"]) == "gone"
            # The ORM sees the same transaction.
            by_orm = select(OutboxEvent.aggregate_id).order_by(OutboxEvent.position)
            assert session.scalars(by_orm).all() == ["order-0", "order-1"]
            # A flush with nothing queued sends nothing (and the queue was emptied).
            statements.flush()
            raise Abort

    with pytest.raises(Abort):
        queue_check_and_abort()

    assert [(e["event_id"], e["status"]) for e in stored_events(database)] == [
        (committed["event_id"], "pending")
    ]
    assert orm_audit(database) == []


def test_flush_empties_the_queue(database: Database) -> None:
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, [event_row()])
        statements.insert(OutboxEvent, [])  # nothing to queue
        statements.flush()
        statements.flush()  # a second flush must not insert the row again
    assert len(orm_events(database)) == 1


# ---- 4. naive datetimes --------------------------------------------------------------------


def test_a_naive_datetime_in_an_inserted_row_is_refused_and_nothing_is_written(
    database: Database,
) -> None:
    good = event_row(aggregate_id="good")
    naive = event_row(aggregate_id="naive", occurred_at=NOW.replace(tzinfo=None))
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, [good, naive])
        with pytest.raises((ValueError, StatementError)) as refused:
            statements.flush()
        assert_naive_refused(refused.value)
        # Not even the valid row of the same batch went out.
        assert statements.all(EVENTS) == []
    # The unit of work committed normally: still nothing.
    assert stored_events(database) == []
    assert orm_events(database) == []


@pytest.mark.parametrize("place", ["values", "where"])
def test_a_naive_datetime_in_an_update_is_refused(database: Database, place: str) -> None:
    row = event_row()
    commit_rows(database, OutboxEvent, [row])
    naive = NOW.replace(tzinfo=None)
    where: dict[str, Any] = {"event_id": row["event_id"]}
    values: dict[str, Any] = {"status": "delivered"}
    if place == "values":
        values["delivered_at"] = naive
    else:
        where["occurred_at"] = naive

    def update_with_a_naive_timestamp() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.update(OutboxEvent, where, values)
            statements.flush()

    with pytest.raises((ValueError, StatementError)) as refused:
        update_with_a_naive_timestamp()
    assert_naive_refused(refused.value)
    [stored] = orm_events(database)
    assert (stored.status, stored.delivered_at) == ("pending", None)


# ---- 5. integrity errors -------------------------------------------------------------------


def test_a_duplicate_key_raises_integrity_error_and_nothing_queued_with_it_remains(
    database: Database, engine_name: str
) -> None:
    existing = event_row(aggregate_id="existing")
    commit_rows(database, OutboxEvent, [existing])
    before = stored_events(database)

    def queue_with_a_duplicate_last() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.update(
                OutboxEvent, {"event_id": existing["event_id"]}, {"status": "changed"}
            )
            statements.insert(AuditEntry, [audit_row(stream_id="s-1"), audit_row(stream_id="s-2")])
            statements.insert(
                OutboxEvent,
                [
                    event_row(aggregate_id="fresh"),
                    # The same event_id as the committed row: unique key violated.
                    event_row(aggregate_id="duplicate", event_id=existing["event_id"]),
                ],
            )
            statements.flush()

    with pytest.raises(IntegrityError) as failed:
        queue_with_a_duplicate_last()

    if engine_name == "postgresql":
        assert isinstance(failed.value.orig, psycopg.errors.UniqueViolation)
    assert stored_events(database) == before
    assert [(e.aggregate_id, e.status) for e in orm_events(database)] == [("existing", "pending")]
    assert orm_audit(database) == []


def test_a_duplicate_within_one_batch_raises_integrity_error(database: Database) -> None:
    entry = audit_row()

    def queue_a_batch_with_a_duplicate() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.insert(OutboxEvent, [event_row()])
            # Same (stream_type, stream_id, stream_seq): the unique constraint refuses the second.
            statements.insert(AuditEntry, [entry, audit_row()])
            statements.flush()

    with pytest.raises(IntegrityError):
        queue_a_batch_with_a_duplicate()
    assert orm_audit(database) == []
    assert orm_events(database) == []


def test_other_database_errors_surface_as_sqlalchemy_errors(
    database: Database, engine_name: str
) -> None:
    # A bind parameter nobody supplied: psycopg's ProgrammingError, SQLAlchemy's StatementError.
    with pytest.raises(StatementError) as missing, database.unit_of_work() as session:
        Statements(session).one(EVENT)
    if engine_name == "postgresql":
        assert isinstance(missing.value, DBAPIError)
        assert not isinstance(missing.value, IntegrityError | OperationalError)
        assert isinstance(missing.value.orig, psycopg.ProgrammingError)


# ---- 6. reads ------------------------------------------------------------------------------


def test_many_returns_one_list_per_query_in_order_and_limits_hold(database: Database) -> None:
    rows = [
        event_row(aggregate_id="a"),
        event_row(aggregate_id="b"),
        event_row(aggregate_id="b"),
    ]
    commit_rows(database, OutboxEvent, rows)
    commit_rows(database, AuditEntry, [audit_row(stream_id="s-1")])

    with database.unit_of_work() as session:
        statements = Statements(session)
        of_b, audit, first, of_a, of_none = statements.many(
            (EVENTS_OF, {"aggregate_id": "b"}),
            (AUDIT_ENTRIES, {}),
            (FIRST_EVENT, {}),
            (EVENTS_OF, {"aggregate_id": "a"}),
            (EVENTS_OF, {"aggregate_id": "nobody"}),
        )
        limited = statements.all(FIRST_EVENT)
        first_one = statements.one(FIRST_EVENT)
        first_of_b = statements.one(EVENTS_OF, aggregate_id="b")
        nothing = statements.one(EVENTS_OF, aggregate_id="nobody")
        nothing_all = statements.all(EVENTS_OF, aggregate_id="nobody")
        again = statements.many((EVENTS_OF, {"aggregate_id": "a"}))

    assert [r["event_id"] for r in of_b] == [rows[1]["event_id"], rows[2]["event_id"]]
    assert [r["stream_id"] for r in audit] == ["s-1"]
    assert [r["event_id"] for r in first] == [rows[0]["event_id"]]
    assert [r["event_id"] for r in of_a] == [rows[0]["event_id"]]
    assert of_none == []
    assert_utc(of_b[0]["occurred_at"], NOW)
    assert type(audit[0]["practice_id"]) is uuid.UUID
    assert [r["event_id"] for r in limited] == [rows[0]["event_id"]]
    assert first_one == limited[0]
    assert first_of_b is not None
    assert first_of_b["event_id"] == rows[1]["event_id"]
    assert nothing is None
    assert nothing_all == []
    assert again == [of_a]


def test_many_with_no_rows_anywhere(database: Database) -> None:
    with database.unit_of_work() as session:
        assert Statements(session).many((EVENTS, {}), (AUDIT_ENTRIES, {})) == [[], []]
        assert Statements(session).one(FIRST_EVENT) is None


# ---- 7. PostgreSQL: locks, one transaction, compile caches ---------------------------------


@pytest.mark.postgres_only
def test_many_locks_and_reads_in_the_session_transaction(database: Database) -> None:
    row = event_row()
    commit_rows(database, OutboxEvent, [row])
    commit_rows(database, AuditEntry, [audit_row(stream_id="s-1")])

    with database.unit_of_work() as session:
        statements = Statements(session)
        locked, audit, [transaction] = statements.many(
            (LOCKED_EVENT, {"event_id": row["event_id"]}),
            (AUDIT_ENTRIES, {}),
            (TRANSACTION_ID, {}),
        )
        assert [r["event_id"] for r in locked] == [row["event_id"]]
        assert [r["stream_id"] for r in audit] == ["s-1"]
        # The same transaction as the session's own statements.
        assert transaction["txid"] == session.execute(TRANSACTION_ID).scalar_one()

        # The lock is held by this transaction: another session cannot take it.
        other = Session(database.engine)
        try:
            with pytest.raises(OperationalError) as busy:
                Statements(other).one(LOCKED_EVENT_NOWAIT, event_id=row["event_id"])
            assert isinstance(busy.value.orig, psycopg.errors.LockNotAvailable)
        finally:
            other.close()

        # Writes in the same transaction go through while the lock is held.
        statements.update(OutboxEvent, {"event_id": row["event_id"]}, {"status": "delivered"})
        statements.flush()

    # Committed: the lock is gone and the change is there.
    with database.unit_of_work() as session:
        found = Statements(session).one(LOCKED_EVENT_NOWAIT, event_id=row["event_id"])
    assert found is not None
    assert found["status"] == "delivered"


@pytest.mark.postgres_only
def test_statements_are_compiled_once_and_reused(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "_compiled_selects", {})
    monkeypatch.setattr(fast, "_insert_sql", {})
    monkeypatch.setattr(fast, "_update_sql", {})
    compiled: list[str] = []
    original = CompilerElement.compile

    def counting(self: CompilerElement, *args: Any, **kwargs: Any) -> Any:
        compiled.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CompilerElement, "compile", counting)

    first, second = event_row(), event_row()
    cached: tuple[dict[Any, Any], ...] = ()  # the caches after the first unit of work
    for row in (first, second):  # two units of work, two Statements
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.insert(OutboxEvent, [row])
            statements.update(OutboxEvent, {"event_id": row["event_id"]}, {"attempts": 1})
            statements.flush()
            assert statements.one(EVENT, event_id=row["event_id"]) is not None
            assert (
                len(statements.many((FIRST_EVENT, {}), (EVENT, {"event_id": row["event_id"]}))) == 2
            )

        if row is first:  # what the second unit of work must reuse, as is
            cached = (
                dict(fast._compiled_selects),
                dict(fast._insert_sql),
                dict(fast._update_sql),
            )

    # One compile per statement, all in the first unit of work: nothing compiled again. The
    # update, with its row count checked, is a SELECT over `WITH updated AS (UPDATE ...)`.
    assert sorted(compiled) == ["Insert", "Select", "Select", "Select"]
    caches: tuple[dict[Any, Any], ...] = (
        fast._compiled_selects,
        fast._insert_sql,
        fast._update_sql,
    )
    for cache, first_entries in zip(caches, cached, strict=True):
        assert cache.keys() == first_entries.keys()
        assert all(cache[key] is entry for key, entry in first_entries.items())

    # What was cached, read from SQLAlchemy's compiled statements (not from the SQL text).
    assert set(fast._compiled_selects) == {EVENT, FIRST_EVENT}
    columns = tuple(column.key for column in EVENTS.selected_columns)
    timestamps = {"occurred_at", "next_attempt_at", "delivered_at"}
    # ... and the payload's decryption (db/encrypted.py EncryptedJSON): converted per row too.
    processed = timestamps | {"data"}
    first_event = fast._compiled_selects[FIRST_EVENT]
    assert first_event.sql is not None
    assert list(first_event.defaults.values()) == [1]  # the LIMIT SQLAlchemy bound itself
    assert first_event.params == ()  # nothing to convert or rename: UUIDs go as they are
    assert first_event.keys == columns
    assert first_event.results is not None
    assert {key for key, _ in first_event.results} == processed  # UTCDateTime's, decryption
    event = fast._compiled_selects[EVENT]
    assert event.sql is not None
    assert event.defaults == {}  # event_id is the caller's
    assert event.keys == columns
    assert event.results is not None
    assert {key for key, _ in event.results} == processed

    [(insert_key, inserting)] = fast._insert_sql.items()
    assert insert_key == ("outbox_events", tuple(first), 1)  # table, columns, rows
    assert inserting.sql.startswith("INSERT INTO outbox_events")
    assert inserting.names == (tuple(f"r0c{j}" for j in range(len(first))),)
    [(update_key, updating)] = fast._update_sql.items()
    # table, SET keys, WHERE keys, WHERE ... IS NULL keys, rows expected
    assert update_key == ("outbox_events", ("attempts",), ("event_id",), (), 1)
    assert updating.names == (("attempts",), ("w_event_id",))
    assert [e.attempts for e in orm_events(database)] == [1, 1]


def lose_the_connection(database: Database, statements: Statements) -> None:
    """Terminates the session's own PostgreSQL backend, as a database restart would."""
    backend = statements.one(select(func.pg_backend_pid().label("pid")))
    assert backend is not None
    with as_owner(database) as admin:
        # Waits (up to 5 s) until the backend is gone.
        admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": backend["pid"]})


@pytest.mark.postgres_only
def test_a_lost_connection_surfaces_as_operational_error(database: Database) -> None:
    session = Session(database.engine)
    try:
        statements = Statements(session)
        lose_the_connection(database, statements)
        with pytest.raises(OperationalError) as lost:
            statements.one(TRANSACTION_ID)
        assert isinstance(lost.value.orig, psycopg.OperationalError)
    finally:
        # Whether the rollback succeeds is test_a_lost_connection_is_invalidated_as_core_does.
        with contextlib.suppress(OperationalError):
            session.rollback()
        session.close()
    with database.unit_of_work() as session:  # the pool hands out a live connection again
        assert Statements(session).one(EVENTS) is None


@pytest.mark.postgres_only
def test_a_lost_connection_is_invalidated_as_core_does(database: Database) -> None:
    """As with Core, a lost connection raises OperationalError with connection_invalidated set
    and the connection invalidated (with the pool), so the session's rollback that follows
    succeeds instead of raising a second OperationalError ('the connection is lost') that, in
    Database.unit_of_work, would replace the original error."""
    session = Session(database.engine)
    try:
        statements = Statements(session)
        lose_the_connection(database, statements)
        with pytest.raises(OperationalError) as lost:
            statements.one(TRANSACTION_ID)
        rollback_error = None
        try:
            session.rollback()
        except OperationalError as exc:
            rollback_error = exc
    finally:
        session.close()
    assert lost.value.connection_invalidated
    assert rollback_error is None


# ---- 8. the audit chain --------------------------------------------------------------------


def test_note_head_sets_the_next_sequence_and_previous_hash(database: Database) -> None:
    log = AuditLog(FrozenClock(NOW))
    head_hash = "a" * 64
    with database.unit_of_work() as session:
        log.note_head(session, "t", "new-stream", None)
        log.note_head(session, "t", "old-stream", {"stream_seq": 4, "entry_hash": head_hash})
        fresh = log.row(session, stream_type="t", stream_id="new-stream", action="x", actor=ACTOR)
        fresh_next = log.row(
            session, stream_type="t", stream_id="new-stream", action="y", actor=ACTOR
        )
        moved_on = log.row(
            session, stream_type="t", stream_id="old-stream", action="x", actor=ACTOR
        )
    assert (fresh["stream_seq"], fresh["prev_hash"]) == (1, GENESIS_HASH)
    assert (fresh_next["stream_seq"], fresh_next["prev_hash"]) == (2, fresh["entry_hash"])
    assert (moved_on["stream_seq"], moved_on["prev_hash"]) == (5, head_hash)
    assert moved_on["recorded_at"] == NOW


def test_rows_inserted_through_statements_form_a_chain_verify_stream_accepts(
    database: Database, engine_name: str
) -> None:
    log = AuditLog(FrozenClock(NOW.astimezone(KOLKATA)))
    stream = str(uuid.uuid4())
    practice = uuid.uuid4()

    def entry(session: Session, action: str, n: int, **kwargs: Any) -> dict[str, Any]:
        return log.row(
            session,
            stream_type="checkout",
            stream_id=stream,
            action=action,
            actor=ACTOR,
            practice_id=practice,
            before={"n": n - 1, "id": uuid.UUID(int=n), "at": NOW},
            after={"n": n, "nested": {"list": [n, None, "é"]}},
            **kwargs,
        )

    # A new stream: the head is read the way OrderCreation.create reads it, through `many`.
    with database.unit_of_work() as session:
        use_far_time_zone(session, engine_name)
        statements = Statements(session)
        [heads] = statements.many((STREAM_HEAD, {"stream_type": "checkout", "stream_id": stream}))
        assert heads == []
        log.note_head(session, "checkout", stream, heads[0] if heads else None)
        statements.insert(AuditEntry, [entry(session, "a", 1), entry(session, "b", 2)])
        statements.flush()

    # Later: no note_head, so `row` looks the head up itself (STREAM_HEAD through `one`).
    with database.unit_of_work() as session:
        statements = Statements(session)
        head = statements.one(STREAM_HEAD, stream_type="checkout", stream_id=stream)
        assert head is not None
        assert head["stream_seq"] == 2
        third = entry(session, "c", 3)
        assert (third["stream_seq"], third["prev_hash"]) == (3, head["entry_hash"])
        statements.insert(AuditEntry, [third])
        statements.flush()

    # Another stream on the way must not disturb this one.
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(
            AuditEntry,
            [log.row(session, stream_type="checkout", stream_id="other", action="z", actor=ACTOR)],
        )
        statements.flush()

    entries = orm_audit(database, stream)
    assert [e.stream_seq for e in entries] == [1, 2, 3]
    assert verify_stream(entries)
    assert verify_stream(orm_audit(database, "other"))
    assert all(e.recorded_at == NOW for e in entries)
    assert entries[0].before == {
        "n": 0,
        "id": str(uuid.UUID(int=1)),
        "at": "2025-03-14T09:26:53.589793+00:00",
    }
    # What was read back is what was hashed; a changed document breaks the chain.
    assert compute_hash(entries[0].prev_hash, entry_document(entries[0])) == entries[0].entry_hash
    entries[1].after = {"n": 99}
    assert not verify_stream(entries)


# ---- as SQLAlchemy does it ------------------------------------------------------------------
# Each test states what SQLAlchemy (Core, the ORM) does; the PostgreSQL path must do the same.


def test_python_side_column_defaults_apply_on_insert(database: Database) -> None:
    """Columns left out of inserted rows take their Python-side scalar default
    (OutboxEvent.status 'pending', attempts 0), as with Core and the ORM."""
    row = event_row()
    del row["status"], row["attempts"]
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, [row])
        statements.flush()
    [stored] = orm_events(database)
    assert (stored.status, stored.attempts) == ("pending", 0)


def test_a_select_with_an_in_list(database: Database) -> None:
    """A SELECT with an IN list (`column.in_([...])`, an expanding parameter that cannot be
    compiled once) returns the matching rows."""
    rows = [event_row(), event_row(), event_row()]
    commit_rows(database, OutboxEvent, rows)
    wanted = [rows[0]["event_id"], rows[2]["event_id"]]
    with database.unit_of_work() as session:
        found = Statements(session).all(
            select(OutboxEvent.event_id).where(OutboxEvent.event_id.in_(wanted))
        )
    assert sorted(r["event_id"] for r in found) == sorted(wanted)


def test_read_parameters_pass_through_the_column_types(database: Database) -> None:
    """Read parameters go through the column's TypeDecorator, as with SQLAlchemy: a naive
    datetime compared with a UTCDateTime column is refused, not sent as is (and read in the
    session's time zone)."""
    before_time = select(OutboxEvent.event_id).where(OutboxEvent.occurred_at < bindparam("t"))
    with pytest.raises((ValueError, StatementError)), database.unit_of_work() as session:
        Statements(session).all(before_time, t=NOW.replace(tzinfo=None))


def test_none_in_a_json_column_is_stored_as_sqlalchemy_stores_it(database: Database) -> None:
    """A None in a JSON column is stored as the ORM stores it (the JSON value 'null', since
    JSON.none_as_null is False), so `AuditEntry.before IS NULL` does not depend on which path
    wrote the row."""
    with database.unit_of_work() as session:
        session.add(AuditEntry(**audit_row(stream_id="orm", before=None)))
        statements = Statements(session)
        statements.insert(AuditEntry, [audit_row(stream_id="fast", before=None)])
        statements.flush()
    with database.unit_of_work() as session:
        is_null = {
            stream_id: null
            for stream_id, null in session.execute(
                select(AuditEntry.stream_id, AuditEntry.before.is_(None))
            )
        }
    assert is_null["fast"] == is_null["orm"]


def test_update_where_a_column_is_none(database: Database) -> None:
    """None in an update's `where` means `column IS NULL` (not `column = NULL`, which matches
    no row), alone or with other keys: exactly the rows where the column is NULL are updated.
    The same update without the None key is a different statement (it matches more rows)."""
    rows = [  # the same keys in every row, as Statements.insert requires
        event_row(aggregate_id="order-1", delivered_at=None),
        event_row(aggregate_id="order-1", delivered_at=NOW),
        event_row(aggregate_id="order-2", delivered_at=None),
    ]
    commit_rows(database, OutboxEvent, rows)
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.update(OutboxEvent, {"delivered_at": None}, {"status": "parked"}, expect=2)
        statements.update(OutboxEvent, {"aggregate_id": "order-1"}, {"attempts": 7}, expect=2)
        statements.update(
            OutboxEvent, {"aggregate_id": "order-1", "delivered_at": None}, {"attempts": 5}
        )
        statements.flush()
    assert [(e.status, e.attempts) for e in orm_events(database)] == [
        ("parked", 5),
        ("pending", 7),
        ("parked", 0),
    ]


def test_reads_see_objects_pending_in_the_session(database: Database) -> None:
    """Reads autoflush the session, as session.execute does: an ORM object added (pending) in
    the same session is found by Statements.one."""
    row = event_row()
    with database.unit_of_work() as session:
        session.add(OutboxEvent(**row))
        found = Statements(session).one(EVENT, event_id=row["event_id"])
    assert found is not None


@pytest.mark.postgres_only
def test_data_errors_keep_their_sqlalchemy_class(database: Database) -> None:
    """psycopg errors become the SQLAlchemy class Core raises, not a bare DBAPIError: here
    DataError for a value too long for VARCHAR(16), so `except DataError` catches it."""
    row = event_row(status="x" * 40)

    def through_core() -> None:
        with database.unit_of_work() as session:
            session.execute(insert(OutboxEvent.__table__), [row])  # type: ignore[arg-type]

    def through_statements() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.insert(OutboxEvent, [row])
            statements.flush()

    with pytest.raises(DataError):
        through_core()
    with pytest.raises(DataError):
        through_statements()
