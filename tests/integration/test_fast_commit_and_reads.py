"""Database.reading, the BEGIN pipelined with a first read, queued rows committed by the unit of
work in one pipeline, and multi-row INSERTs, on both engines where they mean something.

On PostgreSQL the tests look at the session's own psycopg connection (autocommit, transaction
status) and at what another connection can see or lock meanwhile: that is what tells a COMMIT
sent with the writes from one sent later by the unit of work, or a read with no transaction from
one in a transaction.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, literal_column, select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from product_shop.db import fast
from product_shop.db.engine import Database
from product_shop.db.fast import Statements
from product_shop.events.tables import OutboxEvent
from tests.integration.conftest import count_rows
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

# A read the server refuses at execution (the text is not an integer).
BAD_CAST = select(literal_column("CAST('x' AS INTEGER)").label("n"))
IDLE = psycopg.pq.TransactionStatus.IDLE
INTRANS = psycopg.pq.TransactionStatus.INTRANS


class Abort(Exception):
    """Raised inside a unit of work to make it roll back."""


def driver_of(session: Session) -> psycopg.Connection[Any]:
    """The session's own psycopg connection (opening the session's SQLAlchemy transaction
    sends nothing: psycopg sends BEGIN with the first statement)."""
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def commit_rows(database: Database, rows: list[dict[str, Any]]) -> None:
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, rows)
        statements.flush()


def committed_aggregates(database: Database) -> list[str]:
    """What another connection sees as committed, in outbox order."""
    with database.engine.connect() as connection:
        found = connection.execute(select(OutboxEvent.aggregate_id).order_by(OutboxEvent.position))
        return list(found.scalars())


@pytest.fixture
def one_connection(database: Database) -> Iterator[Database]:
    """The same database with a pool of one connection: every checkout reuses it."""
    single = Database(database.url, pool_size=1)
    yield single
    single.dispose()


# ---- 1. Database.reading -------------------------------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.parametrize("leave", ["normally", "by_an_error"])
def test_reading_runs_in_autocommit_and_the_pooled_connection_is_reset_after(
    one_connection: Database, leave: str
) -> None:
    database = one_connection
    commit_rows(database, [event_row(aggregate_id="committed")])

    def read() -> psycopg.Connection[Any]:
        with database.reading() as session:
            driver = driver_of(session)
            assert driver.autocommit
            assert session.execute(select(func.count()).select_from(OutboxEvent)).scalar() == 1
            assert driver.info.transaction_status == IDLE  # no BEGIN was sent
            statements = Statements(session)
            first = statements.one(TRANSACTION_ID)
            assert driver.info.transaction_status == IDLE
            second = statements.one(TRANSACTION_ID)
            assert first is not None
            assert second is not None
            assert first["txid"] != second["txid"]  # each statement its own transaction
            if leave == "by_an_error":
                raise Abort
            return driver

    if leave == "by_an_error":
        with pytest.raises(Abort):
            read()
        with database.reading() as session:  # the same connection, taken again
            used = driver_of(session)
    else:
        used = read()
    assert not used.autocommit  # reset as the connection went back to the pool

    def write_then_fail() -> None:
        with database.unit_of_work() as session:
            driver = driver_of(session)
            assert driver is used  # the one pooled connection, reused
            assert not driver.autocommit
            session.add(OutboxEvent(**event_row(aggregate_id="orm")))
            statements = Statements(session)
            statements.insert(OutboxEvent, [event_row(aggregate_id="queued")])
            statements.flush()
            assert driver.info.transaction_status == INTRANS
            assert count_rows(database, OutboxEvent) == 1  # not visible elsewhere yet
            raise Abort

    with pytest.raises(Abort):
        write_then_fail()
    assert committed_aggregates(database) == ["committed"]  # all rolled back


def test_reading_sees_committed_data(database: Database, engine_name: str) -> None:
    rows = [event_row(aggregate_id="a"), event_row(aggregate_id="b", data={"n": [1, None]})]
    commit_rows(database, rows)
    with database.reading() as session:
        use_far_time_zone(session, engine_name)
        statements = Statements(session)
        read = statements.all(EVENTS)
        one = statements.one(EVENT, event_id=rows[1]["event_id"])
        [[many]] = statements.many((EVENT, {"event_id": rows[0]["event_id"]}))
        orm = list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.position)))
    assert [r["event_id"] for r in read] == [r["event_id"] for r in rows]
    assert one == read[1]
    assert many == read[0]
    assert one["data"] == {"n": [1, None]}
    assert_utc(one["occurred_at"], NOW)
    assert [(e.event_id, e.data, e.occurred_at) for e in orm] == [
        (r["event_id"], r["data"], NOW) for r in rows
    ]

    # Committed later, by another unit of work: the next reading() sees it too.
    commit_rows(database, [event_row(aggregate_id="c")])
    with database.reading() as session:
        assert [r["aggregate_id"] for r in Statements(session).all(EVENTS)] == ["a", "b", "c"]


# ---- 2. the first read of a transaction and its BEGIN ---------------------------------------


@pytest.mark.postgres_only
def test_the_first_read_opens_the_transaction_the_session_goes_on_with(
    database: Database,
) -> None:
    row = event_row()
    commit_rows(database, [row])
    with database.unit_of_work() as session:
        driver = driver_of(session)
        assert driver.info.transaction_status == IDLE
        statements = Statements(session)
        first = statements.one(TRANSACTION_ID)
        assert driver.info.transaction_status == INTRANS
        assert first is not None
        assert statements.one(EVENT, event_id=row["event_id"]) is not None
        # The ORM and later reads run in that same transaction.
        assert session.execute(TRANSACTION_ID).scalar_one() == first["txid"]
        assert statements.one(TRANSACTION_ID) == first
        assert driver.info.transaction_status == INTRANS


@pytest.mark.postgres_only
def test_a_first_read_for_update_holds_its_lock_until_the_unit_of_work_ends(
    database: Database,
) -> None:
    row = event_row()
    commit_rows(database, [row])

    def try_to_lock() -> None:
        other = Session(database.engine)
        try:
            Statements(other).one(LOCKED_EVENT_NOWAIT, event_id=row["event_id"])
        finally:
            other.close()

    with database.unit_of_work() as session:
        locked = Statements(session).one(LOCKED_EVENT, event_id=row["event_id"])
        assert locked is not None
        assert locked["event_id"] == row["event_id"]
        with pytest.raises(OperationalError) as busy:
            try_to_lock()
        assert isinstance(busy.value.orig, psycopg.errors.LockNotAvailable)
        # Still held after other work in the same transaction.
        session.execute(select(OutboxEvent.position)).all()
        with pytest.raises(OperationalError):
            try_to_lock()
    try_to_lock()  # released by the commit


@contextmanager
def waits_on(session: Session) -> Iterator[list[str]]:
    """What the session's connection waits for the server on, from a libpq trace of the block:
    'Sync' (a pipeline's end, or BEGIN's in a pipeline), 'Flush' (results asked for inside a
    pipeline) and 'Query' (a simple query: BEGIN or COMMIT outside a pipeline): one round trip
    each. A Flush right after a Sync is left out: that Sync's answer is already on its way, and
    psycopg sends it or not depending on how fast the answer came."""
    driver = driver_of(session)
    waits: list[str] = []
    with tempfile.TemporaryFile() as trace:
        driver.pgconn.trace(trace.fileno())
        driver.pgconn.set_trace_flags(
            psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
        )
        try:
            yield waits
        finally:
            driver.pgconn.untrace()
            trace.seek(0)
            previous = ""  # the message the client sent before this one
            for line in trace.read().decode().splitlines():
                fields = line.split("\t")  # direction, length, message
                if len(fields) < 3 or fields[0] != "F":
                    continue
                kind = fields[2].split(" ", 1)[0]
                if kind in ("Sync", "Query") or (kind == "Flush" and previous != "Sync"):
                    waits.append(kind)
                previous = kind


@pytest.mark.postgres_only
def test_reads_wait_on_the_server_as_few_times_as_psycopg_allows(database: Database) -> None:
    """A guard on round trips (every read below also sends the row-level-security scope first).
    psycopg 3.3 follows the BEGIN it adds in a pipeline with a Sync and waits for it
    (Connection._start_query), so in a transaction one read is sent without a pipeline (BEGIN
    as a simple query, the scope, the read: three round trips, against BEGIN+Sync, Flush and
    Sync in a pipeline); `many` pipelines its reads and reads the results once the pipeline has
    ended (BEGIN+Sync, then one Sync for them all: fetching inside it would add a Flush and its
    wait). With no transaction (`Database.reading`) there is no BEGIN: the scope and one read
    go in one pipeline, one round trip."""
    row = event_row()
    commit_rows(database, [row])
    by_id = {"event_id": row["event_id"]}

    with database.unit_of_work() as session:
        statements = Statements(session)
        with waits_on(session) as first_read:
            assert statements.one(EVENT, **by_id) is not None
        with waits_on(session) as later_read:
            assert statements.all(EVENT, **by_id) != []
    assert first_read == ["Query", "Sync", "Sync"]  # BEGIN, the scope, the read
    assert later_read == ["Sync"]

    with database.unit_of_work() as session, waits_on(session) as batch:
        found = Statements(session).many((EVENT, by_id), (EVENTS, {}), (EVENT, by_id))
    assert [len(rows) for rows in found] == [1, 1, 1]
    assert batch == ["Sync", "Sync"]  # BEGIN+Sync; then one Sync for all the reads

    with database.reading() as session, waits_on(session) as no_transaction:
        assert Statements(session).one(EVENT, **by_id) is not None
    assert no_transaction == ["Sync"]


@pytest.mark.postgres_only
def test_a_failing_read_in_a_batch_raises_and_the_connection_stays_usable(
    database: Database,
) -> None:
    """`many` reads its results after the pipeline ends: an error from any of its statements
    still surfaces as SQLAlchemy's, and the unit of work rolls back cleanly."""
    row = event_row()
    commit_rows(database, [row])
    with pytest.raises(DataError), database.unit_of_work() as session:
        Statements(session).many((EVENT, {"event_id": row["event_id"]}), (BAD_CAST, {}))
    with database.reading() as session:
        assert len(Statements(session).all(EVENTS)) == 1


# ---- 3. queued rows commit with the unit of work --------------------------------------------


def test_the_unit_of_work_commits_queued_rows_and_pending_orm_objects_together(
    database: Database, engine_name: str
) -> None:
    commit_rows(database, [event_row(aggregate_id="before")])
    with database.unit_of_work() as session:
        statements = Statements(session)
        session.add(OutboxEvent(**event_row(aggregate_id="orm")))
        statements.insert(OutboxEvent, [event_row(aggregate_id="q1"), event_row(aggregate_id="q2")])
        assert statements.pending
        if engine_name == "postgresql":
            # Nothing has been sent yet: not even BEGIN.
            assert driver_of(session).info.transaction_status == IDLE
        assert committed_aggregates(database) == ["before"]
    assert committed_aggregates(database) == ["before", "orm", "q1", "q2"]
    with database.reading() as session:
        assert len(Statements(session).all(EVENTS)) == 4


@pytest.mark.postgres_only
def test_queued_writes_and_the_commit_go_out_in_one_pipeline(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the unit of work sends what is queued and its COMMIT in one pipeline, and
    the connection goes back to the pool clean."""
    pipelines: list[int] = []
    real_pipeline = psycopg.Connection.pipeline

    def counting_pipeline(self: psycopg.Connection[Any]) -> Any:
        pipelines.append(1)
        return real_pipeline(self)

    monkeypatch.setattr(psycopg.Connection, "pipeline", counting_pipeline)
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, [event_row(aggregate_id="q")])
        statements.update(OutboxEvent, {"aggregate_id": "q"}, {"status": "parked"})
        driver = driver_of(session)
        assert pipelines == []
    assert pipelines == [1]
    assert driver.info.transaction_status == IDLE
    assert committed_aggregates(database) == ["q"]


def test_an_error_before_the_end_of_the_unit_of_work_stores_nothing_queued(
    database: Database,
) -> None:
    """Queued rows go out only with the unit of work's commit: an error anywhere in the unit
    of work (invariant 5) leaves nothing, on either engine."""

    def queue_then_fail() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            session.add(OutboxEvent(**event_row(aggregate_id="orm")))
            statements.insert(OutboxEvent, [event_row(aggregate_id="q")])
            raise Abort

    with pytest.raises(Abort):
        queue_then_fail()
    assert committed_aggregates(database) == []


@pytest.mark.parametrize("failing", ["queued_row", "orm_object"])
def test_a_duplicate_key_at_commit_stores_nothing_of_the_unit_of_work(
    database: Database, engine_name: str, failing: str
) -> None:
    existing = event_row(aggregate_id="existing")
    commit_rows(database, [existing])
    duplicate = {"event_id": existing["event_id"]}  # unique key violated
    queued = [event_row(aggregate_id=f"q{n}") for n in range(60)]  # two INSERT statements
    orm = event_row(aggregate_id="orm")
    if failing == "queued_row":
        queued[-1].update(duplicate)
    else:
        orm.update(duplicate)

    def queue_with_a_duplicate() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.update(
                OutboxEvent, {"event_id": existing["event_id"]}, {"status": "changed"}
            )
            session.add(OutboxEvent(**orm))
            statements.insert(OutboxEvent, queued)

    with pytest.raises(IntegrityError) as failed:
        queue_with_a_duplicate()
    if engine_name == "postgresql":
        assert isinstance(failed.value.orig, psycopg.errors.UniqueViolation)
    assert committed_aggregates(database) == ["existing"]
    with database.reading() as session:
        [stored] = Statements(session).all(EVENTS)
    assert stored["status"] == "pending"
    # The connection went back to the pool usable.
    commit_rows(database, [event_row(aggregate_id="after")])
    assert committed_aggregates(database) == ["existing", "after"]


def test_with_nothing_queued_the_unit_of_work_commits_pending_orm_changes(
    database: Database,
) -> None:
    row = event_row(aggregate_id="changed")
    commit_rows(database, [row])
    with database.unit_of_work() as session:
        Statements(session)  # made, but nothing queued
        session.add(OutboxEvent(**event_row(aggregate_id="orm")))
        loaded = session.scalars(
            select(OutboxEvent).where(OutboxEvent.event_id == row["event_id"])
        ).one()
        loaded.status = "parked"
    assert committed_aggregates(database) == ["changed", "orm"]
    with database.reading() as session:
        found = Statements(session).one(EVENT, event_id=row["event_id"])
    assert found is not None
    assert found["status"] == "parked"


# ---- 4. multi-row INSERT -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "statement_rows"),
    [(1, {1}), (50, {50}), (51, {50, 1}), (120, {50, 20})],
)
def test_rows_of_one_insert_go_out_in_chunks_and_are_stored_exactly(
    database: Database,
    engine_name: str,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    statement_rows: set[int],
) -> None:
    monkeypatch.setattr(fast, "_compiled_selects", {})
    monkeypatch.setattr(fast, "_insert_sql", {})
    monkeypatch.setattr(fast, "_update_sql", {})
    document_id = uuid.uuid4()
    rows = [
        event_row(
            aggregate_id=f"order-{n}",
            occurred_at=(NOW + timedelta(seconds=n)).astimezone(KOLKATA),
            next_attempt_at=NOW + timedelta(minutes=n),
            # NULL and values mixed in one column, across rows and chunks.
            delivered_at=NOW + timedelta(hours=n) if n % 3 == 0 else None,
            last_error=None if n % 2 else f"error {n}: é",
            attempts=n,
            data={"n": n, "id": document_id, "at": NOW, "lines": [{"q": n}], "note": None},
        )
        for n in range(count)
    ]
    last = rows[-1]["event_id"]
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, rows)
        # Queued after the insert: runs after every chunk of it.
        statements.update(OutboxEvent, {"event_id": last}, {"status": "parked"})
        statements.flush()

    with database.unit_of_work() as session:
        use_far_time_zone(session, engine_name)
        read = Statements(session).all(EVENTS)
    assert [r["event_id"] for r in read] == [r["event_id"] for r in rows]  # in order
    positions = [r["position"] for r in read]
    assert positions == sorted(set(positions))
    for n, got in enumerate(read):
        assert got["aggregate_id"] == f"order-{n}"
        assert_utc(got["occurred_at"], NOW + timedelta(seconds=n))
        assert_utc(got["next_attempt_at"], NOW + timedelta(minutes=n))
        if n % 3 == 0:
            assert_utc(got["delivered_at"], NOW + timedelta(hours=n))
        else:
            assert got["delivered_at"] is None
        assert got["last_error"] == (None if n % 2 else f"error {n}: é")
        assert got["attempts"] == n
        assert got["data"] == {
            "n": n,
            "id": str(document_id),
            "at": "2025-03-14T09:26:53.589793+00:00",
            "lines": [{"q": n}],
            "note": None,
        }
        assert got["status"] == ("parked" if n == count - 1 else "pending")

    if engine_name == "postgresql":
        keys = tuple(rows[0])
        assert set(fast._insert_sql) == {("outbox_events", keys, n) for n in statement_rows}
        for (_, _, n), statement in fast._insert_sql.items():
            assert statement.sql.startswith("INSERT INTO outbox_events")
            # n rows of parameters, as SQLAlchemy compiled them
            assert statement.names == tuple(
                tuple(f"r{i}c{j}" for j in range(len(keys))) for i in range(n)
            )


# ---- 5. savepoints ---------------------------------------------------------------------------


def test_rows_flushed_inside_a_savepoint_roll_back_with_it(database: Database) -> None:
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(OutboxEvent, [event_row(aggregate_id="kept")])
        statements.flush()
        savepoint = session.begin_nested()
        statements.insert(OutboxEvent, [event_row(aggregate_id="dropped")])
        statements.flush()
        savepoint.rollback()
    assert committed_aggregates(database) == ["kept"]
