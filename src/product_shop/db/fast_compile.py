"""Statement compilation and value conversion for `db.fast` (its PostgreSQL path).

`db.fast.Statements` sends our SQLAlchemy statements as psycopg SQL. This module does the part
that is the same for every unit of work: it compiles a SELECT, a multi-row INSERT or an UPDATE
(with its row count checked by the server) once for the psycopg dialect, and finds the bind and
result processors that make values travel as Core's do. It also holds the small helpers the
queue uses (a queued write's record, scalar column defaults, the ORM's StaleDataError).

The compiled statements' caches belong to `db.fast` (the compile functions take the cache to
fill as an argument); the per-column bind processors are cached here. Nothing here opens a
connection or sends anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import psycopg
from sqlalchemy import (
    Column,
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
from sqlalchemy.engine import Dialect
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from product_shop.db.base import Base

Row = dict[str, Any]
AnySelect = Select[*tuple[Any, ...]]
Processor = Callable[[Any], Any]


@dataclass(slots=True)
class CompiledSelect:
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


class CompiledWrite(NamedTuple):
    sql: str
    # insert: the SQL parameter names of each row's keys (one tuple per row); update: the
    # names of the SET values, then of the WHERE keys.
    names: tuple[tuple[str, ...], ...]


class Write(NamedTuple):
    kind: str  # "insert" or "update"
    table: Table
    rows: list[Row]  # an update: one row, its values
    where: Row | None
    expect: int | None  # an update: the rows it must match (None: any number)
    # An update: what to raise when it matches another number of rows (None: StaleDataError).
    refusal: Callable[[], Exception] | None = None


SelectCache = dict[AnySelect, CompiledSelect]
InsertCache = dict[tuple[str, tuple[str, ...], int], CompiledWrite]
UpdateCache = dict[
    tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], int | None], CompiledWrite
]

# Statements are meant to be module-level constants; past MAX_CACHED, SELECTs built per call are
# compiled each time instead of filling memory.
MAX_CACHED = 512
# Each column's bind processor (None: sent as is), and those of a table's keys by position (one
# psycopg dialect per process, as every cache of db.fast assumes).
_column_binds: dict[Column[Any], Processor | None] = {}
_key_binds: dict[tuple[Table, tuple[str, ...]], tuple[tuple[int, Processor], ...]] = {}


def _only_postgres(dialect: Dialect) -> None:
    assert dialect.name == "postgresql", "only PostgreSQL statements are compiled and cached"


# ---- reads --------------------------------------------------------------------------------------


def compile_select(statement: AnySelect, dialect: Dialect, cache: SelectCache) -> CompiledSelect:
    """The SELECT compiled once for `dialect`, from `cache` or added to it."""
    _only_postgres(dialect)
    found = cache.get(statement)
    if found is None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        # Parameters rendered only at execution (an expanding IN list, a literal_execute
        # value) cannot be sent as compiled: Core renders them per call.
        if compiled.post_compile_params or compiled.literal_execute_params:
            found = CompiledSelect(sql=None, defaults={}, params=(), keys=(), types=())
            if len(cache) < MAX_CACHED:
                cache[statement] = found
            return found
        escaped = compiled.escaped_bind_names
        defaults: Row = {}
        params: list[tuple[str, str, Processor | None]] = []
        for bind, name in compiled.bind_names.items():
            in_sql = escaped.get(name, name)
            if in_sql in defaults or any(in_sql == p[1] for p in params):
                continue  # one parameter used twice: processed once, as Core does
            process = bind_processor(dialect, bind.type)
            if not bind.required:  # a value SQLAlchemy bound itself, processed once here
                value = compiled.params[in_sql]
                defaults[in_sql] = process(value) if process is not None else value
            if not bind.unique and (process is not None or in_sql != bind.key):
                params.append((bind.key, in_sql, process))
        # The result columns as Core's CursorResult keys and types them. SQLAlchemy has
        # no public attribute for this (`_result_columns` is what CursorResult reads):
        # `selected_columns` gives the types but not the keys the SQL renders.
        columns = compiled._result_columns
        found = CompiledSelect(
            sql=compiled.string,
            defaults=defaults,
            params=tuple(params),
            keys=tuple(column.keyname for column in columns),
            types=tuple(column.type for column in columns),
        )
        if len(cache) < MAX_CACHED:
            cache[statement] = found
    return found


def read_params(select: CompiledSelect, params: Row) -> Row:
    """The caller's parameters as the compiled SELECT takes them: renamed and processed."""
    values = {**select.defaults, **params}
    for key, name, process in select.params:
        if key in params:
            value = params[key]
            values[name] = process(value) if process is not None else value
    return values


def result_rows(
    select: CompiledSelect, dialect: Dialect, cursor: psycopg.Cursor[Any], raw: Sequence[Any]
) -> list[Row]:
    """The fetched tuples as rows keyed as Core keys them, through their result processors."""
    results = select.results
    if results is None:
        description = cursor.description
        assert description is not None
        found: list[tuple[str, Processor]] = []
        # strict: the server returns the columns the statement names, in its order.
        for key, column_type, column in zip(select.keys, select.types, description, strict=True):
            impl = column_type.dialect_impl(dialect)
            process = impl.result_processor(dialect, column.type_code)
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


def bind_processor(dialect: Dialect, column_type: TypeEngine[Any]) -> Processor | None:
    """The type's bind processor for this dialect, as Core applies it (TypeDecorators,
    variants and the dialect's own implementation types included)."""
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    return cast(Processor | None, process)


# ---- writes -------------------------------------------------------------------------------------


def key_processors(
    dialect: Dialect, table: Table, keys: tuple[str, ...]
) -> tuple[tuple[int, Processor], ...]:
    """The bind processors of a table's keys, by position (keys sent as is left out)."""
    cache_key = (table, keys)
    found = _key_binds.get(cache_key)
    if found is None:
        processors = []
        for position, key in enumerate(keys):
            column = table.c[key]
            if column not in _column_binds:
                _column_binds[column] = bind_processor(dialect, column.type)
            process = _column_binds[column]
            if process is not None:
                processors.append((position, process))
        found = _key_binds[cache_key] = tuple(processors)
    return found


def insert_statement(
    dialect: Dialect, table: Table, keys: tuple[str, ...], rows: int, cache: InsertCache
) -> CompiledWrite:
    """`INSERT ... VALUES (...), (...)` for `rows` rows: one statement for the server to
    run, however many rows (parameters named r{row}c{column})."""
    _only_postgres(dialect)
    cache_key = (table.name, keys, rows)
    found = cache.get(cache_key)
    if found is None:
        values = [
            {k: bindparam(f"r{i}c{j}", type_=table.c[k].type) for j, k in enumerate(keys)}
            for i in range(rows)
        ]
        statement = insert(table).values(values) if rows > 1 else insert(table).values(values[0])
        width = len(keys)
        sql, in_sql = compile_write(
            statement,
            dialect,
            table,
            [f"r{i}c{j}" for i in range(rows) for j in range(width)],
        )
        names = tuple(tuple(in_sql[i * width : (i + 1) * width]) for i in range(rows))
        found = cache[cache_key] = CompiledWrite(sql, names)
    return found


def update_statement(
    dialect: Dialect,
    table: Table,
    keys: tuple[str, ...],
    where: tuple[str, ...],
    null_where: tuple[str, ...],
    expect: int | None,
    cache: UpdateCache,
) -> CompiledWrite:
    """`UPDATE ... SET ... WHERE ...`; with `expect`, the row count is checked by the
    server:

        WITH updated AS (UPDATE ... RETURNING 1)
        SELECT 1 / CAST(count(*) = <expect> AS INTEGER) FROM updated

    divides by zero, which aborts the transaction, when the UPDATE matched another number
    of rows. The check runs in the same round trip as the writes and the COMMIT (which an
    aborted transaction turns into a rollback): the count is known before anything is
    committed, at no round trip more."""
    _only_postgres(dialect)
    cache_key = (table.name, keys, where, null_where, expect)
    found = cache.get(cache_key)
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
        sql, in_sql = compile_write(statement, dialect, table, [*keys, *(f"w_{k}" for k in where)])
        names = (tuple(in_sql[: len(keys)]), tuple(in_sql[len(keys) :]))
        found = cache[cache_key] = CompiledWrite(sql, names)
    return found


def compile_write(
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


def bound(
    row: Mapping[str, Any], keys: tuple[str, ...], processors: tuple[tuple[int, Processor], ...]
) -> list[Any]:
    """A row's values in the order of `keys`, through their bind processors."""
    values = [row[key] for key in keys]
    for position, process in processors:
        values[position] = process(values[position])
    return values


# ---- queued rows and their errors ---------------------------------------------------------------


def table_of(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def with_defaults(table: Table, row: Mapping[str, Any]) -> Row:
    """The row with the scalar default of every column it leaves out, as Core fills them."""
    full = dict(row)
    for column in table.columns:
        if column.key in full or column.default is None:
            continue
        if not column.default.is_scalar:
            raise ValueError(f"{table.name}.{column.key} has no scalar default: give a value")
        full[column.key] = column.default.arg  # type: ignore[attr-defined]
    return full


def stale(write: Write, matched: int | None) -> Exception:
    """The error the ORM raises when a flush's UPDATE matches another number of rows, or the
    write's own refusal when it has one."""
    if write.refusal is not None:
        return write.refusal()
    found = f"{matched} were matched" if matched is not None else "a different number were matched"
    return StaleDataError(
        f"UPDATE statement on table '{write.table.name}' expected to update {write.expect} "
        f"row(s); {found} (where {write.where!r})"
    )
