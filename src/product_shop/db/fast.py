"""Hot-path statements: SQLAlchemy metadata in, few round trips out.

The ORM unit of work costs about 5 ms of CPU for the dozen rows a checkout completion writes; the
same rows sent as psycopg statements in one pipeline cost under 1 ms (figures in
docs/benchmarks.md). `Statements` keeps the tables, columns and types of our SQLAlchemy models as
the single description of the schema and only changes how rows travel:

- on PostgreSQL, statements are compiled once, run on the session's own psycopg connection (so
  they share its transaction), and queued writes go out in one pipeline;
- on every other engine (SQLite, the embedded default) they run as SQLAlchemy Core statements.

Both paths behave as Core does: values pass through our column types (aware UTC timestamps are
enforced, JSON documents encoded the same way, Python None stored as JSON null), scalar column
defaults fill missing keys, the session autoflushes before a read, and database errors surface
as SQLAlchemy's exception classes (a lost connection is invalidated, with the pool). A SELECT
that the fast path cannot send as compiled once (an expanding `IN` list) simply goes through Core.

Statements are cached by identity: build them once, at module level, with `bindparam` names.

Queued writes belong to the session (every `Statements` of one session shares its queue). A
service queues rows and may `flush()` them when it must read them back; the unit of work that
owns the session sends what is still queued together with its COMMIT (`commit_queued`, called
by `db.engine` only): on PostgreSQL, one round trip for the writes and the COMMIT.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Table, and_, bindparam, insert, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.types import JSON, TypeDecorator

from product_shop.db.base import Base, json_default

Row = dict[str, Any]
AnySelect = Select[*tuple[Any, ...]]
Decorated = tuple[tuple[str, TypeDecorator[Any]], ...]


@dataclass(frozen=True, slots=True)
class _CompiledSelect:
    sql: str | None  # None: not compilable once (expanding IN); run through Core instead
    defaults: Row  # values SQLAlchemy bound itself (a LIMIT, say)
    params: Decorated  # parameters whose column type is one of our TypeDecorators
    columns: Decorated  # result columns whose type is one of our TypeDecorators


# Compiled for PostgreSQL only (the one dialect that takes the fast path). Statements are meant
# to be module-level constants; past _MAX_CACHED, statements built per call are compiled each
# time instead of filling memory.
_compiled_selects: dict[AnySelect, _CompiledSelect] = {}
_MAX_CACHED = 512
_insert_sql: dict[tuple[str, tuple[str, ...], int], str] = {}
# Rows per multi-row INSERT (each chunk is one statement; PostgreSQL takes at most 65,535
# parameters in one).
_ROWS_PER_INSERT = 50
_update_sql: dict[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], str] = {}


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"))


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
                cursor = driver.cursor(row_factory=dict_row)
                cursor.execute(select.sql, self._read_params(select, params))
                pending.append((cursor, select.columns))
            results = []
            for cursor, columns in pending:
                results.append([self._result_row(row, columns) for row in cursor.fetchall()])
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
            _driver(connection).cursor(row_factory=dict_row) as cursor,
        ):
            cursor.execute(select.sql, self._read_params(select, params))
            raw = [cursor.fetchone()] if limit_one else cursor.fetchall()
        return [self._result_row(row, select.columns) for row in raw if row is not None]

    def _compiled(self, statement: AnySelect) -> _CompiledSelect:
        assert self._postgres, "only PostgreSQL statements are compiled and cached"
        found = _compiled_selects.get(statement)
        if found is None:
            compiled = statement.compile(dialect=self._dialect)
            sql = str(compiled)
            found = _CompiledSelect(
                sql=None if "POSTCOMPILE" in sql else sql,
                defaults={k: v for k, v in compiled.params.items() if v is not None},
                params=tuple(
                    (name, bind.type)
                    for name, bind in ((compiled.bind_names[b], b) for b in compiled.binds.values())
                    if isinstance(bind.type, TypeDecorator)
                ),
                columns=tuple(
                    (str(column.key), column.type)
                    for column in statement.selected_columns
                    if isinstance(column.type, TypeDecorator)
                ),
            )
            if len(_compiled_selects) < _MAX_CACHED:
                _compiled_selects[statement] = found
        return found

    def _read_params(self, select: _CompiledSelect, params: Row) -> Row:
        values = {**select.defaults, **params}
        for name, param_type in select.params:
            if name in values:
                values[name] = param_type.process_bind_param(values[name], self._dialect)
        return values

    def _result_row(self, row: Row, decorated: Decorated) -> Row:
        for key, column_type in decorated:
            row[key] = column_type.process_result_value(row[key], self._dialect)
        return row

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
            self._writes.append(("insert", table, [_with_defaults(table, r) for r in rows], None))

    def update(
        self, model: type[Base], where: Mapping[str, Any], values: Mapping[str, Any]
    ) -> None:
        """Queue `UPDATE table SET values WHERE key = value AND ...` (None: `IS NULL`)."""
        if not where or not values:
            raise ValueError("an update needs at least one condition and one value")
        self._writes.append(("update", _table(model), [dict(values)], dict(where)))

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
            for kind, table, rows, where in writes:
                if kind == "insert":
                    self._session.execute(insert(table), rows)
                else:
                    assert where is not None
                    clause = and_(
                        *(
                            table.c[k].is_(None) if v is None else table.c[k] == v
                            for k, v in where.items()
                        )
                    )
                    self._session.execute(update(table).where(clause).values(**rows[0]))
            return
        # Bind every value first: a refused value (a naive datetime) sends nothing at all.
        prepared: list[tuple[str, list[Row]]] = []
        for kind, table, rows, where in writes:
            if kind == "insert":
                keys = tuple(rows[0])
                for first in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[first : first + _ROWS_PER_INSERT]
                    sql = self._insert_statement(table, keys, len(chunk))
                    params: Row = {}
                    for i, row in enumerate(chunk):
                        bound = self._bind(table, row)
                        params.update({f"r{i}c{j}": bound[key] for j, key in enumerate(keys)})
                    prepared.append((sql, [params]))
            else:
                assert where is not None
                null_keys = tuple(k for k, v in where.items() if v is None)
                keys = tuple(k for k in where if k not in null_keys)
                sql = self._update_statement(table, tuple(rows[0]), keys, null_keys)
                values = self._bind(table, rows[0])
                valued = {k: where[k] for k in keys}
                values.update({f"w_{k}": v for k, v in self._bind(table, valued).items()})
                prepared.append((sql, [values]))
        connection = self._connection()
        driver = _driver(connection)
        statements = [sql for sql, _ in prepared]
        if commit:
            statements.append("COMMIT")
        with self._errors(connection, statements), driver.pipeline(), driver.cursor() as cursor:
            for sql, params_list in prepared:
                cursor.execute(sql, params_list[0])
            if commit:
                cursor.execute("COMMIT")

    def _insert_statement(self, table: Table, keys: tuple[str, ...], rows: int) -> str:
        """`INSERT ... VALUES (...), (...)` for `rows` rows: one statement for the server to
        run, however many rows (parameters named r{row}c{column})."""
        assert self._postgres, "only PostgreSQL statements are compiled and cached"
        cache_key = (table.name, keys, rows)
        sql = _insert_sql.get(cache_key)
        if sql is None:
            values = [
                {k: bindparam(f"r{i}c{j}", type_=table.c[k].type) for j, k in enumerate(keys)}
                for i in range(rows)
            ]
            statement = (
                insert(table).values(values) if rows > 1 else insert(table).values(values[0])
            )
            sql = _insert_sql[cache_key] = str(statement.compile(dialect=self._dialect))
        return sql

    def _update_statement(
        self,
        table: Table,
        keys: tuple[str, ...],
        where: tuple[str, ...],
        null_where: tuple[str, ...],
    ) -> str:
        assert self._postgres, "only PostgreSQL statements are compiled and cached"
        cache_key = (table.name, keys, where, null_where)
        sql = _update_sql.get(cache_key)
        if sql is None:
            conditions = [table.c[k] == bindparam(f"w_{k}") for k in where]
            conditions += [table.c[k].is_(None) for k in null_where]
            statement = (
                update(table).where(and_(*conditions)).values({k: bindparam(k) for k in keys})
            )
            sql = _update_sql[cache_key] = str(statement.compile(dialect=self._dialect))
        return sql

    def _bind(self, table: Table, row: Mapping[str, Any]) -> Row:
        """Values as SQLAlchemy would send them: our type decorators applied, JSON encoded
        (None as JSON null, SQLAlchemy's default for JSON columns)."""
        bound: Row = {}
        for key, value in row.items():
            column_type = table.c[key].type
            if isinstance(column_type, TypeDecorator):
                value = column_type.process_bind_param(value, self._dialect)
            elif isinstance(column_type, JSON) and (
                value is not None or not column_type.none_as_null
            ):
                value = Jsonb(value, dumps=_dumps)
            bound[key] = value
        return bound

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


# Set on a session whose transaction `flush(commit=True)` committed. Anything the session sends
# after that would run in a transaction of its own, apart from the order's (invariant 5), so it is
# refused instead: through Statements, an ORM query or an ORM flush.
_QUEUE = "product_shop.fast.queue"
_Write = tuple[str, Table, list[Row], Row | None]


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


def _with_defaults(table: Table, row: Mapping[str, Any]) -> Row:
    full = dict(row)
    for column in table.columns:
        if column.key in full or column.default is None:
            continue
        if not column.default.is_scalar:
            raise ValueError(f"{table.name}.{column.key} has no scalar default: give a value")
        full[column.key] = column.default.arg  # type: ignore[attr-defined]
    return full
