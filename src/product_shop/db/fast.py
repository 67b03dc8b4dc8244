"""Hot-path statements: SQLAlchemy metadata in, few round trips out.

The ORM unit of work costs about 5 ms of CPU for the dozen rows a checkout completion writes; the
same rows sent as psycopg statements in one pipeline cost under 1 ms (figures in
docs/benchmarks.md). `Statements` keeps the tables, columns and types of our SQLAlchemy models as
the single description of the schema and only changes how rows travel:

- on PostgreSQL, statements are compiled once, run on the session's own psycopg connection (so
  they share its transaction), and queued writes go out in one pipeline;
- on every other engine (SQLite, the embedded default) they run as SQLAlchemy Core statements.

Both paths behave as Core does: every value passes through its column type's bind processor
and every result column through its result processor, as the dialect gives them (so aware UTC
timestamps are enforced, JSON documents are encoded the same way, Python None is stored as JSON
null, and an Enum, a Numeric(asdecimal=False) or a Uuid(as_uuid=False) comes back as Core returns
it); scalar column defaults fill missing keys, the session autoflushes before a read, an UPDATE
that matches another number of rows than expected raises StaleDataError (as the ORM's flush
does), and database errors surface as SQLAlchemy's exception classes (a lost connection is
invalidated, with the pool). A SELECT that the fast path cannot send as compiled once (an
expanding `IN` list) simply goes through Core.

Statements are cached by identity: build them once, at module level, with `bindparam` names.

Queued writes belong to the session (every `Statements` of one session shares its queue). A
service queues rows and may `flush()` them when it must read them back; the unit of work that
owns the session sends what is still queued together with its COMMIT (`commit_queued`, called
by `db.engine` only): on PostgreSQL, one round trip for the writes and the COMMIT. An UPDATE's
row count is checked by the server inside that round trip (a mismatch aborts the transaction, so
the COMMIT that follows it commits nothing).

The module registers no event listeners: a Session it is not given behaves as SQLAlchemy's own.
Compiling statements and finding their values' processors is `db.fast_compile`'s job; the
compiled statements' caches are this module's (`_compiled_selects`, `_insert_sql`, `_update_sql`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg.rows import tuple_row
from sqlalchemy import Connection, CursorResult, and_, insert, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from product_shop.db import tenancy
from product_shop.db.base import Base
from product_shop.db.fast_compile import (
    AnySelect,
    InsertCache,
    Row,
    SelectCache,
    UpdateCache,
    Write,
    bound,
    compile_select,
    insert_statement,
    key_processors,
    read_params,
    result_rows,
    stale,
    table_of,
    update_statement,
    with_defaults,
)

__all__ = ["AnySelect", "Row", "Statements", "columns_of", "commit_queued"]

# Compiled for PostgreSQL only (the one dialect that takes the fast path; one psycopg dialect
# per process, as the caches assume), by `db.fast_compile`, which is given the cache to fill.
# Statements are meant to be module-level constants; past fast_compile.MAX_CACHED, SELECTs built
# per call are compiled each time instead of filling memory.
_compiled_selects: SelectCache = {}
_insert_sql: InsertCache = {}
_update_sql: UpdateCache = {}
# Rows per multi-row INSERT (each chunk is one statement; PostgreSQL takes at most 65,535
# parameters in one).
_ROWS_PER_INSERT = 50


class Statements:
    """Reads and queued writes for one unit of work (a Session's transaction)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._dialect = session.get_bind().dialect
        self._postgres = self._dialect.name == "postgresql"

    @property
    def _writes(self) -> list[Write]:
        queued: list[Write] = self._session.info.setdefault(_QUEUE, [])
        return queued

    @property
    def pending(self) -> bool:
        """Whether writes are queued, waiting for `flush` or the unit of work's commit."""
        return bool(self._session.info.get(_QUEUE))

    # ---- reads ------------------------------------------------------------------------------

    def one(self, statement: AnySelect, **params: Any) -> Row | None:
        """The first row of a SELECT (with `bindparam` names as keyword arguments), or None."""
        rows = self._select(statement, params, limit_one=True)
        return rows[0] if rows else None

    def all(self, statement: AnySelect, **params: Any) -> list[Row]:
        return self._select(statement, params, limit_one=False)

    def many(self, *queries: tuple[AnySelect, Row]) -> list[list[Row]]:
        """Several SELECTs, each with its parameters; their rows in the same order. PostgreSQL
        gets them all in one pipeline (the server still runs them one after the other, so a
        row locked by the first is read as of that lock by the next)."""
        if not self._postgres:
            return [self.all(statement, **params) for statement, params in queries]
        compiled = [
            (compile_select(statement, self._dialect, _compiled_selects), params)
            for statement, params in queries
        ]
        if any(select.sql is None for select, _ in compiled):
            return [self.all(statement, **params) for statement, params in queries]
        self._autoflush()
        connection = self._connection()
        driver = _driver(connection)
        statements = [select.sql for select, _ in compiled if select.sql is not None]
        scope = tenancy.take_pending(connection)
        with self._errors(connection, statements):
            pending = []
            with driver.pipeline():
                if scope is not None:  # row-level security's scope, first, in the same pipeline
                    driver.execute(tenancy.SET_SCOPE, scope)
                for select, params in compiled:
                    assert select.sql is not None
                    cursor = driver.cursor(row_factory=tuple_row)
                    cursor.execute(select.sql, read_params(select, params))
                    pending.append((cursor, select))
            # Read once the pipeline has ended: its Sync brought every result back. Fetching
            # inside it would send a Flush and wait for it first, a round trip more.
            results = []
            for cursor, select in pending:
                results.append(result_rows(select, self._dialect, cursor, cursor.fetchall()))
                cursor.close()
        return results

    def _select(self, statement: AnySelect, params: Row, *, limit_one: bool) -> list[Row]:
        select = (
            compile_select(statement, self._dialect, _compiled_selects) if self._postgres else None
        )
        if select is None or select.sql is None:
            result = self._session.execute(statement, params).mappings()
            if limit_one:
                found = result.first()
                return [dict(found)] if found else []
            return [dict(r) for r in result]
        self._autoflush()
        connection = self._connection()
        driver = _driver(connection)
        scope = tenancy.take_pending(connection)
        with (
            self._errors(connection, [select.sql]),
            driver.cursor(row_factory=tuple_row) as cursor,
        ):
            if scope is not None and driver.autocommit:
                # A read with no transaction (`Database.reading`): the scope and the read in
                # one pipeline, one round trip; there is no BEGIN for psycopg to wait on.
                with driver.pipeline():
                    driver.execute(tenancy.SET_SCOPE, scope)
                    cursor.execute(select.sql, read_params(select, params))
            else:
                # In a transaction, no pipeline for one read: psycopg (3.3) follows the BEGIN it
                # adds in a pipeline with a Sync and waits for it, so a pipeline would cost a
                # round trip more, not less.
                if scope is not None:  # row-level security's scope, before the first read
                    cursor.execute(tenancy.SET_SCOPE, scope)
                cursor.execute(select.sql, read_params(select, params))
            if limit_one:
                first = cursor.fetchone()
                raw = [first] if first is not None else []
            else:
                raw = cursor.fetchall()
            return result_rows(select, self._dialect, cursor, raw)

    def _autoflush(self) -> None:
        """What Session.execute does before a read: pending ORM changes are flushed first."""
        session = self._session
        if session.autoflush and (session.new or session.dirty or session.deleted):
            session.flush()

    # ---- queued writes ----------------------------------------------------------------------

    def insert(self, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
        """Queue rows of a model's table (all with the same keys) for `flush`. Columns left out
        take their scalar default, as with Core."""
        if rows:
            table = table_of(model)
            full = [with_defaults(table, r) for r in rows]
            self._writes.append(Write("insert", table, full, None, None))

    def update(
        self,
        model: type[Base],
        where: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        expect: int | None = 1,
        refusal: Callable[[], Exception] | None = None,
    ) -> None:
        """Queue `UPDATE table SET values WHERE key = value AND ...` (None: `IS NULL`). The
        update must match `expect` rows (None: any number); otherwise `flush` or the unit of
        work's commit raises StaleDataError, or what `refusal` returns, and the unit of work
        keeps nothing."""
        if not where or not values:
            raise ValueError("an update needs at least one condition and one value")
        if expect is not None and (isinstance(expect, bool) or expect < 0):
            raise ValueError("expect is a number of rows (or None: any number)")
        if refusal is not None and expect is None:
            raise ValueError("a refusal needs a number of rows to expect")
        self._writes.append(
            Write("update", table_of(model), [dict(values)], dict(where), expect, refusal)
        )

    def flush(self) -> None:
        """Send every queued write now, in order (PostgreSQL: one pipeline; elsewhere, Core),
        inside the unit of work's transaction. Only needed to read the rows back before the
        unit of work commits; on any error the unit of work rolls back."""
        self._send(commit=False)

    def _send(self, *, commit: bool) -> None:
        """`commit=True` (the unit of work's commit, through `commit_queued`): the writes and
        the COMMIT in one round trip on PostgreSQL; pending ORM changes are flushed first so
        they commit with the rest."""
        if commit and self._session.in_nested_transaction():
            raise RuntimeError("a unit of work does not commit around a SAVEPOINT")
        writes = list(self._writes)
        self._writes.clear()
        if commit:
            self._session.flush()  # every ORM change goes before the COMMIT
        elif not writes:
            return
        if not self._postgres:
            self._send_through_core(writes)
            return
        # Bind every value first: a refused value (a naive datetime) sends nothing at all.
        prepared: list[tuple[str, Row, Write | None]] = []  # the update whose count is checked
        for write in writes:
            table, rows = write.table, write.rows
            if write.kind == "insert":
                keys = tuple(rows[0])
                processors = key_processors(self._dialect, table, keys)
                for first in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[first : first + _ROWS_PER_INSERT]
                    statement = insert_statement(
                        self._dialect, table, keys, len(chunk), _insert_sql
                    )
                    params: Row = {}
                    for names, row in zip(statement.names, chunk, strict=True):
                        params.update(zip(names, bound(row, keys, processors), strict=True))
                    prepared.append((statement.sql, params, None))
            else:
                assert write.where is not None
                where = write.where
                null_keys = tuple(k for k, v in where.items() if v is None)
                where_keys = tuple(k for k in where if k not in null_keys)
                keys = tuple(rows[0])
                statement = update_statement(
                    self._dialect, table, keys, where_keys, null_keys, write.expect, _update_sql
                )
                set_names, where_names = statement.names
                set_values = bound(rows[0], keys, key_processors(self._dialect, table, keys))
                where_values = bound(
                    where, where_keys, key_processors(self._dialect, table, where_keys)
                )
                params = dict(zip(set_names, set_values, strict=True))
                params.update(zip(where_names, where_values, strict=True))
                checked_write = write if write.expect is not None else None
                prepared.append((statement.sql, params, checked_write))
        connection = self._connection()
        driver = _driver(connection)
        statements = [sql for sql, _, _ in prepared]
        if commit:
            statements.append("COMMIT")
        checked: list[tuple[psycopg.Cursor[Any], Write]] = []
        scope = tenancy.take_pending(connection)
        try:
            with (
                self._errors(connection, statements),
                driver.pipeline(),
                driver.cursor() as cursor,
            ):
                if scope is not None:  # row-level security's scope, first, in the same pipeline
                    cursor.execute(tenancy.SET_SCOPE, scope)
                for sql, params, update_checked in prepared:
                    if update_checked is None:
                        cursor.execute(sql, params)
                    else:  # a cursor of its own, to tell which update the server refused
                        checked_cursor = driver.cursor()
                        checked_cursor.execute(sql, params)
                        checked.append((checked_cursor, update_checked))
                if commit:
                    cursor.execute("COMMIT")
        except DBAPIError as exc:
            # The row count guard (see `fast_compile.update_statement`) divides by zero; no
            # other statement sent here computes anything. The first checked update with no
            # result is the one that failed (the statements after a failure are skipped, and
            # get none either).
            if isinstance(exc.orig, psycopg.errors.DivisionByZero):
                for checked_cursor, write in checked:
                    if checked_cursor.pgresult is None:
                        raise stale(write, None) from exc
            raise
        finally:
            for checked_cursor, _ in checked:
                checked_cursor.close()

    def _send_through_core(self, writes: list[Write]) -> None:
        for write in writes:
            table = write.table
            if write.kind == "insert":
                self._session.execute(insert(table), write.rows)
                continue
            assert write.where is not None
            clause = and_(
                *(
                    table.c[k].is_(None) if v is None else table.c[k] == v
                    for k, v in write.where.items()
                )
            )
            statement = update(table).where(clause).values(**write.rows[0])
            result = cast(CursorResult[Any], self._session.execute(statement))
            if write.expect is not None and result.rowcount != write.expect:
                raise stale(write, result.rowcount)

    # ---- plumbing -----------------------------------------------------------------------------

    def _connection(self) -> Connection:
        return self._session.connection()

    @contextmanager
    def _errors(self, connection: Connection, statements: Sequence[str]) -> Iterator[None]:
        """psycopg errors as the SQLAlchemy exception Core would raise. A lost connection is
        invalidated, with every other connection the pool holds (as Core does), so the unit
        of work's rollback succeeds and the next request gets a fresh connection."""
        try:
            yield
        except psycopg.Error as exc:
            lost = self._dialect.is_disconnect(cast(Any, exc), connection.connection, None)
            if lost:
                connection.invalidate(exc)
                connection.engine.dispose()  # the other pooled connections died with it
            raise DBAPIError.instance(
                "; ".join(statements),
                None,
                exc,
                psycopg.Error,
                connection_invalidated=lost,
                dialect=self._dialect,
            ) from exc


# The session's queued writes (in `Session.info`, so every `Statements` of a session shares them).
_QUEUE = "product_shop.fast.queue"


def commit_queued(session: Session) -> None:
    """The unit of work's commit step (db.engine only): writes still queued go out with the
    COMMIT, in one round trip on PostgreSQL. The caller then ends the session's transaction as
    usual (nothing more is sent to a server that has committed already)."""
    if session.info.get(_QUEUE):
        Statements(session)._send(commit=True)


def columns_of(instance: Base) -> Row:
    """An ORM object as a row (column keys to values), for code that works on rows."""
    return {
        attr.key: getattr(instance, attr.key) for attr in sa_inspect(instance).mapper.column_attrs
    }


def _driver(connection: Connection) -> psycopg.Connection[Any]:
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver
