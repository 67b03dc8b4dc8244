"""Engine and session factory for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from product_shop.db import tenancy
from product_shop.db.base import json_default
from product_shop.db.fast import commit_queued
from product_shop.db.roles import quoted_role
from product_shop.db.session import TransactionRuleViolation, UnitOfWorkSession

__all__ = ["Database", "TransactionRuleViolation", "UnitOfWorkSession", "is_retryable"]


def _json_serializer(value: Any) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"))


def make_engine(
    url: str,
    *,
    pool_size: int = 20,
    role: str | None = None,
    fixed_scope: tenancy.TenantScope | None = None,
) -> Engine:
    """An engine for `url`. PostgreSQL: each transaction carries the current tenant scope for
    row-level security (`db.tenancy`); with `role`, each new connection acts as that role (`SET
    ROLE`: the login role is a member of the service role, docs/security.md)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            json_serializer=_json_serializer,
            connect_args={"check_same_thread": False, "timeout": 15},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    engine = create_engine(
        url,
        json_serializer=_json_serializer,
        # Up to 1.5 x pool_size connections per process: keep workers x that (plus the relay)
        # under PostgreSQL's max_connections (100 by default).
        pool_size=pool_size,
        max_overflow=max(1, pool_size // 2),
        # No pre-ping: it is one more round trip on every checkout from the pool (two per
        # checkout completion). After a database restart the first statement on a dead
        # connection fails; SQLAlchemy then invalidates every pooled connection at once, and
        # the caller gets a 503 (web/problems) rather than a wrong answer.
        pool_pre_ping=False,
    )
    if role is not None:
        set_role = f"SET ROLE {quoted_role(role)}"

        @event.listens_for(engine, "connect")
        def _act_as_role(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(set_role)
            dbapi_connection.commit()

    tenancy.install(engine, fixed=fixed_scope)
    return engine


T = TypeVar("T")

# Errors after which the whole unit of work may simply be run again: PostgreSQL's deadlock and
# serialization failure, SQLite's busy database.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(error: BaseException) -> bool:
    """A deadlock or serialization failure (PostgreSQL) or a locked database (SQLite)."""
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(error.orig)


class Database:
    """Owns the engine and hands out units of work. Who may open one: the request (web/) and
    jobs (the relay, CLI commands) — never a service (docs/architecture.md)."""

    def __init__(
        self,
        url: str,
        *,
        engine: Engine | None = None,
        pool_size: int = 20,
        role: str | None = None,
    ) -> None:
        self.url = url
        self.role = role
        self.engine = (
            engine if engine is not None else make_engine(url, pool_size=pool_size, role=role)
        )
        self._sessions = sessionmaker(
            self.engine, class_=UnitOfWorkSession, expire_on_commit=False, autoflush=True
        )
        # Reads that need no transaction of their own. PostgreSQL runs them in autocommit: one
        # round trip per statement instead of BEGIN, statement, COMMIT. Each statement sees
        # the data committed when it starts, as every statement of a READ COMMITTED
        # transaction (PostgreSQL's default) does anyway. The pool resets the connection's
        # isolation level when it is returned.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._reads = (
            sessionmaker(
                self._autocommit,
                class_=UnitOfWorkSession,
                expire_on_commit=False,
                autoflush=True,
            )
            if self.engine.dialect.name == "postgresql"
            else self._sessions
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unit_of_work(self) -> AbstractContextManager[Session]:
        """One transaction: commit when the block ends normally (rows queued through
        `db.fast.Statements` go out with the COMMIT in one round trip on PostgreSQL), roll back
        on any error."""
        return _scope(self._sessions)

    def statements(self) -> AbstractContextManager[Connection]:
        """One transaction on a plain SQLAlchemy Core connection, for a job that writes a few
        rows and no ORM objects (the relay's record of one delivery): no session to set up or
        tear down. Commits when the block ends normally, rolls back on any error."""
        return self.engine.begin()

    def single_statement(self) -> AbstractContextManager[Connection]:
        """A Core connection for one statement that is atomic by itself (say, a data-modifying
        CTE): autocommit on PostgreSQL, one round trip with no BEGIN or COMMIT; a transaction
        elsewhere."""
        if self.dialect == "postgresql":
            return self._autocommit.connect()
        return self.engine.begin()

    def reading(self) -> AbstractContextManager[Session]:
        """A session for reads only: no transaction on PostgreSQL (see `__init__`), a plain
        unit of work elsewhere. Nothing written through it is kept atomic: write elsewhere."""
        return _scope(self._reads)

    def run(
        self,
        work: Callable[[Session], T],
        *,
        attempts: int = 4,
        retry_if: Callable[[BaseException], bool] = is_retryable,
    ) -> T:
        """`work` in a unit of work, run again (at most `attempts` times in all) when it fails
        with an error after which a fresh attempt may succeed: by default a deadlock, a
        serialization failure or SQLite's busy database. `work` must be safe to repeat: it
        reads what it needs inside the unit of work."""
        for attempt in range(1, attempts + 1):
            try:
                with self.unit_of_work() as session:
                    return work(session)
            except Exception as exc:
                if attempt == attempts or not retry_if(exc):
                    raise
        raise AssertionError("unreachable")

    def with_asynchronous_commit(self, *, pool_size: int) -> Database:
        """A second pool on the same database whose transactions commit without waiting for
        the WAL flush (PostgreSQL `synchronous_commit = off`, set on each new connection), for
        work whose last commits may be forgotten by a database crash at no cost but doing it
        again: the relay's records of deliveries (a forgotten one is sent again, and receivers
        drop duplicates by webhook-id; an event is never lost, the API's outbox commits are
        synchronous). The database stays consistent either way. SQLite: this database itself.
        Whoever calls this disposes what it returns."""
        if self.dialect != "postgresql":
            return self
        engine = make_engine(
            self.engine.url.render_as_string(hide_password=False),
            pool_size=pool_size,
            role=self.role,
            # Only the relay's system work uses this pool: its connections hold the system
            # scope from the start (db/tenancy.py), no statement per transaction.
            fixed_scope=tenancy.SYSTEM,
        )

        @event.listens_for(engine, "connect")
        def _asynchronous_commit(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO off")
            dbapi_connection.commit()

        return Database(self.url, engine=engine, role=self.role)

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _scope(sessions: sessionmaker[UnitOfWorkSession]) -> Iterator[Session]:
    """Commit when the block ends normally, roll back on any error, close either way."""
    session = sessions()
    try:
        yield session
        commit_queued(session)
        session._owner_commit()
    except BaseException:
        session._owner_rollback()
        raise
    finally:
        session._owner_close()
