"""The activation store: audience memberships (and, later, sync snapshots) beside the warehouse.

- DuckDB warehouse: a separate DuckDB file, `activation.duckdb` in the state directory,
  that attaches the warehouse read-only (DuckDB allows one writer process per file, and the
  warehouse belongs to dbt). Writers of this file are serialized with a file lock, so runs
  of different audiences in parallel processes queue instead of failing.
- Any other warehouse: a schema (`composable_activation`) in the warehouse itself, so the
  set work runs where the data is.

Heavy set work (diffs of memberships) is SQL in the engine; nothing is loaded into Python.

Run workers execute workspace SQL here (the materialization's CREATE TABLE AS, the sync
plan's reads of the parent model), on DuckDB while holding the writer lock that every
workspace's runs share: each statement of the store gets `run_sql_timeout_seconds`
(PostgreSQL's statement_timeout; on DuckDB an interrupt from a timer), so one workspace's
query delays the others' by that much at most. An engine error leaves `transaction()` as a
`WarehouseError` whose message names no part of the store and, for a cancelled statement,
names the timeout.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from sqlglot import exp

from composable_dagster.errors import WarehouseError
from composable_dagster.filters import PARENT_ALIAS
from composable_dagster.filters.compile import count_star
from composable_dagster.warehouse.connection import (
    LITERAL_SQL,
    STATEMENT_TIMEOUT_SQLSTATE,
    Deadline,
    Warehouse,
    engine_message,
    set_statement_timeout,
)
from composable_dagster.warehouse.fingerprints import (
    change_kind,
    differs,
    key_hash,
    row_hash,
    single_row_hash,
)
from composable_dagster.warehouse.sandbox import enter_sandbox

ACTIVATION_CATALOG = "activation"  # DuckDB names an attached file's catalog after its stem
ACTIVATION_SCHEMA = "composable_activation"
WAREHOUSE_ALIAS = "warehouse"
MEMBERSHIP_STATS = "membership_stats"  # per audience: version, log reach, keyless rows
# Per audience: the member count of the last materialization whose checks passed (or were
# overridden), what the member-drop check compares with. Its own table, written only after
# the checks, so `replace_members` never touches it.
MEMBERSHIP_BASE = "membership_base"
# Materializations the membership log keeps: a sync that fell further behind diffs in full.
MEMBERSHIP_LOG_VERSIONS = 30
_STATEMENT_TIMER = "composable_statement_timer"  # the running statement's, in Connection.info


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """What one materialization of an audience did to its membership."""

    member_count: int
    previous_count: int | None  # None: the first materialization
    added: int | None
    removed: int | None
    rows_without_key: int = 0  # rows that matched but have a NULL key: never members
    # The member count of the last materialization whose checks passed (`record_base`);
    # None when none was recorded (a store older than the record, or no run passed yet).
    base_count: int | None = None


@dataclass(frozen=True, slots=True)
class MembershipStats:
    """An audience's membership version (one per materialization) and its log's reach: a
    sync that caught up with version V >= log_from finds every key changed since in the
    log."""

    version: int
    log_from: int
    rows_without_key: int


class ActivationStore:
    """Where memberships live; `transaction()` is the only way in.

    `run_sql_timeout_seconds`: the longest one statement may take (None: no limit); the code
    location passes COMPOSABLE_RUN_SQL_TIMEOUT_SECONDS.
    """

    def __init__(
        self,
        *,
        warehouse_url: str,
        home: Path,
        memory_limit: str | None = None,
        run_sql_timeout_seconds: float | None = None,
    ) -> None:
        self.warehouse = Warehouse(warehouse_url, read_only=True)
        self.dialect = self.warehouse.dialect
        self.home = home
        # DuckDB caches up to 80% of RAM by default; a limit makes it spill to disk instead.
        self.memory_limit = memory_limit
        self.run_sql_timeout_seconds = run_sql_timeout_seconds or None
        self._session: dict[int, sa.Connection] = {}  # thread -> its held connection
        if self.dialect == "duckdb":
            self.path = home / f"{ACTIVATION_CATALOG}.duckdb"
            self.url = f"duckdb:///{self.path}"
        else:
            self.path = None
            self.url = warehouse_url

    @property
    def spool_dir(self) -> Path:
        """Where a sync run keeps the rows it is delivering, out of the store's lock
        (sync/engine.py): unlinked files, gone when the run ends or dies."""
        return self.home / "spool"

    @cached_property
    def engine(self) -> sa.Engine:
        if self.path is None:
            return sa.create_engine(self.url, pool_pre_ping=True, execution_options=LITERAL_SQL)
        # Instance settings go in the connect config: connections to one file in a process
        # share a DuckDB instance, which refuses a later `SET temp_directory` once it spilled.
        config = {}
        if self.memory_limit:
            config |= {
                "memory_limit": self.memory_limit,
                "temp_directory": str(self.home / "spill"),
            }
        engine = sa.create_engine(self.url, poolclass=NullPool, connect_args={"config": config})
        attach = exp.Literal.string(str(self.warehouse.url.database)).sql(dialect="duckdb")

        def _attach_warehouse(dbapi_connection: Any) -> None:
            # The compiled SQL names warehouse tables as schema.table: make the read-only
            # warehouse the default catalog, and qualify our own tables explicitly.
            dbapi_connection.execute(
                f"ATTACH IF NOT EXISTS {attach} AS {WAREHOUSE_ALIAS} (READ_ONLY)"
            )
            dbapi_connection.execute(f"USE {WAREHOUSE_ALIAS}")

        def _sandboxed(dbapi_connection: Any, _record: Any) -> None:
            # Run workers execute audience SQL (model SQL, `sql` traits) here: the warehouse
            # is attached first, while the sandbox still lets the instance open files.
            enter_sandbox(dbapi_connection, before_lock=_attach_warehouse)

        sa.event.listen(engine, "connect", _sandboxed)
        if self.run_sql_timeout_seconds:
            _time_statements(engine, self.run_sql_timeout_seconds)
        return engine

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One transaction on the store; on DuckDB, also the store's single-writer lock.

        Raises:
            WarehouseError: A statement failed or took longer than the run timeout.
        """
        held = self._session.get(threading.get_ident())
        try:
            if held is not None:
                with held.begin():
                    yield held
                return
            with self._writer_lock(), self.engine.begin() as conn:
                if self.path is None:
                    set_statement_timeout(conn, self.run_sql_timeout_seconds)
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {self._schema_sql()}")
                yield conn
        except sa.exc.DBAPIError as err:
            raise self._failure(err) from err

    @contextmanager
    def session(self) -> Iterator[None]:
        """Run this thread's transactions until the block ends on one DuckDB connection,
        under one hold of the writer lock: each transaction otherwise opens the store file
        (and its buffers start cold: a 10M-member sync read its tables from disk again in
        each of its ~20 transactions) and checkpoints it on closing. Only around store work:
        the lock is held all along, so never around a destination call. A no-op on
        PostgreSQL (pooled connections) and inside another session."""
        thread = threading.get_ident()
        if self.path is None or thread in self._session:
            yield
            return
        try:
            with self._writer_lock(), self.engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {self._schema_sql()}")
                conn.commit()
                self._session[thread] = conn
                try:
                    yield
                finally:
                    del self._session[thread]
        except sa.exc.DBAPIError as err:
            raise self._failure(err) from err

    def _failure(self, err: sa.exc.DBAPIError) -> WarehouseError:
        """A store statement's failure, as a run reports it."""
        state = str(getattr(err.orig, "sqlstate", None) or "")
        interrupted = type(err.orig).__name__ == "InterruptException"  # only our timer does
        if interrupted or (state == STATEMENT_TIMEOUT_SQLSTATE and "timeout" in str(err.orig)):
            return WarehouseError(
                f"a statement of the run took longer than {self.run_sql_timeout_seconds:g} s "
                "and was cancelled (COMPOSABLE_RUN_SQL_TIMEOUT_SECONDS)"
            )
        return WarehouseError(engine_message(err))

    def table(self, name: str) -> exp.Table:
        """A table of ours, fully qualified for this engine."""
        return exp.table_(
            name,
            db=ACTIVATION_SCHEMA,
            catalog=ACTIVATION_CATALOG if self.path is not None else None,
            quoted=True,
        )

    def members_table(self, audience_id: str) -> exp.Table:
        return self.table(f"members_{audience_id.replace('-', '')}")

    def membership_log_table(self, audience_id: str) -> exp.Table:
        """Per materialization (version), the keys whose membership or row hashes changed."""
        return self.table(f"membership_log_{audience_id.replace('-', '')}")

    def replace_members(
        self,
        *,
        audience_id: str,
        members: exp.Select,
        row_hashes: Mapping[str, Sequence[str]] | None = None,
    ) -> MembershipChange:
        """Store the result of `members` as the audience's membership and report the change
        against the previous one, atomically.

        `members` selects `entity_key` from the parent model under the alias
        `PARENT_ALIAS` (what `compile_members` produces). Rows with a NULL key are left out
        and counted (`rows_without_key`, kept for the audience's syncs to report). The
        stored table has one row per key: `entity_key`, `key_hash`, `source_rows` (matching
        parent rows; more than one is a duplicated key) and, for each `row_hashes` item, a
        column of that name holding the row hash of those parent columns (NULL for a
        duplicated key). Syncs whose mapping has such a column diff against it without
        reading the parent model again.

        Each materialization is a new version; the keys it added, removed or re-hashed go
        to the membership log, so a sync that last caught up with version V can diff only
        the keys logged since (`MembershipStats.log_from` tells how far back that works).

        The change carries the audience's base (`record_base`) as it was; storing a
        membership never moves it.
        """
        current = self.members_table(audience_id)
        staging = self.table(f"staging_{audience_id.replace('-', '')}")
        # Statement templates around identifiers that sqlglot renders (ours, from UUIDs);
        # the only user-derived text is `members`, itself a sqlglot expression.
        current_sql, staging_sql = self._sql(current), self._sql(staging)
        new_name = self._sql(exp.to_identifier(current.name, quoted=True))
        hash_columns = sorted(row_hashes or {})
        with self.transaction() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staging_sql}")
            membership = self._membership(members, row_hashes or {})
            conn.exec_driver_sql(f"CREATE TABLE {staging_sql} AS {self._sql(membership)}")
            without_key = int(
                conn.exec_driver_sql(
                    f"SELECT coalesce(sum(source_rows), 0) FROM {staging_sql} "
                    "WHERE entity_key IS NULL"
                ).scalar_one()
            )
            if without_key:
                conn.exec_driver_sql(f"DELETE FROM {staging_sql} WHERE entity_key IS NULL")
            member_count = self._count(conn, staging)
            self._ensure_log(conn, audience_id, like=staging)
            previous = self.membership_stats(conn, audience_id)
            version = previous.version + 1 if previous else 1
            base = self._base(conn, audience_id)
            change = MembershipChange(member_count, None, None, None, without_key, base)
            log_from = version  # the log covers nothing before this version, unless...
            if self.exists(conn, current):
                previous_count = self._count(conn, current)
                if previous is not None and self._row_hash_columns(conn, current) == hash_columns:
                    # ...the previous version had the same hashes: log what changed since.
                    added, removed = self._log_changes(
                        conn, audience_id, version, new=staging, old=current, columns=hash_columns
                    )
                    log_from = max(previous.log_from, version - MEMBERSHIP_LOG_VERSIONS)
                else:
                    added, removed = self._key_differences(conn, new=staging, old=current)
                change = MembershipChange(
                    member_count, previous_count, added, removed, without_key, base
                )
                conn.exec_driver_sql(f"DROP TABLE {current_sql}")
            conn.exec_driver_sql(f"ALTER TABLE {staging_sql} RENAME TO {new_name}")
            self._set_stats(conn, audience_id, MembershipStats(version, log_from, without_key))
        return change

    def membership_stats(self, conn: sa.Connection, audience_id: str) -> MembershipStats | None:
        """The audience's current membership version and what its materialization counted."""
        if not self.exists(conn, self.table(MEMBERSHIP_STATS)):
            return None
        row = conn.execute(
            sa.text(
                "SELECT version, log_from, rows_without_key FROM "
                f"{self._sql(self.table(MEMBERSHIP_STATS))} WHERE audience_id = :a"
            ),
            {"a": audience_id},
        ).first()
        return MembershipStats(*(int(v) for v in row)) if row is not None else None

    def _set_stats(self, conn: sa.Connection, audience_id: str, stats: MembershipStats) -> None:
        values = {"version": stats.version, "log_from": stats.log_from,
                  "rows_without_key": stats.rows_without_key}  # fmt: skip
        self._put_audience_row(conn, self.table(MEMBERSHIP_STATS), audience_id, values)

    def record_base(self, *, audience_id: str, member_count: int) -> None:
        """Make `member_count` the audience's base: the count its next member-drop check
        compares with. Called once the checks of a materialization passed (or were
        overridden), in a transaction of its own: a run that dies before it leaves the
        previous base, so the next run is judged against that one."""
        with self.transaction() as conn:
            self._put_audience_row(
                conn, self.table(MEMBERSHIP_BASE), audience_id, {"member_count": member_count}
            )

    def _put_audience_row(
        self, conn: sa.Connection, table: exp.Table, audience_id: str, values: Mapping[str, int]
    ) -> None:
        """Replace the audience's row of a shared table of ours, made on first use with a
        BIGINT column per key of `values` (our column names, never input)."""
        table_sql = self._sql(table)
        columns = ", ".join(f"{name} BIGINT" for name in values)
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {table_sql} (audience_id VARCHAR PRIMARY KEY, {columns})"
        )
        conn.execute(
            sa.text(f"DELETE FROM {table_sql} WHERE audience_id = :audience_id"),
            {"audience_id": audience_id},
        )
        names = ["audience_id", *values]
        conn.execute(
            sa.text(
                f"INSERT INTO {table_sql} ({', '.join(names)}) "
                f"VALUES ({', '.join(':' + n for n in names)})"
            ),
            {"audience_id": audience_id, **values},
        )

    def _base(self, conn: sa.Connection, audience_id: str) -> int | None:
        table = self.table(MEMBERSHIP_BASE)
        if not self.exists(conn, table):
            return None
        count = conn.execute(
            sa.text(f"SELECT member_count FROM {self._sql(table)} WHERE audience_id = :a"),
            {"a": audience_id},
        ).scalar_one_or_none()
        return int(count) if count is not None else None

    def _ensure_log(self, conn: sa.Connection, audience_id: str, *, like: exp.Table) -> None:
        """The audience's membership log, with the key hash typed as in `like`."""
        log = self.membership_log_table(audience_id)
        if self.exists(conn, log):
            return
        columns = exp.select(
            exp.alias_(exp.cast(exp.Literal.number(0), "BIGINT"), "version"),
            "key_hash",
            exp.alias_(exp.Literal.string("add"), "change"),
        )
        empty = columns.from_(like.copy()).where(exp.false())
        conn.exec_driver_sql(f"CREATE TABLE {self._sql(log)} AS {self._sql(empty)}")

    def _log_changes(
        self,
        conn: sa.Connection,
        audience_id: str,
        version: int,
        *,
        new: exp.Table,
        old: exp.Table,
        columns: Sequence[str],
    ) -> tuple[int, int]:
        """Log the keys `new` adds, removes or re-hashes against `old` as `version`, and
        drop versions the log no longer keeps; (added, removed)."""
        log = self.membership_log_table(audience_id)
        log_sql = self._sql(log)
        nk, ok = exp.column("key_hash", "n"), exp.column("key_hash", "o")
        changed = (
            exp.select(
                exp.alias_(exp.Literal.number(version), "version"),
                exp.alias_(exp.Coalesce(this=nk.copy(), expressions=[ok.copy()]), "key_hash"),
                exp.alias_(change_kind(nk, ok), "change"),
            )
            .from_(new.copy().as_("n"))
            .join(old.copy().as_("o"), on=nk.copy().eq(ok.copy()), join_type="full outer")
            .where(differs(nk, ok, hashes=columns))
        )
        conn.exec_driver_sql(f"INSERT INTO {log_sql} {self._sql(changed)}")
        conn.execute(
            sa.text(f"DELETE FROM {log_sql} WHERE version <= :v"),
            {"v": version - MEMBERSHIP_LOG_VERSIONS},
        )
        counts = dict(
            conn.execute(
                sa.text(f"SELECT change, count(*) FROM {log_sql} WHERE version = :v GROUP BY 1"),
                {"v": version},
            ).all()
        )
        return int(counts.get("add", 0)), int(counts.get("remove", 0))

    def _row_hash_columns(self, conn: sa.Connection, table: exp.Table) -> list[str] | None:
        """The row-hash columns of a membership table; None for a layout without key hashes."""
        names = self.columns(conn, table)
        if "key_hash" not in names:
            return None
        return sorted(n for n in names if n.startswith("row_hash_"))

    def _membership(
        self, members: exp.Select, row_hashes: Mapping[str, Sequence[str]]
    ) -> exp.Select:
        """One row per key (a key duplicated in the parent model must count once)."""
        rows = members.copy()
        for name, columns in row_hashes.items():
            values = [exp.column(c, PARENT_ALIAS, quoted=True) for c in columns]
            rows = rows.select(exp.alias_(row_hash(values, self.dialect), name), append=True)
        key = exp.column("entity_key")
        hashes = [exp.alias_(single_row_hash(exp.column(name)), name) for name in row_hashes]
        return (
            exp.select(
                key.copy(),
                exp.alias_(key_hash(key.copy(), self.dialect), "key_hash"),
                exp.alias_(count_star(), "source_rows"),
                *hashes,
            )
            .from_(rows.subquery("q"))
            .group_by(key.copy())
        )

    def _key_differences(
        self, conn: sa.Connection, *, new: exp.Table, old: exp.Table
    ) -> tuple[int, int]:
        """(keys only in `new`, keys only in `old`), in one full outer join."""
        nk, ok = exp.column("entity_key", "n"), exp.column("entity_key", "o")
        query = (
            exp.select(
                exp.Sum(this=exp.Case(ifs=[exp.If(this=ok.copy().is_(exp.null()), true="1")],
                                      default="0")),
                exp.Sum(this=exp.Case(ifs=[exp.If(this=nk.copy().is_(exp.null()), true="1")],
                                      default="0")),
            )
            .from_(new.copy().as_("n"))
            .join(old.copy().as_("o"), on=nk.copy().eq(ok.copy()), join_type="full outer")
        )  # fmt: skip
        added, removed = conn.exec_driver_sql(self._sql(query)).one()
        return int(added or 0), int(removed or 0)

    def snapshot_table(self, sync_id: str) -> exp.Table:
        """Keys the destination confirmed on the sync's last delivery."""
        return self.table(f"snapshot_{sync_id.replace('-', '')}")

    def plan_counts(self, *, sync_id: str, audience_id: str) -> tuple[int, int]:
        """(adds, removes): members the sync's snapshot lacks, and snapshot keys that left."""
        members, snapshot = self.members_table(audience_id), self.snapshot_table(sync_id)
        with self.transaction() as conn:
            if not self.exists(conn, members):
                raise LookupError(f"audience {audience_id} has not been materialized yet")
            if not self.exists(conn, snapshot):
                return self._count(conn, members), 0
            return (
                self._count_missing(conn, source=members, target=snapshot),
                self._count_missing(conn, source=snapshot, target=members),
            )

    def member_count(self, audience_id: str) -> int | None:
        with self.transaction() as conn:
            table = self.members_table(audience_id)
            return self._count(conn, table) if self.exists(conn, table) else None

    def member_keys(self, audience_id: str) -> set[object]:
        """All keys of a membership (for tests and small audiences only)."""
        with self.transaction() as conn:
            query = exp.select("entity_key").from_(self.members_table(audience_id))
            return {row[0] for row in conn.exec_driver_sql(query.sql(dialect=self.dialect))}

    def _schema_sql(self) -> str:
        schema = exp.Table(
            db=exp.to_identifier(ACTIVATION_SCHEMA, quoted=True),
            catalog=exp.to_identifier(ACTIVATION_CATALOG) if self.path is not None else None,
        )
        return schema.sql(dialect=self.dialect).removeprefix(".")

    def _sql(self, expression: exp.Expression) -> str:
        return expression.sql(dialect=self.dialect)

    def _count(self, conn: sa.Connection, table: exp.Table) -> int:
        query = exp.select(count_star()).from_(table.copy())
        return int(conn.exec_driver_sql(query.sql(dialect=self.dialect)).scalar_one())

    def _count_missing(self, conn: sa.Connection, *, source: exp.Table, target: exp.Table) -> int:
        """Keys of `source` that `target` lacks (an anti-join in the engine)."""
        inner = (
            exp.select("1")
            .from_(target.copy().as_("t"))
            .where(exp.column("entity_key", "t").eq(exp.column("entity_key", "s")))
        )
        query = (
            exp.select(count_star())
            .from_(source.copy().as_("s"))
            .where(exp.Not(this=exp.Exists(this=inner)))
        )
        return int(conn.exec_driver_sql(query.sql(dialect=self.dialect)).scalar_one())

    def exists(self, conn: sa.Connection, table: exp.Table, *, column: str | None = None) -> bool:
        """Whether our `table` exists (and has `column`, when one is given)."""
        if column is not None:
            return column in self.columns(conn, table)
        info = sa.table(
            "tables", sa.column("table_schema"), sa.column("table_name"),
            sa.column("table_catalog"), schema="information_schema",
        )  # fmt: skip
        query = (
            sa.select(sa.func.count())
            .select_from(info)
            .where(info.c.table_schema == ACTIVATION_SCHEMA, info.c.table_name == table.name)
        )
        if self.path is not None:
            query = query.where(info.c.table_catalog == ACTIVATION_CATALOG)
        return bool(conn.execute(query).scalar_one())

    def columns(self, conn: sa.Connection, table: exp.Table) -> set[str]:
        """The column names of our `table` (none when it does not exist)."""
        info = sa.table(
            "columns", sa.column("table_schema"), sa.column("table_name"),
            sa.column("table_catalog"), sa.column("column_name"), schema="information_schema",
        )  # fmt: skip
        query = sa.select(info.c.column_name).where(
            info.c.table_schema == ACTIVATION_SCHEMA, info.c.table_name == table.name
        )
        if self.path is not None:
            query = query.where(info.c.table_catalog == ACTIVATION_CATALOG)
        return {row[0] for row in conn.execute(query)}

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        if self.path is None:
            yield  # the warehouse's own transactions serialize writers
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _process_lock(self.path.with_suffix(".lock")):
            yield


def _time_statements(engine: sa.Engine, seconds: float) -> None:
    """Interrupt any statement of a DuckDB `engine` after `seconds` (PostgreSQL sessions have
    statement_timeout; DuckDB has no such setting). Arrow streams the sync engine reads from
    the raw connection are not statements here: they last as long as their delivery."""
    if engine.dialect.name != "duckdb":
        return

    def start(conn: sa.Connection, *_statement: Any) -> None:
        timer = ExitStack()
        timer.enter_context(Deadline(seconds).interrupting(conn.connection.driver_connection))
        conn.info[_STATEMENT_TIMER] = timer

    def stop(conn: sa.Connection, *_statement: Any) -> None:
        timer = conn.info.pop(_STATEMENT_TIMER, None)
        if timer is not None:
            timer.close()

    def failed(context: sa.engine.ExceptionContext) -> None:
        if context.connection is not None:
            stop(context.connection)

    sa.event.listen(engine, "before_cursor_execute", start)
    sa.event.listen(engine, "after_cursor_execute", stop)
    sa.event.listen(engine, "handle_error", failed)


class _FileLock:
    """A cross-process lock (flock) that the holding process may take again (reentrant), so
    the sync engine can commit on one connection while it streams from another."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.guard = threading.RLock()
        self.depth = 0
        self.handle: IO[str] | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self.guard:
            if self.depth == 0:
                self.handle = self.path.open("a")
                fcntl.flock(self.handle, fcntl.LOCK_EX)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.handle is not None:
                    fcntl.flock(self.handle, fcntl.LOCK_UN)
                    self.handle.close()
                    self.handle = None


_LOCKS: dict[Path, _FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(path: Path) -> AbstractContextManager[None]:
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, _FileLock(path))
    return lock.hold()
