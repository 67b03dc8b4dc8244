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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import psycopg
from psycopg.rows import tuple_row
from sqlalchemy import (
    Column,
    Connection,
    CursorResult,
    Integer,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from product_shop.db.base import Base

Row = dict[str, Any]
AnySelect = Select[*tuple[Any, ...]]
Processor = Callable[[Any], Any]


@dataclass(slots=True)
class _CompiledSelect:
    sql: str | None  # None: not compilable once (expanding IN); run through Core instead
    # Values SQLAlchemy bound itself (a LIMIT, say), by their name in the SQL, processed.
    defaults: Row
    # (name the caller gives, name in the SQL, the parameter type's bind processor), for the
    # parameters that need either: the rest are sent as given.
    params: tuple[tuple[str, str, Processor | None], ...]
    keys: tuple[str, ...]  # result columns, in order, keyed as Core keys them
    types: tuple[TypeEngine[Any], ...]  # and their types
    # Result processors by column key, found at the first execution: some depend on the type
    # the server reports (PostgreSQL's NUMERIC or FLOAT for a Numeric column).
    results: tuple[tuple[str, Processor], ...] | None = None


class _CompiledWrite(NamedTuple):
    sql: str
    # insert: the SQL parameter names of each row's keys (one tuple per row); update: the
    # names of the SET values, then of the WHERE keys.
    names: tuple[tuple[str, ...], ...]


class _Write(NamedTuple):
    kind: str  # "insert" or "update"
    table: Table
    rows: list[Row]  # an update: one row, its values
    where: Row | None
    expect: int | None  # an update: the rows it must match (None: any number)


# Compiled for PostgreSQL only (the one dialect that takes the fast path; one psycopg dialect
# per process, as the caches assume). Statements are meant to be module-level constants; past
# _MAX_CACHED, statements built per call are compiled each time instead of filling memory.
_compiled_selects: dict[AnySelect, _CompiledSelect] = {}
_MAX_CACHED = 512
_insert_sql: dict[tuple[str, tuple[str, ...], int], _CompiledWrite] = {}
# Rows per multi-row INSERT (each chunk is one statement; PostgreSQL takes at most 65,535
# parameters in one).
_ROWS_PER_INSERT = 50
_update_sql: dict[
    tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], int | None], _CompiledWrite
] = {}
# Each column's bind processor (None: sent as is), and those of a table's keys by position.
_column_binds: dict[Column[Any], Processor | None] = {}
_key_binds: dict[tuple[Table, tuple[str, ...]], tuple[tuple[int, Processor], ...]] = {}


class Statements:
    """Reads and queued writes for one unit of work (a Session's transaction)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._dialect = session.get_bind().dialect
        self._postgres = self._dialect.name == "postgresql"

    @property
    def _writes(self) -> list[_Write]:
        queued: list[_Write] = self._session.info.setdefault(_QUEUE, [])
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
        gets them all in one round trip (the server still runs them one after the other, so a
        row locked by the first is read as of that lock by the next)."""
        if not self._postgres:
            return [self.all(statement, **params) for statement, params in queries]
        compiled = [(self._compiled(statement), params) for statement, params in queries]
        if any(select.sql is None for select, _ in compiled):
            return [self.all(statement, **params) for statement, params in queries]
        self._autoflush()
        connection = self._connection()
        driver = _driver(connection)
        statements = [select.sql for select, _ in compiled if select.sql is not None]
        with self._errors(connection, statements), driver.pipeline():
            pending = []
            for select, params in compiled:
                assert select.sql is not None
                cursor = driver.cursor(row_factory=tuple_row)
                cursor.execute(select.sql, self._read_params(select, params))
                pending.append((cursor, select))
            results = []
            for cursor, select in pending:
                results.append(self._result_rows(select, cursor, cursor.fetchall()))
                cursor.close()
        return results

    def _select(self, statement: AnySelect, params: Row, *, limit_one: bool) -> list[Row]:
        select = self._compiled(statement) if self._postgres else None
        if select is None or select.sql is None:
            result = self._session.execute(statement, params).mappings()
            if limit_one:
                found = result.first()
                return [dict(found)] if found else []
            return [dict(r) for r in result]
        self._autoflush()
        connection = self._connection()
        # No pipeline for one read: psycopg (3.3) follows the BEGIN it adds in a pipeline with a
        # Sync and waits for it, so a pipeline would cost a round trip more, not less.
        with (
            self._errors(connection, [select.sql]),
            _driver(connection).cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(select.sql, self._read_params(select, params))
            if limit_one:
                first = cursor.fetchone()
                raw = [first] if first is not None else []
            else:
                raw = cursor.fetchall()
            return self._result_rows(select, cursor, raw)

    def _compiled(self, statement: AnySelect) -> _CompiledSelect:
        assert self._postgres, "only PostgreSQL statements are compiled and cached"
        found = _compiled_selects.get(statement)
        if found is None:
            compiled = statement.compile(dialect=self._dialect)
            assert isinstance(compiled, SQLCompiler)
            # Parameters rendered only at execution (an expanding IN list, a literal_execute
            # value) cannot be sent as compiled: Core renders them per call.
            if compiled.post_compile_params or compiled.literal_execute_params:
                found = _CompiledSelect(sql=None, defaults={}, params=(), keys=(), types=())
                if len(_compiled_selects) < _MAX_CACHED:
                    _compiled_selects[statement] = found
                return found
            escaped = compiled.escaped_bind_names
            defaults: Row = {}
            params: list[tuple[str, str, Processor | None]] = []
            for bind, name in compiled.bind_names.items():
                in_sql = escaped.get(name, name)
                if in_sql in defaults or any(in_sql == p[1] for p in params):
                    continue  # one parameter used twice: processed once, as Core does
                process = self._bind_processor(bind.type)
                if not bind.required:  # a value SQLAlchemy bound itself, processed once here
                    value = compiled.params[in_sql]
                    defaults[in_sql] = process(value) if process is not None else value
                if not bind.unique and (process is not None or in_sql != bind.key):
                    params.append((bind.key, in_sql, process))
            # The result columns as Core's CursorResult keys and types them. SQLAlchemy has
            # no public attribute for this (`_result_columns` is what CursorResult reads):
            # `selected_columns` gives the types but not the keys the SQL renders.
            columns = compiled._result_columns
            found = _CompiledSelect(
                sql=compiled.string,
                defaults=defaults,
                params=tuple(params),
                keys=tuple(column.keyname for column in columns),
                types=tuple(column.type for column in columns),
            )
            if len(_compiled_selects) < _MAX_CACHED:
                _compiled_selects[statement] = found
        return found

    def _read_params(self, select: _CompiledSelect, params: Row) -> Row:
        values = {**select.defaults, **params}
        for key, name, process in select.params:
            if key in params:
                value = params[key]
                values[name] = process(value) if process is not None else value
        return values

    def _result_rows(
        self, select: _CompiledSelect, cursor: psycopg.Cursor[Any], raw: Sequence[Any]
    ) -> list[Row]:
        results = select.results
        if results is None:
            description = cursor.description
            assert description is not None
            found: list[tuple[str, Processor]] = []
            # strict: the server returns the columns the statement names, in its order.
            for key, column_type, column in zip(
                select.keys, select.types, description, strict=True
            ):
                impl = column_type.dialect_impl(self._dialect)
                process = impl.result_processor(self._dialect, column.type_code)
                if process is not None:
                    found.append((key, process))
            results = select.results = tuple(found)
        keys = select.keys
        rows = [dict(zip(keys, values, strict=True)) for values in raw]
        if results:
            for row in rows:
                for key, convert in results:
                    row[key] = convert(row[key])
        return rows

    def _bind_processor(self, column_type: TypeEngine[Any]) -> Processor | None:
        """The type's bind processor for this dialect, as Core applies it (TypeDecorators,
        variants and the dialect's own implementation types included)."""
        process = column_type.dialect_impl(self._dialect).bind_processor(self._dialect)
        return cast(Processor | None, process)

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
            table = _table(model)
            full = [_with_defaults(table, r) for r in rows]
            self._writes.append(_Write("insert", table, full, None, None))

    def update(
        self,
        model: type[Base],
        where: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        expect: int | None = 1,
    ) -> None:
        """Queue `UPDATE table SET values WHERE key = value AND ...` (None: `IS NULL`). The
        update must match `expect` rows (None: any number); otherwise `flush` or the unit of
        work's commit raises StaleDataError and the unit of work keeps nothing."""
        if not where or not values:
            raise ValueError("an update needs at least one condition and one value")
        if expect is not None and (isinstance(expect, bool) or expect < 0):
            raise ValueError("expect is a number of rows (or None: any number)")
        self._writes.append(_Write("update", _table(model), [dict(values)], dict(where), expect))

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
        prepared: list[tuple[str, Row, _Write | None]] = []  # the update whose count is checked
        for write in writes:
            table, rows = write.table, write.rows
            if write.kind == "insert":
                keys = tuple(rows[0])
                processors = self._key_processors(table, keys)
                for first in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[first : first + _ROWS_PER_INSERT]
                    statement = self._insert_statement(table, keys, len(chunk))
                    params: Row = {}
                    for names, row in zip(statement.names, chunk, strict=True):
                        params.update(zip(names, _bound(row, keys, processors), strict=True))
                    prepared.append((statement.sql, params, None))
            else:
                assert write.where is not None
                where = write.where
                null_keys = tuple(k for k, v in where.items() if v is None)
                where_keys = tuple(k for k in where if k not in null_keys)
                keys = tuple(rows[0])
                statement = self._update_statement(table, keys, where_keys, null_keys, write.expect)
                set_names, where_names = statement.names
                set_values = _bound(rows[0], keys, self._key_processors(table, keys))
                where_values = _bound(where, where_keys, self._key_processors(table, where_keys))
                params = dict(zip(set_names, set_values, strict=True))
                params.update(zip(where_names, where_values, strict=True))
                checked_write = write if write.expect is not None else None
                prepared.append((statement.sql, params, checked_write))
        connection = self._connection()
        driver = _driver(connection)
        statements = [sql for sql, _, _ in prepared]
        if commit:
            statements.append("COMMIT")
        checked: list[tuple[psycopg.Cursor[Any], _Write]] = []
        try:
            with (
                self._errors(connection, statements),
                driver.pipeline(),
                driver.cursor() as cursor,
            ):
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
            # The row count guard (see `_update_statement`) divides by zero; no other statement
            # sent here computes anything. The first checked update with no result is the one
            # that failed (the statements after a failure are skipped, and get none either).
            if isinstance(exc.orig, psycopg.errors.DivisionByZero):
                for checked_cursor, write in checked:
                    if checked_cursor.pgresult is None:
                        raise _stale(write, None) from exc
            raise
        finally:
            for checked_cursor, _ in checked:
                checked_cursor.close()

    def _send_through_core(self, writes: list[_Write]) -> None:
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
                raise _stale(write, result.rowcount)

    def _key_processors(
        self, table: Table, keys: tuple[str, ...]
    ) -> tuple[tuple[int, Processor], ...]:
        """The bind processors of a table's keys, by position (keys sent as is left out)."""
        cache_key = (table, keys)
        found = _key_binds.get(cache_key)
        if found is None:
            processors = []
            for position, key in enumerate(keys):
                column = table.c[key]
                if column not in _column_binds:
                    _column_binds[column] = self._bind_processor(column.type)
                process = _column_binds[column]
                if process is not None:
                    processors.append((position, process))
            found = _key_binds[cache_key] = tuple(processors)
        return found

    def _insert_statement(self, table: Table, keys: tuple[str, ...], rows: int) -> _CompiledWrite:
        """`INSERT ... VALUES (...), (...)` for `rows` rows: one statement for the server to
        run, however many rows (parameters named r{row}c{column})."""
        assert self._postgres, "only PostgreSQL statements are compiled and cached"
        cache_key = (table.name, keys, rows)
        found = _insert_sql.get(cache_key)
        if found is None:
            values = [
                {k: bindparam(f"r{i}c{j}", type_=table.c[k].type) for j, k in enumerate(keys)}
                for i in range(rows)
            ]
            statement = (
                insert(table).values(values) if rows > 1 else insert(table).values(values[0])
            )
            width = len(keys)
            sql, in_sql = _compile_write(
                statement,
                self._dialect,
                table,
                [f"r{i}c{j}" for i in range(rows) for j in range(width)],
            )
            names = tuple(tuple(in_sql[i * width : (i + 1) * width]) for i in range(rows))
            found = _insert_sql[cache_key] = _CompiledWrite(sql, names)
        return found

    def _update_statement(
        self,
        table: Table,
        keys: tuple[str, ...],
        where: tuple[str, ...],
        null_where: tuple[str, ...],
        expect: int | None,
    ) -> _CompiledWrite:
        """`UPDATE ... SET ... WHERE ...`; with `expect`, the row count is checked by the
        server:

            WITH updated AS (UPDATE ... RETURNING 1)
            SELECT 1 / CAST(count(*) = <expect> AS INTEGER) FROM updated

        divides by zero, which aborts the transaction, when the UPDATE matched another number
        of rows. The check runs in the same round trip as the writes and the COMMIT (which an
        aborted transaction turns into a rollback): the count is known before anything is
        committed, at no round trip more."""
        assert self._postgres, "only PostgreSQL statements are compiled and cached"
        cache_key = (table.name, keys, where, null_where, expect)
        found = _update_sql.get(cache_key)
        if found is None:
            conditions = [table.c[k] == bindparam(f"w_{k}", type_=table.c[k].type) for k in where]
            conditions += [table.c[k].is_(None) for k in null_where]
            statement: Any = (
                update(table)
                .where(and_(*conditions))
                .values({k: bindparam(k, type_=table.c[k].type) for k in keys})
            )
            if expect is not None:
                updated = statement.returning(literal_column("1")).cte("updated")
                matched = func.count() == literal_column(str(int(expect)), Integer)
                statement = select(
                    (literal_column("1", Integer) // matched.cast(Integer)).label("checked")
                ).select_from(updated)
            sql, in_sql = _compile_write(
                statement, self._dialect, table, [*keys, *(f"w_{k}" for k in where)]
            )
            names = (tuple(in_sql[: len(keys)]), tuple(in_sql[len(keys) :]))
            found = _update_sql[cache_key] = _CompiledWrite(sql, names)
        return found

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


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _bound(
    row: Mapping[str, Any], keys: tuple[str, ...], processors: tuple[tuple[int, Processor], ...]
) -> list[Any]:
    """A row's values in the order of `keys`, through their bind processors."""
    values = [row[key] for key in keys]
    for position, process in processors:
        values[position] = process(values[position])
    return values


def _compile_write(
    statement: Any, dialect: Dialect, table: Table, names: Sequence[str]
) -> tuple[str, list[str]]:
    """The SQL of an INSERT or UPDATE whose parameters are exactly `names`, and those names as
    the SQL spells them (SQLAlchemy escapes characters the driver's paramstyle would misread)."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    others = set(compiled.bind_names.values()) - set(names)
    if others:  # a value SQLAlchemy would compute at execution (a column's onupdate, say)
        raise ValueError(f"{table.name}: give values for {sorted(others)} too")
    escaped = compiled.escaped_bind_names
    return compiled.string, [escaped.get(name, name) for name in names]


def _stale(write: _Write, matched: int | None) -> StaleDataError:
    """The error the ORM raises when a flush's UPDATE matches another number of rows."""
    found = f"{matched} were matched" if matched is not None else "a different number were matched"
    return StaleDataError(
        f"UPDATE statement on table '{write.table.name}' expected to update {write.expect} "
        f"row(s); {found} (where {write.where!r})"
    )


def _with_defaults(table: Table, row: Mapping[str, Any]) -> Row:
    full = dict(row)
    for column in table.columns:
        if column.key in full or column.default is None:
            continue
        if not column.default.is_scalar:
            raise ValueError(f"{table.name}.{column.key} has no scalar default: give a value")
        full[column.key] = column.default.arg  # type: ignore[attr-defined]
    return full
