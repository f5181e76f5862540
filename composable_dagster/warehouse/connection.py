"""Reading the warehouse: connect, discover columns, run compiled queries.

Any SQLAlchemy URL works; DuckDB and PostgreSQL are exercised in the tests. The API opens the
warehouse read-only and holds no connection between requests, because DuckDB lets a file be
either written by one process or read by many, never both at once.

Workspace SQL runs here, so every DuckDB connection enters the sandbox (warehouse/sandbox.py)
and a read-only PostgreSQL session refuses writes and cancels statements after
`sql_timeout_seconds`. A failure is a `WarehouseRejectedError` (400, naming the input the
SQL came from) when the query is at fault, a `WarehouseError` (502) when the engine is.
"""

from __future__ import annotations

import base64
import math
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from sqlglot import exp

from composable_dagster.errors import WarehouseError, WarehouseRejectedError
from composable_dagster.filters.schema import Column
from composable_dagster.filters.sql_types import column_type_from_sql
from composable_dagster.filters.user_sql import parse_select
from composable_dagster.warehouse.sandbox import enter_sandbox

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


# PEP 249 classes of errors a query causes (SQLAlchemy wraps a driver's exception in the
# class of the same name): unknown names, bad casts, values out of range, bad syntax.
_QUERY_FAULTS = (
    sa.exc.ProgrammingError, sa.exc.DataError, sa.exc.IntegrityError, sa.exc.NotSupportedError
)  # fmt: skip
# Driver exceptions outside those classes that the query causes too: DuckDB's sandbox
# refusal is a bare DatabaseError.
_QUERY_FAULT_CLASSES = frozenset({"PermissionException"})
# PostgreSQL SQLSTATEs, or their class (two characters), of errors the query causes: data
# (22), integrity (23), syntax or access (42), not supported (0A), a write in a read-only
# transaction (25006), a statement too complex (54). Lost connections, out of memory or
# disk (08, 53, 57P) stay warehouse failures.
_QUERY_FAULT_SQLSTATES = frozenset({"22", "23", "42", "0A", "25006", "54"})
_STATEMENT_TIMEOUT_SQLSTATE = "57014"  # query_canceled; by statement_timeout, or an admin
_MESSAGE_CHARACTERS = 500


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[Column, ...]
    rows: tuple[Mapping[str, Any], ...]

    def json_rows(self) -> list[dict[str, Any]]:
        """The rows with every value in a JSON form (see `json_value`)."""
        return [{name: json_value(v) for name, v in row.items()} for row in self.rows]


def json_value(value: Any) -> Any:
    """A warehouse value as JSON can carry it, without losing what it says.

    Bytes (BLOB, bytea) become standard base64 text; Decimal its exact digits as text
    (`"1.50"`, `"NaN"`); NaN and the infinities of floats the text `"NaN"`, `"Infinity"`,
    `"-Infinity"` (JSON has no such numbers); dates and times ISO 8601 text; intervals
    ISO 8601 durations in days and seconds (`"P1DT7200S"`, `"-PT0.5S"`); UUIDs their text;
    lists, structs and maps the same, recursively (map keys as text); anything else `str()`.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _iso_duration(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(json_value(k)): json_value(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_value(v) for v in value]
    return str(value)


def _iso_duration(delta: timedelta) -> str:
    sign, delta = ("-", -delta) if delta < timedelta(0) else ("", delta)
    fraction = f".{delta.microseconds:06d}".rstrip("0") if delta.microseconds else ""
    days = f"{delta.days}D" if delta.days else ""
    clock = f"T{delta.seconds}{fraction}S" if delta.seconds or fraction or not days else ""
    return f"{sign}P{days}{clock}"


class Warehouse:
    """A handle on one warehouse URL. Cheap to create; connections are opened per use.

    `hold_seconds` (DuckDB, read-only): starting a DuckDB instance costs ~25 ms, more than
    most estimate queries, so one connection is kept open while requests keep coming and
    closed after this much idle time, releasing the file for writers (dbt) again.

    `sql_timeout_seconds` (PostgreSQL): the sessions' statement_timeout. `field` is the
    input that `fetch` and `scalar` errors name (`for_field` gives a handle naming another).
    """

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = True,
        hold_seconds: float = 0.0,
        sql_timeout_seconds: float | None = None,
        field: str = "query",
    ) -> None:
        self.url = sa.make_url(url)
        self.read_only = read_only
        backend = self.url.get_backend_name()
        self.dialect = _DIALECTS.get(backend, backend)
        self.hold_seconds = hold_seconds if self.dialect == "duckdb" and read_only else 0.0
        self.sql_timeout_seconds = sql_timeout_seconds
        self.field = field

    def for_field(self, field: str) -> Warehouse:
        """The same warehouse, whose refusals of `fetch` and `scalar` name `field`."""
        return Warehouse(
            self.url.render_as_string(hide_password=False),
            read_only=self.read_only,
            hold_seconds=self.hold_seconds,
            sql_timeout_seconds=self.sql_timeout_seconds,
            field=field,
        )

    @property
    def engine(self) -> sa.Engine:
        timeout_ms = round(self.sql_timeout_seconds * 1000) if self.sql_timeout_seconds else None
        return _engine(self.url.render_as_string(hide_password=False), self.read_only, timeout_ms)

    @contextmanager
    def connect(self, *, field: str | None = None) -> Iterator[sa.Connection]:
        """A connection; errors name `field` (default: this handle's) when the query is at
        fault (WarehouseRejectedError) and are WarehouseError when the engine is."""
        # PostgreSQL cancels statements itself (statement_timeout); DuckDB has no such
        # setting, so its connection is interrupted from a timer.
        deadline = _Deadline(self.sql_timeout_seconds if self.dialect == "duckdb" else None)
        try:
            if self.hold_seconds > 0:
                _keeper(self.url.render_as_string(hide_password=False)).hold(
                    self.engine, seconds=self.hold_seconds
                )
            with self.engine.connect() as conn, deadline.interrupting(conn):
                yield conn
        except sa.exc.DBAPIError as err:
            if deadline.fired:
                raise self._timed_out(field or self.field) from err
            raise self._classify(err, field or self.field) from err
        except UnicodeEncodeError as err:  # the driver encoding the SQL text
            raise WarehouseRejectedError(
                field or self.field, f"text that cannot be encoded ({err.reason})"
            ) from err

    def _classify(self, err: sa.exc.DBAPIError, field: str) -> WarehouseError:
        """The query's fault (400, naming `field`) or the warehouse's (502)."""
        message = _engine_message(err)
        state = str(getattr(err.orig, "sqlstate", None) or "")
        if state == _STATEMENT_TIMEOUT_SQLSTATE and "statement timeout" in message:
            return self._timed_out(field)
        driver_classes = {c.__name__ for c in type(err.orig).__mro__}
        if (
            isinstance(err, _QUERY_FAULTS)
            or driver_classes & _QUERY_FAULT_CLASSES
            or state in _QUERY_FAULT_SQLSTATES
            or state[:2] in _QUERY_FAULT_SQLSTATES
        ):
            return WarehouseRejectedError(field, message)
        return WarehouseError(message)

    def _timed_out(self, field: str) -> WarehouseRejectedError:
        return WarehouseRejectedError(
            field,
            f"the query took longer than {self.sql_timeout_seconds:g} s and was cancelled "
            "(COMPOSABLE_SQL_TIMEOUT_SECONDS)",
        )

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
        with self.connect(field="source_table") as conn:
            rows = conn.execute(query).all()
        return tuple(self._column(name, type_, nullable == "YES") for name, type_, nullable in rows)

    def describe_query(self, sql: str) -> tuple[Column, ...]:
        """Columns a SELECT returns, without fetching its rows (workspace SQL: checked by
        the parser of filters/user_sql.py, FilterError when refused)."""
        select = parse_select(sql, dialect=self.dialect, field="sql_query")
        with self.connect(field="sql_query") as conn:
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


class _Deadline:
    """Interrupts a DuckDB connection's running query once `seconds` have passed."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = False

    @contextmanager
    def interrupting(self, conn: sa.Connection) -> Iterator[None]:
        if not self.seconds:
            yield
            return
        driver = conn.connection.driver_connection

        def interrupt() -> None:
            self.fired = True
            driver.interrupt()

        timer = threading.Timer(self.seconds, interrupt)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


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
    """The engine's first line, bounded, and encodable (it may quote the bad input)."""
    text = str(err.orig).strip() if err.orig is not None else str(err)
    first = (text.splitlines() or [type(err).__name__])[0]
    if len(first) > _MESSAGE_CHARACTERS:
        first = first[: _MESSAGE_CHARACTERS - 1] + "…"
    return first.encode("utf-8", "backslashreplace").decode("utf-8")


@lru_cache(maxsize=16)
def _engine(url: str, read_only: bool, timeout_ms: int | None = None) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "duckdb":
        engine = sa.create_engine(url, poolclass=NullPool, connect_args={"read_only": read_only})
        sa.event.listen(engine, "connect", lambda conn, _record: enter_sandbox(conn))
        return engine
    engine = sa.create_engine(url, pool_pre_ping=True, execution_options=LITERAL_SQL)
    if parsed.get_backend_name() == "postgresql" and (read_only or timeout_ms):

        def _session(dbapi_connection: Any, _record: Any) -> None:
            _postgres_session(dbapi_connection, read_only=read_only, timeout_ms=timeout_ms)

        sa.event.listen(engine, "connect", _session)
    return engine


def _postgres_session(dbapi_connection: Any, *, read_only: bool, timeout_ms: int | None) -> None:
    cursor = dbapi_connection.cursor()
    if read_only:
        # Even model SQL typed by a user cannot write: the session itself refuses.
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    if timeout_ms:
        # A bound value: SET itself takes no parameters.
        cursor.execute("SELECT set_config('statement_timeout', %s, false)", (f"{timeout_ms}ms",))
    cursor.close()
    dbapi_connection.commit()


def as_sequence(columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Columns in the catalog's JSON form: `{name, type, nullable}` with the warehouse type."""
    return [{"name": c.name, "type": c.warehouse_type, "nullable": c.nullable} for c in columns]
