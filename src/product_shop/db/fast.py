"""Hot-path statements: SQLAlchemy metadata in, few round trips out.

The ORM unit of work costs about 5 ms of CPU for the dozen rows a checkout completion writes; the
same rows sent as psycopg statements in one pipeline cost under 1 ms (figures in
docs/benchmarks.md). `Statements` keeps the tables, columns and types of our SQLAlchemy models as
the single description of the schema and only changes how rows travel:

- on PostgreSQL, statements are compiled once, run on the session's own psycopg connection (so
  they share its transaction), and queued writes go out in one pipeline;
- on every other engine (SQLite, the embedded default) they run as SQLAlchemy Core statements.

Values pass through our column types either way (aware UTC timestamps are enforced, JSON
documents are encoded the same), and database errors surface as SQLAlchemy's exception classes,
so callers handle one set of errors whatever the engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import Table, and_, bindparam, insert, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.types import JSON, TypeDecorator

from product_shop.db.base import Base, json_default

Row = dict[str, Any]
AnySelect = Select[*tuple[Any, ...]]
Decorated = tuple[tuple[str, TypeDecorator[Any]], ...]

_compiled_selects: dict[AnySelect, tuple[str, Row, Decorated]] = {}
_insert_sql: dict[tuple[str, tuple[str, ...]], str] = {}
_update_sql: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"))


class Statements:
    """Reads and queued writes for one unit of work (a Session's transaction)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._dialect = session.get_bind().dialect
        self._postgres = self._dialect.name == "postgresql"
        self._writes: list[tuple[str, Table, list[Row], Row | None]] = []

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
        driver = self._driver()
        with self._errors("pipelined reads"), driver.pipeline():
            pending = []
            for statement, params in queries:
                sql, defaults, columns = self._compiled(statement)
                cursor = driver.cursor(row_factory=dict_row)
                cursor.execute(sql, {**defaults, **params})
                pending.append((cursor, columns))
            results = []
            for cursor, columns in pending:
                results.append([self._result_row(row, columns) for row in cursor.fetchall()])
                cursor.close()
        return results

    def _select(self, statement: AnySelect, params: Row, *, limit_one: bool) -> list[Row]:
        if not self._postgres:
            result = self._session.execute(statement, params).mappings()
            found = result.first() if limit_one else None
            return ([dict(found)] if found else []) if limit_one else [dict(r) for r in result]
        sql, defaults, columns = self._compiled(statement)
        with self._errors(sql), self._driver().cursor(row_factory=dict_row) as cursor:
            cursor.execute(sql, {**defaults, **params})
            raw = [cursor.fetchone()] if limit_one else cursor.fetchall()
        return [self._result_row(row, columns) for row in raw if row is not None]

    def _compiled(self, statement: AnySelect) -> tuple[str, Row, Decorated]:
        """SQL text, the values SQLAlchemy bound itself (a LIMIT, say), decorated columns."""
        found = _compiled_selects.get(statement)
        if found is None:
            compiled = statement.compile(dialect=self._dialect)
            columns = tuple(
                (str(column.key), column.type)
                for column in statement.selected_columns
                if isinstance(column.type, TypeDecorator)
            )
            defaults = {k: v for k, v in compiled.params.items() if v is not None}
            found = _compiled_selects[statement] = (str(compiled), defaults, columns)
        return found

    def _result_row(self, row: Row, decorated: Decorated) -> Row:
        for key, column_type in decorated:
            row[key] = column_type.process_result_value(row[key], self._dialect)
        return row

    # ---- queued writes ----------------------------------------------------------------------

    def insert(self, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
        """Queue rows of a model's table (all with the same keys) for `flush`."""
        if rows:
            self._writes.append(("insert", _table(model), [dict(r) for r in rows], None))

    def update(
        self, model: type[Base], where: Mapping[str, Any], values: Mapping[str, Any]
    ) -> None:
        """Queue `UPDATE table SET values WHERE key = value AND ...` for `flush`."""
        self._writes.append(("update", _table(model), [dict(values)], dict(where)))

    def flush(self) -> None:
        """Send every queued write, in order: PostgreSQL, one pipeline; elsewhere, Core."""
        writes, self._writes = self._writes, []
        if not writes:
            return
        if not self._postgres:
            for kind, table, rows, where in writes:
                if kind == "insert":
                    self._session.execute(insert(table), rows)
                else:
                    assert where is not None
                    clause = and_(*(table.c[k] == v for k, v in where.items()))
                    self._session.execute(update(table).where(clause).values(**rows[0]))
            return
        driver = self._driver()
        statement = "pipeline"
        with self._errors(statement), driver.pipeline(), driver.cursor() as cursor:
            for kind, table, rows, where in writes:
                if kind == "insert":
                    statement = self._insert_statement(table, tuple(rows[0]))
                    cursor.executemany(statement, [self._bind(table, row) for row in rows])
                else:
                    assert where is not None
                    statement = self._update_statement(table, tuple(rows[0]), tuple(where))
                    params = self._bind(table, rows[0])
                    params.update({f"w_{k}": v for k, v in self._bind(table, where).items()})
                    cursor.execute(statement, params)

    def _insert_statement(self, table: Table, keys: tuple[str, ...]) -> str:
        cache_key = (table.name, keys)
        sql = _insert_sql.get(cache_key)
        if sql is None:
            compiled = insert(table).compile(dialect=self._dialect, column_keys=list(keys))
            sql = _insert_sql[cache_key] = str(compiled)
        return sql

    def _update_statement(self, table: Table, keys: tuple[str, ...], where: tuple[str, ...]) -> str:
        cache_key = (table.name, keys, where)
        sql = _update_sql.get(cache_key)
        if sql is None:
            statement = (
                update(table)
                .where(and_(*(table.c[k] == bindparam(f"w_{k}") for k in where)))
                .values({k: bindparam(k) for k in keys})
            )
            sql = _update_sql[cache_key] = str(statement.compile(dialect=self._dialect))
        return sql

    def _bind(self, table: Table, row: Mapping[str, Any]) -> Row:
        """Values as SQLAlchemy would send them: our type decorators applied, JSON encoded."""
        bound: Row = {}
        for key, value in row.items():
            column_type = table.c[key].type
            if isinstance(column_type, TypeDecorator):
                value = column_type.process_bind_param(value, self._dialect)
            elif isinstance(column_type, JSON) and value is not None:
                value = Jsonb(value, dumps=_dumps)
            bound[key] = value
        return bound

    # ---- plumbing -----------------------------------------------------------------------------

    def _driver(self) -> psycopg.Connection[Any]:
        driver = self._session.connection().connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        return driver

    @contextmanager
    def _errors(self, statement: str) -> Iterator[None]:
        """psycopg errors as SQLAlchemy's, as if the statement had gone through Core."""
        try:
            yield
        except psycopg.IntegrityError as exc:
            raise IntegrityError(statement, None, exc) from exc
        except psycopg.OperationalError as exc:
            raise OperationalError(statement, None, exc) from exc
        except psycopg.Error as exc:
            raise DBAPIError(statement, None, exc) from exc


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table
