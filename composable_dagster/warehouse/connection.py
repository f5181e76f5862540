"""Reading the warehouse: connect, discover columns, run compiled queries.

Any SQLAlchemy URL works; DuckDB and PostgreSQL are exercised in the tests. The API opens the
warehouse read-only and holds no connection between requests, because DuckDB lets a file be
either written by one process or read by many, never both at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
import sqlglot
from sqlalchemy.pool import NullPool
from sqlglot import exp

from composable_dagster.errors import InvalidInputError, WarehouseError
from composable_dagster.filters.schema import Column
from composable_dagster.filters.sql_types import column_type_from_sql

# SQLAlchemy backend name -> sqlglot dialect name.
_DIALECTS = {
    "duckdb": "duckdb",
    "postgresql": "postgres",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "databricks": "databricks",
    "sqlite": "sqlite",
}


# Compiled SQL is complete text (values are literals): a statement executed without
# parameters must reach the driver as is, or psycopg reads the `%` of `LIKE '%x'` or of a
# modulo as a placeholder.
LITERAL_SQL = {"no_parameters": True}


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[Column, ...]
    rows: tuple[Mapping[str, Any], ...]


class Warehouse:
    """A handle on one warehouse URL. Cheap to create; connections are opened per use.

    `hold_seconds` (DuckDB, read-only): starting a DuckDB instance costs ~25 ms, more than
    most estimate queries, so one connection is kept open while requests keep coming and
    closed after this much idle time, releasing the file for writers (dbt) again.
    """

    def __init__(self, url: str, *, read_only: bool = True, hold_seconds: float = 0.0) -> None:
        self.url = sa.make_url(url)
        self.read_only = read_only
        backend = self.url.get_backend_name()
        self.dialect = _DIALECTS.get(backend, backend)
        self.hold_seconds = hold_seconds if self.dialect == "duckdb" and read_only else 0.0

    @property
    def engine(self) -> sa.Engine:
        return _engine(self.url.render_as_string(hide_password=False), self.read_only)

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        try:
            if self.hold_seconds > 0:
                _keeper(self.url.render_as_string(hide_password=False)).hold(
                    self.engine, seconds=self.hold_seconds
                )
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.DBAPIError as err:
            raise WarehouseError(_engine_message(err)) from err

    def describe_table(self, *, schema: str | None, table: str) -> tuple[Column, ...]:
        """Columns of a table or view, in order, from information_schema."""
        columns_table = sa.table(
            "columns",
            sa.column("table_schema"),
            sa.column("table_name"),
            sa.column("column_name"),
            sa.column("data_type"),
            sa.column("is_nullable"),
            sa.column("ordinal_position"),
            schema="information_schema",
        )
        query = (
            sa.select(
                columns_table.c.column_name, columns_table.c.data_type, columns_table.c.is_nullable
            )
            .where(columns_table.c.table_name == table)
            .order_by(columns_table.c.ordinal_position)
        )
        if schema:
            query = query.where(columns_table.c.table_schema == schema)
        with self.connect() as conn:
            rows = conn.execute(query).all()
        return tuple(self._column(name, type_, nullable == "YES") for name, type_, nullable in rows)

    def describe_query(self, sql: str) -> tuple[Column, ...]:
        """Columns a SELECT returns, without fetching its rows."""
        select = parse_select(sql, dialect=self.dialect, field="sql_query")
        with self.connect() as conn:
            if self.dialect == "duckdb":
                described = conn.exec_driver_sql(f"DESCRIBE {select.sql(dialect='duckdb')}").all()
                return tuple(self._column(row[0], row[1], row[2] == "YES") for row in described)
            probe = exp.select("*").from_(select.subquery("q")).limit(0)
            result = conn.exec_driver_sql(probe.sql(dialect=self.dialect))
            description = result.cursor.description
            return tuple(self._column(d[0], self._type_name(conn, d[1]), True) for d in description)

    def fetch(self, query: exp.Expression | str, *, limit: int | None = None) -> QueryResult:
        """Run a read query (a sqlglot expression or SQL text of this dialect)."""
        sql = query.sql(dialect=self.dialect) if isinstance(query, exp.Expression) else query
        with self.connect() as conn:
            result = conn.exec_driver_sql(sql)
            names = list(result.keys())
            # Types first: some drivers drop the cursor description once rows are fetched.
            types = self._result_types(conn, result)
            rows = result.fetchmany(limit) if limit is not None else result.fetchall()
        columns = tuple(
            Column(name=n, type=column_type_from_sql(t, dialect=self.dialect), warehouse_type=t)
            for n, t in zip(names, types, strict=True)
        )
        return QueryResult(
            columns=columns, rows=tuple(dict(zip(names, r, strict=True)) for r in rows)
        )

    def scalar(self, query: exp.Expression | str) -> Any:
        sql = query.sql(dialect=self.dialect) if isinstance(query, exp.Expression) else query
        with self.connect() as conn:
            return conn.exec_driver_sql(sql).scalar()

    def _column(self, name: str, type_name: str, nullable: bool) -> Column:
        return Column(
            name=name,
            type=column_type_from_sql(type_name, dialect=self.dialect),
            warehouse_type=type_name,
            nullable=nullable,
        )

    def _type_name(self, conn: sa.Connection, type_code: Any) -> str:
        if self.dialect == "postgres":
            return str(
                conn.exec_driver_sql("SELECT format_type(%s, NULL)", (int(type_code),)).scalar()
            )
        return str(type_code)

    def _result_types(self, conn: sa.Connection, result: sa.CursorResult[Any]) -> list[str]:
        description = result.cursor.description if result.cursor is not None else None
        if not description:
            return [""] * len(result.keys())
        return [self._type_name(conn, d[1]) for d in description]


def parse_select(sql: str, *, dialect: str, field: str) -> exp.Query:
    """Parse user SQL that must be exactly one read-only query (SELECT / UNION / WITH)."""
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=dialect) if s is not None]
    except sqlglot.errors.ParseError as err:
        raise InvalidInputError(field, f"not valid SQL: {err.errors[0]['description']}") from err
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise InvalidInputError(field, "must be exactly one SELECT statement")
    return statements[0]


class _InstanceKeeper:
    """Keeps one DuckDB connection (hence the database instance) open until idle."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connection: Any = None
        self.timer: threading.Timer | None = None

    def hold(self, engine: sa.Engine, *, seconds: float) -> None:
        with self.lock:
            if self.connection is None:
                self.connection = engine.raw_connection()
            if self.timer is not None:
                self.timer.cancel()
            self.timer = threading.Timer(seconds, self.release)
            self.timer.daemon = True
            self.timer.start()

    def release(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None


@lru_cache(maxsize=16)
def _keeper(url: str) -> _InstanceKeeper:
    return _InstanceKeeper()


def _engine_message(err: sa.exc.DBAPIError) -> str:
    return str(err.orig).strip().splitlines()[0] if err.orig is not None else str(err)


@lru_cache(maxsize=16)
def _engine(url: str, read_only: bool) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "duckdb":
        engine = sa.create_engine(url, poolclass=NullPool, connect_args={"read_only": read_only})
        sa.event.listen(engine, "connect", _duckdb_quiet)
        return engine
    engine = sa.create_engine(url, pool_pre_ping=True, execution_options=LITERAL_SQL)
    if read_only and parsed.get_backend_name() == "postgresql":
        sa.event.listen(engine, "connect", _postgres_read_only)
    return engine


def _duckdb_quiet(dbapi_connection: Any, _record: Any) -> None:
    # A library must not draw progress bars on the host process's terminal.
    dbapi_connection.execute("SET enable_progress_bar = false")


def _postgres_read_only(dbapi_connection: Any, _record: Any) -> None:
    # Even model SQL typed by a user cannot write: the session itself refuses.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.close()
    dbapi_connection.commit()


def as_sequence(columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Columns in the catalog's JSON form: `{name, type, nullable}` with the warehouse type."""
    return [{"name": c.name, "type": c.warehouse_type, "nullable": c.nullable} for c in columns]
