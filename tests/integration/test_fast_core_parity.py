"""db.fast.Statements held to what SQLAlchemy Core does, on both engines: column types it has no
special case for, the row count of an UPDATE, and sessions it was not given.

The column types live on a throwaway table of a test-only MetaData (created in the test's own
SQLite file or PostgreSQL schema, dropped after), so that types the project's tables do not use
yet (Enum, Numeric, Float, Uuid as text) are covered too.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from types import ModuleType
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    Float,
    Integer,
    Numeric,
    String,
    Uuid,
    bindparam,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, SessionEvents, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from product_shop.db import fast
from product_shop.db.base import Base
from product_shop.db.engine import Database
from product_shop.db.fast import Statements
from product_shop.events.tables import OutboxEvent
from tests.conftest import as_owner
from tests.integration.fast_support import EVENTS, KOLKATA, NOW, event_row

# ---- a table of types the project's tables do not use ------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class ScratchBase(DeclarativeBase):
    """A MetaData of its own: the project's metadata (migrations, truncation) never sees it."""


class Scratch(ScratchBase):
    __tablename__ = "fast_parity_scratch"

    scratch_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Stored as the member's name in a VARCHAR; read back as the member.
    colour: Mapped[Colour] = mapped_column(
        Enum(Colour, native_enum=False, length=16, validate_strings=True)
    )
    # NUMERIC in the database, float in Python.
    amount: Mapped[float] = mapped_column(Numeric(10, 2, asdecimal=False))
    # FLOAT in the database, Decimal in Python.
    ratio: Mapped[Decimal] = mapped_column(Float(asdecimal=True))
    # A UUID column whose Python values are strings.
    ref: Mapped[str] = mapped_column(Uuid(as_uuid=False))
    flag: Mapped[bool] = mapped_column(Boolean)
    # Plain JSON (not the project's JSONB variant).
    doc: Mapped[Any] = mapped_column(JSON, nullable=True)
    label: Mapped[str] = mapped_column(String(32))


# Statements.insert/update take the project's models; a test-only model is the same to them.
SCRATCH = cast(type[Base], Scratch)
SCRATCH_ROWS = select(
    Scratch.scratch_id,
    Scratch.colour,
    Scratch.amount,
    Scratch.ratio,
    Scratch.ref,
    Scratch.flag,
    Scratch.doc,
    Scratch.label,
).order_by(Scratch.scratch_id)
BY_COLOUR = select(Scratch.scratch_id).where(Scratch.colour == bindparam("colour"))
BY_FLAG = select(Scratch.scratch_id).where(Scratch.flag == bindparam("flag"))
BY_REF = select(Scratch.scratch_id, Scratch.ref).where(Scratch.ref == bindparam("ref"))


@pytest.fixture
def scratch(database: Database) -> Iterator[Database]:
    with as_owner(database) as connection:  # DDL is the owner's; the app's role may use it
        ScratchBase.metadata.create_all(connection)
        if database.role:
            connection.execute(text(f'GRANT ALL ON fast_parity_scratch TO "{database.role}"'))
    yield database
    with as_owner(database) as connection:
        ScratchBase.metadata.drop_all(connection)


def scratch_row(scratch_id: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scratch_id": scratch_id,
        "colour": Colour.GREEN,
        "amount": 12.5,
        "ratio": 0.25,
        "ref": str(uuid.UUID(int=scratch_id)),
        "flag": True,
        "doc": {"n": scratch_id, "none": None},
        "label": f"row {scratch_id}",
    }
    row.update(overrides)
    return row


def through_statements(database: Database, rows: list[dict[str, Any]]) -> None:
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.insert(SCRATCH, rows)
        statements.flush()


def through_core(database: Database, rows: list[dict[str, Any]]) -> None:
    with database.unit_of_work() as session:
        session.execute(insert(Scratch.__table__), rows)  # type: ignore[arg-type]


def read_by_core(database: Database) -> list[dict[str, Any]]:
    with database.unit_of_work() as session:
        return [dict(row) for row in session.execute(SCRATCH_ROWS).mappings()]


def read_by_statements(database: Database) -> list[dict[str, Any]]:
    with database.unit_of_work() as session:
        return Statements(session).all(SCRATCH_ROWS)


def committed_aggregates(database: Database) -> list[str]:
    with database.engine.connect() as connection:
        found = connection.execute(select(OutboxEvent.aggregate_id).order_by(OutboxEvent.position))
        return list(found.scalars())


def commit_events(database: Database, rows: list[dict[str, Any]]) -> None:
    with database.unit_of_work() as session:
        Statements(session).insert(OutboxEvent, rows)


def test_every_column_type_converts_values_as_core_does(scratch: Database) -> None:
    """Rows written through Statements and through Core read back the same, through either,
    with Core's Python types: an Enum member, a float from NUMERIC, a Decimal from FLOAT, a str
    from a UUID column, a bool (given as 1, which Core's Boolean takes)."""
    through_core(scratch, [scratch_row(1), scratch_row(2, flag=1, colour=Colour.RED)])
    through_statements(scratch, [scratch_row(3), scratch_row(4, flag=1, colour=Colour.RED)])

    expected = [
        {
            "scratch_id": n,
            "colour": Colour.RED if n % 2 == 0 else Colour.GREEN,
            "amount": 12.5,
            "ratio": Decimal("0.25"),
            "ref": str(uuid.UUID(int=n)),
            "flag": True,
            "doc": {"n": n, "none": None},
            "label": f"row {n}",
        }
        for n in (1, 2, 3, 4)
    ]
    by_core = read_by_core(scratch)
    assert by_core == expected  # what SQLAlchemy itself returns, the reference
    by_statements = read_by_statements(scratch)
    assert by_statements == by_core
    for row in by_statements:  # the same types, not merely equal values
        assert {k: type(v) for k, v in row.items()} == {k: type(v) for k, v in by_core[0].items()}


def test_read_parameters_and_single_reads_convert_as_core_does(scratch: Database) -> None:
    through_core(scratch, [scratch_row(1), scratch_row(2, colour=Colour.RED, flag=False)])
    with scratch.unit_of_work() as session:
        statements = Statements(session)
        # An Enum member is sent as Core sends it (its name), a Boolean parameter given as 0.
        assert statements.all(BY_COLOUR, colour=Colour.RED) == [{"scratch_id": 2}]
        assert statements.all(BY_FLAG, flag=0) == [{"scratch_id": 2}]
        found = statements.one(BY_REF, ref=str(uuid.UUID(int=1)))
        [[red], [green]] = statements.many(
            (BY_COLOUR, {"colour": Colour.RED}), (BY_COLOUR, {"colour": Colour.GREEN})
        )
    assert found == {"scratch_id": 1, "ref": str(uuid.UUID(int=1))}
    assert (red, green) == ({"scratch_id": 2}, {"scratch_id": 1})


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [("flag", "yes", TypeError), ("colour", "PURPLE", LookupError)],
)
def test_a_value_core_refuses_is_refused_and_nothing_is_written(
    scratch: Database, column: str, value: Any, error: type[Exception]
) -> None:
    """A value the column type refuses (not a boolean; not one of the Enum's names) fails as
    with Core, before anything is sent."""

    def write(send: Callable[[Database, list[dict[str, Any]]], None]) -> Exception:
        with pytest.raises((error, StatementError)) as refused:
            send(scratch, [scratch_row(1), scratch_row(2, **{column: value})])
        return refused.value

    for send in (through_core, through_statements):
        refused = write(send)
        if isinstance(refused, StatementError):
            assert isinstance(refused.orig, error)
    assert read_by_core(scratch) == []


# ---- parameters SQLAlchemy names or binds itself -----------------------------------------


def test_parameter_names_sqlalchemy_escapes_and_values_it_binds_itself(
    database: Database,
) -> None:
    """A `bindparam` name with characters the driver's paramstyle would misread is renamed in
    the SQL by SQLAlchemy (`compiled.escaped_bind_names`); a value written into the statement
    (here a timestamp, compared through UTCDateTime) is bound by SQLAlchemy itself. Both work
    as with Core."""
    rows = [event_row(aggregate_id="order.1 (a)"), event_row(aggregate_id="order-2")]
    commit_events(database, rows)
    by_dotted_name = select(OutboxEvent.event_id).where(
        OutboxEvent.aggregate_id == bindparam("aggregate.id (of)")
    )
    at_a_time = select(OutboxEvent.aggregate_id).where(
        OutboxEvent.occurred_at == NOW.astimezone(KOLKATA),
        OutboxEvent.aggregate_id != bindparam("not_this"),
    )
    with database.unit_of_work() as session:
        statements = Statements(session)
        found = statements.all(by_dotted_name, **{"aggregate.id (of)": "order.1 (a)"})
        [[again], others] = statements.many(
            (by_dotted_name, {"aggregate.id (of)": "order.1 (a)"}),
            (at_a_time, {"not_this": "order-2"}),
        )
    assert found == [{"event_id": rows[0]["event_id"]}]
    assert again == found[0]
    assert others == [{"aggregate_id": "order.1 (a)"}]


# ---- the row count of an update ------------------------------------------------------------


def test_an_update_matching_no_row_raises_stale_data_on_flush(database: Database) -> None:
    """An update by key matches exactly one row unless told otherwise: none is an error, as
    the ORM's flush raises StaleDataError, and the unit of work keeps nothing."""
    commit_events(database, [event_row(aggregate_id="kept")])

    def update_a_missing_row() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.insert(OutboxEvent, [event_row(aggregate_id="queued")])
            statements.update(OutboxEvent, {"event_id": uuid.uuid4()}, {"status": "parked"})
            statements.flush()

    with pytest.raises(StaleDataError) as stale:
        update_a_missing_row()
    assert "outbox_events" in str(stale.value)
    assert "expected to update 1 row(s)" in str(stale.value)
    assert committed_aggregates(database) == ["kept"]


@pytest.mark.parametrize("count", ["fewer", "more"])
def test_a_stale_update_sent_with_the_commit_commits_nothing(
    database: Database, engine_name: str, monkeypatch: pytest.MonkeyPatch, count: str
) -> None:
    """Rows queued until the unit of work's commit: on PostgreSQL the writes and the COMMIT
    share one pipeline, so the server checks the count before the COMMIT, in that same round
    trip. Matching fewer or more rows than expected commits none of the unit of work."""
    rows = [event_row(aggregate_id="a"), event_row(aggregate_id="a")]
    commit_events(database, rows)
    pipelines: list[int] = []
    real_pipeline = psycopg.Connection.pipeline

    def counting_pipeline(self: psycopg.Connection[Any]) -> Any:
        pipelines.append(1)
        return real_pipeline(self)

    monkeypatch.setattr(psycopg.Connection, "pipeline", counting_pipeline)
    where = {"aggregate_id": "a"} if count == "more" else {"aggregate_id": "nobody"}

    def queue_a_stale_update() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.insert(OutboxEvent, [event_row(aggregate_id="queued")])
            session.add(OutboxEvent(**event_row(aggregate_id="orm")))
            statements.update(OutboxEvent, where, {"status": "parked"})
            statements.insert(OutboxEvent, [event_row(aggregate_id="after")])

    with pytest.raises(StaleDataError) as stale:
        queue_a_stale_update()
    if engine_name == "sqlite":
        assert f"{2 if count == 'more' else 0} were matched" in str(stale.value)
    else:
        assert pipelines == [1]  # no round trip more for the check
    assert committed_aggregates(database) == ["a", "a"]
    with database.reading() as session:
        assert {r["status"] for r in Statements(session).all(EVENTS)} == {"pending"}
    # The connection went back to the pool usable.
    commit_events(database, [event_row(aggregate_id="next")])
    assert committed_aggregates(database) == ["a", "a", "next"]


def test_the_error_names_the_update_that_matched_another_count(database: Database) -> None:
    first, second = event_row(aggregate_id="first"), event_row(aggregate_id="second")
    commit_events(database, [first, second])
    missing = uuid.uuid4()

    def two_updates_the_second_stale() -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.update(OutboxEvent, {"event_id": first["event_id"]}, {"attempts": 1})
            statements.update(OutboxEvent, {"event_id": missing}, {"attempts": 2})
            statements.update(OutboxEvent, {"event_id": second["event_id"]}, {"attempts": 3})

    with pytest.raises(StaleDataError) as stale:
        two_updates_the_second_stale()
    assert repr(missing) in str(stale.value)
    with database.reading() as session:
        assert {r["attempts"] for r in Statements(session).all(EVENTS)} == {0}


class Refused(Exception):
    """What a caller's refusal raises instead of StaleDataError."""


@pytest.mark.parametrize("sent", ["on_flush", "with_the_commit"])
def test_an_update_with_a_refusal_raises_it_instead_of_stale_data(
    database: Database, sent: str
) -> None:
    """A caller that knows what a mismatch means (a lost idempotency claim, say) gives the
    error to raise; it surfaces wherever StaleDataError would have (flush or the commit), and
    the unit of work keeps nothing. A matching update is unaffected."""
    kept = event_row(aggregate_id="kept")
    commit_events(database, [kept])

    def update(where: dict[str, Any]) -> None:
        with database.unit_of_work() as session:
            statements = Statements(session)
            statements.insert(OutboxEvent, [event_row(aggregate_id="queued")])
            statements.update(
                OutboxEvent, where, {"attempts": 7}, refusal=lambda: Refused("not yours")
            )
            if sent == "on_flush":
                statements.flush()

    with pytest.raises(Refused, match="not yours"):
        update({"event_id": uuid.uuid4()})
    assert committed_aggregates(database) == ["kept"]
    update({"event_id": kept["event_id"]})
    assert committed_aggregates(database) == ["kept", "queued"]
    with database.reading() as session:
        assert sorted(r["attempts"] for r in Statements(session).all(EVENTS)) == [0, 7]
    with pytest.raises(ValueError, match="number of rows"), database.unit_of_work() as session:
        Statements(session).update(
            OutboxEvent, {"aggregate_id": "a"}, {"attempts": 3}, expect=None, refusal=Refused
        )


def test_expect_states_how_many_rows_an_update_matches(database: Database) -> None:
    commit_events(database, [event_row(aggregate_id="a"), event_row(aggregate_id="a")])
    with database.unit_of_work() as session:
        statements = Statements(session)
        statements.update(OutboxEvent, {"aggregate_id": "a"}, {"attempts": 1}, expect=2)
        statements.update(OutboxEvent, {"aggregate_id": "none"}, {"attempts": 9}, expect=0)
        statements.update(OutboxEvent, {"aggregate_id": "none"}, {"attempts": 9}, expect=None)
        statements.flush()
        statements.update(OutboxEvent, {"aggregate_id": "a"}, {"attempts": 2}, expect=None)
    with database.reading() as session:
        assert [r["attempts"] for r in Statements(session).all(EVENTS)] == [2, 2]
    with pytest.raises(ValueError, match="number of rows"), database.unit_of_work() as session:
        Statements(session).update(OutboxEvent, {"aggregate_id": "a"}, {"attempts": 3}, expect=-1)


# ---- sessions it was not given ---------------------------------------------------------------

SESSION_EVENTS = sorted(
    name for name in vars(SessionEvents) if not name.startswith("_") and name != "dispatch"
)


def listeners_from(module: ModuleType, session: Session) -> list[str]:
    """The listeners of `module` that run for this session, whoever registered them: on the
    Session class, a subclass, a sessionmaker or the instance."""
    found = []
    for name in SESSION_EVENTS:
        for listener in getattr(session.dispatch, name):
            function = getattr(listener, "__wrapped__", listener)
            if getattr(function, "__module__", None) == module.__name__:
                found.append(f"{name}: {function.__qualname__}")
    return found


def test_a_plain_session_is_left_as_sqlalchemy_made_it(database: Database) -> None:
    """db.fast listens on no session it is not given: a plain `Session(engine)` (code outside
    the project, a script, a test) has none of its listeners, and its commit is SQLAlchemy's
    own: rows queued through Statements go out with `flush()` or the project's unit of work
    (`commit_queued`), never because some Session committed."""
    plain = Session(database.engine)
    try:
        assert listeners_from(fast, plain) == []

        # The check sees a listener on the Session class when there is one.
        def probe(session: Session) -> None:
            pass

        probe.__module__ = fast.__name__
        event.listen(Session, "before_commit", probe)
        try:
            found = listeners_from(fast, Session(database.engine))
        finally:
            event.remove(Session, "before_commit", probe)
        assert found == [f"before_commit: {probe.__qualname__}"]

        statements = Statements(plain)
        statements.insert(OutboxEvent, [event_row(aggregate_id="flushed")])
        statements.flush()
        statements.insert(OutboxEvent, [event_row(aggregate_id="only-queued")])
        plain.add(OutboxEvent(**event_row(aggregate_id="orm")))
        plain.commit()
    finally:
        plain.close()
    assert committed_aggregates(database) == ["flushed", "orm"]
