"""Reading the warehouse: connect, discover columns, run compiled queries.

Any SQLAlchemy URL works; DuckDB and PostgreSQL are exercised in the tests. The API opens the
warehouse read-only and holds no connection between requests, because DuckDB lets a file be
either written by one process or read by many, never both at once.

Workspace SQL runs here, so every DuckDB connection enters the sandbox (warehouse/sandbox.py)
and PostgreSQL sessions are read-only. The queries of one handle (the API makes one per
request) share one `Deadline` of `sql_timeout_seconds`: the running query is interrupted when
it runs out, and PostgreSQL's statement_timeout is set to what is left. A failure is a
`WarehouseRejectedError` (400, naming the input the SQL came from) when the query is at
fault, a `WarehouseError` (502) when the engine is; engine messages lose the hints that name
the activation store (`engine_message`). Values reach JSON through `json_value`, bounded.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import math
import re
import reprlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from time import monotonic
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
STATEMENT_TIMEOUT_SQLSTATE = "57014"  # query_canceled; by statement_timeout, or an admin
_MESSAGE_CHARACTERS = 500


# What one value may carry into a JSON response (docs/api.md, "Limits"); beyond, it is cut
# and ends with TRUNCATED. DuckDB previews cut top-level values in SQL already (`preview`).
MAX_VALUE_CHARACTERS = 10_000  # of text; of bytes as base64 (7,500 bytes)
MAX_VALUE_BYTES = MAX_VALUE_CHARACTERS // 4 * 3
MAX_VALUE_ITEMS = 1_000  # of a list, or entries of a map or struct
MAX_VALUE_DEPTH = 32  # levels of lists, structs and maps; deeper ones become text
TRUNCATED = "…[truncated]"
# Deeper values as text: reprlib stops a few levels down and cuts long parts, so the text is
# short and its recursion is bounded.
_DEEP = reprlib.Repr()
_DEEP.maxlevel, _DEEP.maxstring, _DEEP.maxother = 4, 200, 200


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[Column, ...]
    rows: tuple[Mapping[str, Any], ...]

    def json_rows(self) -> list[dict[str, Any]]:
        """The rows with every value in a JSON form (see `json_value`)."""
        return [{name: json_value(v) for name, v in row.items()} for row in self.rows]


def json_value(value: Any) -> Any:
    """A warehouse value as JSON can carry it, without losing what it says, within bounds.

    Bytes (BLOB, bytea) become standard base64 text; Decimal its exact digits as text
    (`"1.50"`, `"NaN"`); NaN and the infinities of floats the text `"NaN"`, `"Infinity"`,
    `"-Infinity"` (JSON has no such numbers); dates and times ISO 8601 text; intervals
    ISO 8601 durations in days and seconds (`"P1DT7200S"`, `"-PT0.5S"`); UUIDs their text;
    lists, structs and maps the same, recursively (map keys as text); anything else `str()`.

    Bounds: text keeps MAX_VALUE_CHARACTERS characters, bytes MAX_VALUE_BYTES, lists and
    maps MAX_VALUE_ITEMS items; what is cut ends with TRUNCATED (a last item of a list, a
    last key of a map). Values nested deeper than MAX_VALUE_DEPTH become short text.
    """
    return _json(value, depth=0)


def _json(value: Any, *, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        encoded = base64.b64encode(data[:MAX_VALUE_BYTES]).decode("ascii")
        return encoded + TRUNCATED if len(data) > MAX_VALUE_BYTES else encoded
    if isinstance(value, (Decimal, uuid.UUID)):
        return _text(str(value))
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _iso_duration(value)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)) and depth >= MAX_VALUE_DEPTH:
        return _text(_DEEP.repr(value))
    if isinstance(value, Mapping):
        entries = {_key(k, depth): _json(v, depth=depth + 1)
                   for k, v in itertools.islice(value.items(), MAX_VALUE_ITEMS)}  # fmt: skip
        return entries | {TRUNCATED: None} if len(value) > MAX_VALUE_ITEMS else entries
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_json(v, depth=depth + 1) for v in itertools.islice(value, MAX_VALUE_ITEMS)]
        return [*items, TRUNCATED] if len(value) > MAX_VALUE_ITEMS else items
    return _text(str(value))


def _key(key: Any, depth: int) -> str:
    """A map key as JSON has them: text."""
    return _text(key) if isinstance(key, str) else str(_json(key, depth=depth + 1))


def _text(text: str) -> str:
    if len(text) <= MAX_VALUE_CHARACTERS:
        return text
    return text[:MAX_VALUE_CHARACTERS] + TRUNCATED


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

    `sql_timeout_seconds`: the time all queries of this handle (and of the handles
    `for_field` makes from it) may take together, from the first one on: the API makes a
    handle per request, so it is the request's budget. `field` is the input that `fetch`
    and `scalar` errors name.
    """

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = True,
        hold_seconds: float = 0.0,
        sql_timeout_seconds: float | None = None,
        field: str = "query",
        deadline: Deadline | None = None,
    ) -> None:
        self.url = sa.make_url(url)
        self.read_only = read_only
        backend = self.url.get_backend_name()
        self.dialect = _DIALECTS.get(backend, backend)
        self.hold_seconds = hold_seconds if self.dialect == "duckdb" and read_only else 0.0
        self.sql_timeout_seconds = sql_timeout_seconds
        self.field = field
        self.deadline = deadline or Deadline(sql_timeout_seconds)

    def for_field(self, field: str) -> Warehouse:
        """The same warehouse and deadline, whose refusals of `fetch` and `scalar` name
        `field`."""
        return Warehouse(
            self.url.render_as_string(hide_password=False),
            read_only=self.read_only,
            hold_seconds=self.hold_seconds,
            sql_timeout_seconds=self.sql_timeout_seconds,
            field=field,
            deadline=self.deadline,
        )

    def warm(self) -> None:
        """Start opening the held DuckDB instance in the background, when none is open: the
        caller goes on with its other work (a request's catalog reads and compiling) while
        DuckDB starts (~20 ms), instead of waiting for it at the first query."""
        if self.hold_seconds <= 0:
            return
        keeper = _keeper(self.url.render_as_string(hide_password=False))
        if keeper.connection is None:
            engine, seconds = self.engine, self.hold_seconds

            def open_held() -> None:
                # A failure here (a writer has the file) is the caller's own connect's to
                # report, with the request's field: nothing to say from this thread.
                with contextlib.suppress(Exception):
                    keeper.hold(engine, seconds=seconds)

            threading.Thread(target=open_held, name="warehouse-warm", daemon=True).start()

    @property
    def engine(self) -> sa.Engine:
        timeout_ms = round(self.sql_timeout_seconds * 1000) if self.sql_timeout_seconds else None
        return _engine(self.url.render_as_string(hide_password=False), self.read_only, timeout_ms)

    @contextmanager
    def connect(self, *, field: str | None = None) -> Iterator[sa.Connection]:
        """A connection within this handle's deadline; errors name `field` (default: this
        handle's) when the query is at fault (WarehouseRejectedError) and are WarehouseError
        when the engine is."""
        field = field or self.field
        deadline = self.deadline
        try:
            if deadline.expired:
                raise self._timed_out(field)
            if self.hold_seconds > 0:
                _keeper(self.url.render_as_string(hide_password=False)).hold(
                    self.engine, seconds=self.hold_seconds
                )
            with self.engine.connect() as conn:
                if self.dialect == "postgres":
                    set_statement_timeout(conn, deadline.remaining())
                with deadline.interrupting(conn.connection.driver_connection):
                    yield conn
            # Rows are converted after the engine answered, where no interrupt reaches.
            if deadline.expired:
                raise self._timed_out(field)
        except sa.exc.DBAPIError as err:
            if deadline.fired:
                raise self._timed_out(field) from err
            raise self._classify(err, field) from err
        except UnicodeEncodeError as err:  # the driver encoding the SQL text
            raise WarehouseRejectedError(
                field, f"text that cannot be encoded ({err.reason})"
            ) from err
        except RecursionError as err:  # a driver decoding a value (psycopg's JSON decoder)
            raise WarehouseRejectedError(
                field, "a value nested too deeply to read (JSON nested thousands of levels?)"
            ) from err

    def _classify(self, err: sa.exc.DBAPIError, field: str) -> WarehouseError:
        """The query's fault (400, naming `field`) or the warehouse's (502)."""
        message = engine_message(err)
        state = str(getattr(err.orig, "sqlstate", None) or "")
        if state == STATEMENT_TIMEOUT_SQLSTATE and "statement timeout" in message:
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
            "(COMPOSABLE_SQL_TIMEOUT_SECONDS, for all queries of a request together)",
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

    def preview(self, query: exp.Expression) -> QueryResult:
        """Run a preview (its LIMIT bounds the rows) whose values go to JSON.

        On DuckDB each top-level text, blob, list and map is first cut in SQL to one item
        more than `json_value` keeps: turning a 50-million-item list into Python objects
        takes half a minute, and no interrupt reaches that conversion.
        """
        if self.dialect != "duckdb":
            return self.fetch(query)
        with self.connect() as conn:
            described = conn.exec_driver_sql(f"DESCRIBE {query.sql(dialect='duckdb')}").all()
        # Positional names: a query may return two columns of one name.
        positions = [exp.to_identifier(f"c{i}") for i in range(len(described))]
        bounded = exp.select(
            *(
                exp.alias_(_bounded(exp.column(p), type_name), name, quoted=True)
                for p, (name, type_name, *_rest) in zip(positions, described, strict=True)
            )
        ).from_(
            exp.Subquery(
                this=query, alias=exp.TableAlias(this=exp.to_identifier("q"), columns=positions)
            )
        )
        result = self.fetch(bounded)
        # The columns as the query has them (a cut JSON value is VARCHAR, a cut ARRAY a LIST).
        columns = tuple(
            Column(name=n, type=column_type_from_sql(t, dialect="duckdb"), warehouse_type=t)
            for n, t, *_rest in described
        )
        return QueryResult(columns=columns, rows=result.rows)

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


def _bounded(value: exp.Expression, type_name: str) -> exp.Expression:
    """A DuckDB value of `type_name` cut to one item more than `json_value` keeps (so it
    still sees that the value was longer); other types as they are."""
    kind = type_name.upper()
    if kind.startswith("MAP("):
        entries = exp.Anonymous(this="map_entries", expressions=[value])
        return exp.Anonymous(
            this="map_from_entries", expressions=[_slice(entries, MAX_VALUE_ITEMS)]
        )
    if kind.endswith("]"):  # a LIST (T[]) or an ARRAY (T[n])
        return _slice(value, MAX_VALUE_ITEMS)
    if kind in ("VARCHAR", "JSON"):
        return _slice(value, MAX_VALUE_CHARACTERS)
    if kind == "BLOB":
        return _slice(value, MAX_VALUE_BYTES)
    return value


def _slice(value: exp.Expression, keep: int) -> exp.Expression:
    bounds = [exp.Literal.number(1), exp.Literal.number(keep + 1)]
    return exp.Anonymous(this="array_slice", expressions=[value, *bounds])


class Deadline:
    """A time budget shared by a series of queries, started by the first one. While a query
    runs on a connection, a timer interrupts it when the budget runs out (DuckDB has no
    statement_timeout; on PostgreSQL it cancels a query that its statement_timeout, set to
    what is left, has not yet)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = False  # the timer interrupted a query
        self.ends: float | None = None

    def remaining(self) -> float | None:
        """Seconds left (None: no deadline); the first call starts the budget."""
        if not self.seconds:
            return None
        if self.ends is None:
            self.ends = monotonic() + self.seconds
        return max(0.0, self.ends - monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() == 0.0

    @contextmanager
    def interrupting(self, driver_connection: Any) -> Iterator[None]:
        """Interrupt what `driver_connection` (DuckDB or psycopg) runs once the time is up."""
        remaining = self.remaining()
        if remaining is None:
            yield
            return
        interrupt = getattr(driver_connection, "interrupt", None) or driver_connection.cancel

        def fire() -> None:
            self.fired = True
            interrupt()

        timer = threading.Timer(remaining, fire)
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
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.connection is not None:
                self.connection.close()
                self.connection = None


_KEEPERS: dict[str, _InstanceKeeper] = {}
_KEEPERS_LOCK = threading.Lock()


def _keeper(url: str) -> _InstanceKeeper:
    with _KEEPERS_LOCK:
        return _KEEPERS.setdefault(url, _InstanceKeeper())


def release_held_instances() -> None:
    """Close the connections `hold_seconds` keeps open, now: a process that stops serving
    (the API's shutdown) must not keep the warehouse file's instance alive behind it, or
    the next opener in the process with other settings is refused by DuckDB."""
    with _KEEPERS_LOCK:
        keepers = list(_KEEPERS.values())
    for keeper in keepers:
        keeper.release()


def engine_message(err: sa.exc.DBAPIError) -> str:
    """The engine's first line, bounded, encodable (it may quote the bad input), and without
    the hints that name the activation store (`scrub_engine_text`)."""
    text = str(err.orig).strip() if err.orig is not None else str(err)
    first = (scrub_engine_text(text).splitlines() or [type(err).__name__])[0]
    if len(first) > _MESSAGE_CHARACTERS:
        first = first[: _MESSAGE_CHARACTERS - 1] + "…"
    return first.encode("utf-8", "backslashreplace").decode("utf-8")


# The activation store's names, as engines quote them: its catalog (`activation.`) and schema.
_STORE_NAMES = re.compile(r'[\w"]*(?:\bcomposable_activation\b|\bactivation"?\.)[\w".]*', re.I)
# Where an engine's suggestions start: DuckDB's "Did you mean ...?" and "Candidate tables:",
# PostgreSQL's "HINT:  Perhaps you meant ...".
_HINTS = re.compile(r"did you mean|candidate \w+:|hint:|perhaps you meant", re.I)
_STORE_NAME_MASK = "<reserved>"


def scrub_engine_text(text: str) -> str:
    """An engine's error text that names no part of the activation store.

    DuckDB suggests near names from every attached catalog ("Did you mean
    "activation.composable_activation.members_..."?"), which tells a workspace what other
    workspaces' tables are called: a suggestion naming the store is dropped, and any other
    mention of it is masked.
    """
    lines = []
    for line in text.splitlines():
        if _STORE_NAMES.search(line):
            hint = _HINTS.search(line)
            line = _STORE_NAMES.sub(_STORE_NAME_MASK, line[: hint.start()] if hint else line)
            if not line.strip():
                continue
        lines.append(line.rstrip())
    return "\n".join(lines)


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


def set_statement_timeout(conn: sa.Connection, seconds: float | None) -> None:
    """Let the statements of `conn`'s transaction (PostgreSQL) run `seconds` each at most:
    SET LOCAL, by a bound value (SET itself takes no parameters). None: leave it."""
    if seconds is not None:
        milliseconds = max(1, math.ceil(seconds * 1000))  # 0 would mean no timeout at all
        conn.exec_driver_sql(
            "SELECT set_config('statement_timeout', %s, true)", (f"{milliseconds}ms",)
        )


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
