"""Running one sync: plan in SQL, safety checks, deliver in batches, commit what was confirmed.

Guarantees (see docs/architecture.md, "Sync runs"):
- Only keys the destination confirmed enter the snapshot; a failed key is retried next run.
- Each confirmed batch is appended to a confirmation log (one small insert); the log is
  folded into the snapshot once, at the end of the run, in the transaction that also records
  a file's pending publication. A killed run's log is folded by the next run before it plans
  (immediate destinations applied those batches) or discarded with its unpublished file
  (deferred ones), so a crash at any point converges without a lost or duplicated member.
- Every request the destination confirmed stays committed, whatever fails after it (a
  connector that fails part way through a batch says what it confirmed before).
- Nothing is loaded whole into memory: rows go out in Arrow chunks. No destination call,
  retry or `Retry-After` wait holds the store (on DuckDB, its one-writer lock: other syncs
  and audience refreshes go on): the store work before the first send runs in one session
  (one connection, one hold of the lock) that also spools every operation's rows to local
  files (`_rows`), the commit in another, and confirmations are appended outside both
  (`_ConfirmationLog`).
- The incremental diff (membership log + pending keys) finds the same delta as comparing
  every member: the state it relies on (the membership version caught up with, the pending
  keys) is written only when a run succeeds, in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pydantic
import sqlalchemy as sa
from sqlglot import exp

from composable_dagster.destinations.base import (
    DeliveryError,
    DestinationType,
    Operation,
    RecordBatch,
    SyncContext,
)
from composable_dagster.destinations.pii import apply_pii
from composable_dagster.errors import DomainError
from composable_dagster.filters import CatalogSchema
from composable_dagster.filters.schema import ModelDef
from composable_dagster.spec.sync import (
    RECORDED_UNSENT,
    SENT,
    MappedField,
    SafetyConfig,
    SplitRange,
    SyncMode,
)
from composable_dagster.sync.plan import (
    changes,
    current_hashes,
    current_values,
    delta,
    delta_of,
    duplicate_keys,
    empty_like,
    first_delivery,
    mapping_fingerprint,
    membership_row_hash,
    snapshot_columns,
)
from composable_dagster.warehouse.activation import ActivationStore, MembershipStats
from composable_dagster.warehouse.fingerprints import key_hash

ERROR_SAMPLE = 20
# Rows per Arrow chunk a run reads back while delivering (at least a batch): what it holds
# in memory at a time.
READ_CHUNK_ROWS = 100_000
LOAD_KEYS_PER_TRANSACTION = 1_000_000  # confirmations moved into the store per commit
SENT_OPERATIONS = ("add", "update", "remove")


class SyncSafetyError(DomainError):
    """The run would do something a sync should never do unasked; nothing was sent."""


@dataclass(frozen=True, slots=True)
class SyncJob:
    """One sync, resolved from the catalog: everything a run needs."""

    sync_id: str
    audience_id: str
    mode: SyncMode
    fields: Sequence[MappedField]
    parent: ModelDef
    schema: CatalogSchema
    destination: DestinationType
    destination_config: pydantic.BaseModel
    destination_id: str = ""  # the catalog's destination: another one starts from nothing
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    split: SplitRange | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    planned: dict[str, int]
    added: int = 0
    updated: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: Sequence[tuple[str, str, str]] = field(default_factory=tuple)  # key, op, reason
    diff: str = "full"  # or "incremental": only keys logged since the last run were compared

    @property
    def processed(self) -> int:
        return self.added + self.updated + self.removed + self.failed

    @property
    def rows_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


class _Tables:
    """Names of one sync's tables in the activation store."""

    def __init__(self, store: ActivationStore, sync_id: str, *, field_count: int = 0) -> None:
        self.sync_id = sync_id
        self.field_count = field_count
        tag = sync_id.replace("-", "")
        self.snapshot = store.snapshot_table(sync_id)
        self.delta = store.table(f"delta_{tag}")
        self.pending = store.table(f"pending_{tag}")
        self.changes = store.table(f"changes_{tag}")
        self.duplicates = store.table(f"duplicates_{tag}")
        self.errors = store.table(f"errors_{tag}")
        self.state = store.table("sync_state")


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `_plan` found: the delta's counts and the sizes the safety rules weigh."""

    planned: dict[str, int]  # operation -> keys (add, update, remove)
    members: int
    snapshot_size: int
    rows_without_key: int  # matched the audience's filter with a NULL key
    membership_version: int | None  # the membership the delta compared (None: unversioned)
    incremental: bool  # the delta came from the membership log, not a full comparison
    hashes: exp.Select  # every member's (key_hash, row_hash), as the delta compared them
    current: exp.Select  # every member with values: what a full-snapshot mirror sends


def run_sync(
    store: ActivationStore,
    job: SyncJob,
    *,
    run_id: str,
    now: datetime,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[SyncReport], None] = lambda _: None,
    override_safety: bool = False,
) -> SyncReport:
    """Plan, check, deliver and commit one run of `job`. Raises SyncSafetyError before
    sending anything when a safety rule trips, and re-raises destination failures; the
    batches confirmed before a failure are folded into the snapshot by the next run.

    `progress` gets the counts so far after every batch the destination answered (and
    before a failure is re-raised): what a failed or stopped run had delivered.
    `override_safety`: a person let this run through the safety rules (they are logged)."""
    started = time.monotonic()
    tables = _Tables(store, job.sync_id, field_count=len(job.fields))
    capabilities = job.destination.capabilities
    _recover(store, job, tables)  # may publish: outside the sessions below
    deferred = capabilities.deferred_publish
    # What goes on the wire is the destination's batch size (one request), or the sync's
    # own when it is smaller.
    batch_size = job.destination.batch_size(job.destination_config)
    if job.safety.batch_size:
        batch_size = min(batch_size, job.safety.batch_size)
    with contextlib.ExitStack() as spools:
        # The store work before the first send, on one connection under one hold of the
        # lock, down to the rows to send (spooled on DuckDB: delivery needs no store).
        with store.session():
            plan = _plan(store, job, tables, now=now)
            log(f"planned {plan.planned} from {plan.members} members against "
                f"{plan.snapshot_size} delivered in {time.monotonic() - started:.2f} s "
                f"({'incremental' if plan.incremental else 'full'} diff)")  # fmt: skip
            stop = _safety_stop(job, plan=plan)
            if stop is not None and not override_safety:
                raise SyncSafetyError(stop)
            if stop is not None:
                log(f"safety stop overridden for this run: {stop}")
            full_snapshot = job.mode == SyncMode.MIRROR and capabilities.mirror_as_full_snapshot
            chunk_rows = max(batch_size, READ_CHUNK_ROWS)
            first = _first_delivery(
                store, job, tables, plan, full_snapshot, now=now, chunk_rows=chunk_rows
            )
            if first is not None:
                planned, rejects = first.planned, first.rejects
            else:
                planned, rejects = _changes_to_send(
                    store, job, tables, plan, full_snapshot, now=now
                )
            tally = _Tally(planned=planned, started=started)
            tally.failed = _record_rejects(
                store, tables, rejects, run_id=run_id, errors=tally.errors
            )
            if plan.rows_without_key:
                # No key to send them by, nor to name them by: one error for all of them.
                reason = f"NULL entity key: {plan.rows_without_key} matching rows have no key"
                _record_errors(store, tables, run_id=run_id, op="reject", failures={None: reason})
                tally.errors.append(("", "reject", reason))
                tally.failed += plan.rows_without_key
            confirmed = _confirmed_table(store, tables, deferred=deferred)
            confirmations = _ConfirmationLog(store, confirmed)
            confirmations.reset()
            if first is not None:
                sends, readers = [_Send("add", first.rows)], [first.file.read_back]
            else:
                sends = _sends(job, tables, full_snapshot=full_snapshot, current=plan.current)
                readers = [_rows(store, send.rows, chunk_rows=chunk_rows, spools=spools)
                           for send in sends]  # fmt: skip
        context = SyncContext(
            sync_id=job.sync_id,
            run_id=run_id,
            mode=job.mode,
            hashed_fields=frozenset(f.destination_field for f in job.fields if f.pii),
        )
        connector = job.destination.open(job.destination_config, context=context)
        committed = False  # once the snapshot names the staged output, it must survive
        batches = itertools.count()

        def take(op: str, keys: Sequence[str], failures: Mapping[str, str]) -> None:
            """Commit what the destination answered for one batch, before anything else."""
            if failures:
                _record_errors(store, tables, run_id=run_id, op=op, failures=failures)
            confirmations.add(op, keys)
            tally.take(op, keys, failures)
            progress(tally.report(incremental=plan.incremental))

        try:
            every_change_confirmed = not full_snapshot
            for send, read in zip(sends, readers, strict=True):
                for batch in _batches(send, read(), job=job, run_id=run_id,
                                      batch_size=batch_size, sequence=batches):  # fmt: skip
                    try:
                        result = connector.deliver(batch)
                    except DeliveryError as err:
                        take(send.op, err.confirmed, err.failed)
                        raise
                    take(send.op, result.confirmed, result.failed)
                    if result.failed or len(result.confirmed) != len(batch.keys):
                        every_change_confirmed = False
            token = connector.stage()
            with store.session():  # the commit's store work, on one connection
                for op in sorted(RECORDED_UNSENT.get(job.mode, ())):
                    _commit_unsent(store, tables, op=op)
                if first is not None:
                    if not every_change_confirmed:
                        confirmations.load()
                    first.file.commit(
                        confirmed, every_row=every_change_confirmed,
                        token=token if deferred else None,
                    )  # fmt: skip
                elif every_change_confirmed:
                    # The usual run: the log holds every sent change, so the changes table
                    # says what it does (a churn run: the confirmed keys not read back).
                    _commit_sent_changes(
                        store, tables, confirmed, ops=sorted({s.op for s in sends}),
                        token=token if deferred else None,
                    )  # fmt: skip
                else:
                    confirmations.load()
                    _commit_confirmed(
                        store, tables, confirmed,
                        current=plan.current if full_snapshot else None,
                        token=token if deferred else None,
                    )  # fmt: skip
                committed = True
                if not deferred:
                    # Nothing to publish first.
                    _finish(store, tables, job, plan, first=first,
                            every_change_confirmed=every_change_confirmed)  # fmt: skip
            confirmations.discard()
            if first is not None:
                first.file.discard()  # after the log's files: a kill in between folds again
            if deferred and token is not None:
                job.destination.publish(job.destination_config, token)
                _set_state(store, tables, job.sync_id, pending_token=None)
        except BaseException:
            # What an immediate destination confirmed stays in the confirmation log; the
            # next run folds it into the snapshot before it plans (`_recover`).
            connector.close(success=committed)
            raise
        connector.close(success=True)
    if deferred:
        _finish(store, tables, job, plan, first=first,
                every_change_confirmed=every_change_confirmed)  # fmt: skip
    if full_snapshot:
        # Every member was written; what changed in the destination's copy is the diff.
        tally.counts = {op: planned.get(op, 0) for op in SENT_OPERATIONS}
    return tally.report(incremental=plan.incremental)


def _first_delivery(
    store: ActivationStore,
    job: SyncJob,
    tables: _Tables,
    plan: _Plan,
    full_snapshot: bool,
    *,
    now: datetime,
    chunk_rows: int,
) -> _FirstDelivery | None:
    """A first delivery (nothing delivered yet) on DuckDB, spooled; None when the run
    plans as usual: another engine or mode, a snapshot that holds members, or a key that
    has gained a parent row since the membership was stored (the changes table rejects
    it)."""
    if (
        store.dialect != "duckdb"
        or full_snapshot
        or plan.snapshot_size
        or "add" not in SENT[job.mode]
        or RECORDED_UNSENT.get(job.mode)
    ):
        return None
    rows, rejects = first_delivery(
        members=store.members_table(job.audience_id), parent=job.parent, fields=job.fields,
        schema=job.schema, split=job.split, dialect=store.dialect, now=now,
    )  # fmt: skip
    file = _SentFile(store, tables)
    with store.transaction() as conn:
        # A changes table a failed run left would be folded with this run's log after a kill.
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_sql(store, tables.changes)}")
        count = file.write(conn, rows, chunk_rows=chunk_rows)
    if count is None:
        return None
    return _FirstDelivery(rows=rows, file=file, rejects=rejects, planned={"add": count})


@dataclass(frozen=True, slots=True)
class _FirstDelivery:
    """A first delivery: the query of its rows, spooled to a `_SentFile`; the query of its
    rejected keys (`entity_key, source_rows, key_hash`); its planned counts."""

    rows: exp.Select
    file: _SentFile
    rejects: exp.Select
    planned: Mapping[str, int]


class _SentFile:
    """A first delivery's rows (the snapshot's columns, in key order) in a named file beside
    the store, in place of the delta's values in a changes table: each member is written
    to the store once, into the snapshot. The run sends from the file and folds it into the
    snapshot at the commit; after a kill, the next run's `_recover` folds the part the
    destination confirmed from it (what the changes table serves for other runs)."""

    def __init__(self, store: ActivationStore, tables: _Tables) -> None:
        self.store = store
        self.tables = tables
        self.path = store.spool_dir / f"first_{tables.sync_id.replace('-', '')}.arrow"

    def write(self, conn: sa.Connection, rows: exp.Select, *, chunk_rows: int) -> int | None:
        """Spool `rows`, flushed to disk before anything is sent; how many, or None (and no
        file) when a key has more than one row."""
        self.store.spool_dir.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        sql = _sql(self.store, rows)
        reader = conn.connection.driver_connection.sql(sql).to_arrow_reader(chunk_rows)
        count, unique, last = 0, True, None
        try:
            with partial.open("wb") as sink:
                with pa.ipc.new_stream(sink, reader.schema) as writer:
                    for batch in reader:
                        if not batch.num_rows:
                            continue
                        keys = batch.column("entity_key")
                        # Key order: a key's rows are side by side, within or across batches.
                        repeated = pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1))
                        if keys[0].as_py() == last or pc.any(repeated).as_py():
                            unique = False
                            break
                        last = keys[-1].as_py()
                        writer.write_batch(batch)
                        count += batch.num_rows
                sink.flush()
                os.fsync(sink.fileno())
        finally:
            reader.close()  # DuckDB refuses to end a transaction while a result is open
        if not unique:
            partial.unlink()
            return None
        partial.rename(self.path)
        return count

    def exists(self) -> bool:
        return self.path.exists()

    def read_back(self) -> Iterator[pa.Table]:
        with pa.OSFile(str(self.path)) as source:
            for batch in pa.ipc.open_stream(source):
                if batch.num_rows:
                    yield pa.Table.from_batches([batch])

    def commit(self, confirmed: exp.Table, *, every_row: bool, token: str | None) -> None:
        """One transaction: the rows the log confirmed (`every_row`: all of them, without
        reading the log) go into the snapshot, the log is emptied, and the pending
        publication is recorded. Run again after a kill, it leaves the same snapshot."""
        snapshot, log = _sql(self.store, self.tables.snapshot), _sql(self.store, confirmed)
        with self.store.transaction() as conn, pa.OSFile(str(self.path)) as source:
            stream = pa.ipc.open_stream(source)
            sent = stream.schema.names  # the snapshot's columns but the key hash
            columns = ", ".join(["key_hash", *sent])
            hashed = ", ".join([_sql(self.store, key_hash(exp.column("entity_key"), "duckdb")),
                                *sent])  # fmt: skip
            raw = conn.connection.driver_connection
            raw.register("composable_first_delivery", stream)
            try:
                if every_row:
                    confirmed_only = ""
                else:
                    confirmed_only = f" WHERE entity_key IN (SELECT entity_key FROM {log})"
                    conn.exec_driver_sql(f"DELETE FROM {snapshot}{confirmed_only}")
                conn.exec_driver_sql(
                    f"INSERT INTO {snapshot} ({columns}) SELECT {hashed} "
                    f"FROM composable_first_delivery{confirmed_only}"
                )
            finally:
                raw.unregister("composable_first_delivery")
            conn.exec_driver_sql(f"DELETE FROM {log}")
            _set_state(self.store, self.tables, self.tables.sync_id, pending_token=token,
                       conn=conn)  # fmt: skip

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _changes_to_send(
    store: ActivationStore,
    job: SyncJob,
    tables: _Tables,
    plan: _Plan,
    full_snapshot: bool,
    *,
    now: datetime,
) -> tuple[Mapping[str, int], exp.Select]:
    """The planned counts per operation, and the query of the keys rejected (duplicated
    in the parent model: `entity_key, source_rows`); the changes table unless every member
    is sent (a full-snapshot mirror)."""
    if full_snapshot:
        # Every member is sent: keys duplicated anywhere in the parent model stay out.
        with store.transaction() as conn:
            _replace(store, conn, tables.duplicates, duplicate_keys(
                members=store.members_table(job.audience_id), parent=job.parent,
                dialect=store.dialect))  # fmt: skip
        return plan.planned, exp.select("entity_key", "source_rows").from_(tables.duplicates.copy())
    planned = _fetch_changes(store, job, tables, now=now)
    rejects = (
        exp.select("entity_key", "source_rows")
        .from_(tables.changes.copy())
        .where(exp.column("operation").eq(exp.Literal.string("reject")))
    )
    return planned, rejects


@dataclass
class _Tally:
    """What one run has delivered so far."""

    planned: Mapping[str, int]
    started: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SENT_OPERATIONS, 0))
    failed: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)

    def take(self, op: str, confirmed: Sequence[str], failures: Mapping[str, str]) -> None:
        self.counts[op] += len(confirmed)
        self.failed += len(failures)
        self.errors.extend((k, op, v) for k, v in failures.items())

    def report(self, *, incremental: bool) -> SyncReport:
        return SyncReport(
            planned={op: self.planned.get(op, 0) for op in SENT_OPERATIONS},
            added=self.counts["add"],
            updated=self.counts["update"],
            removed=self.counts["remove"],
            failed=self.failed,
            seconds=time.monotonic() - self.started,
            errors=tuple(self.errors[:ERROR_SAMPLE]),
            diff="incremental" if incremental else "full",
        )


def recent_errors(store: ActivationStore, sync_id: str, *, run_id: str) -> list[dict[str, str]]:
    """Per-row errors of one run of a sync (what the API and the UI show)."""
    tables = _Tables(store, sync_id)
    with store.transaction() as conn:
        if not _exists(store, conn, tables.errors):
            return []
        query = (
            sa.select(sa.column("entity_key"), sa.column("operation"), sa.column("error"))
            .select_from(sa.text(_sql(store, tables.errors)))
            .where(sa.column("run_id") == run_id)
            .order_by(sa.column("entity_key"))
        )
        return [dict(r._mapping) for r in conn.execute(query)]


# --- planning ---------------------------------------------------------------------------


def _plan(store: ActivationStore, job: SyncJob, tables: _Tables, *, now: datetime) -> _Plan:
    """The delta (keys and operations, no values) and its counts, in one transaction.

    Full: every member against the snapshot (one full outer join on the key hashes).
    Incremental, when the sync's snapshot last caught up with membership version V and the
    membership log reaches back to V: only the keys logged since V and the keys the last
    run left different (pending) are compared. Every key that differs is among those (see
    docs/architecture.md), so both give the same delta. Nothing per member leaves the
    engine, and the current rows are never stored.
    """
    members = store.members_table(job.audience_id)
    with store.transaction() as conn:
        if not _exists(store, conn, members):
            raise SyncSafetyError(
                f"audience {job.audience_id} has no materialized membership yet; "
                "materialize the audience first"
            )
        values = current_values(
            members=members, parent=job.parent, fields=job.fields, schema=job.schema,
            split=job.split, dialect=store.dialect, now=now,
        )  # fmt: skip
        engine_version = str(conn.exec_driver_sql("SELECT version()").scalar())
        fingerprint = mapping_fingerprint(
            job.fields, dialect=store.dialect, engine=engine_version, audience_id=job.audience_id
        )
        state = _state(store, conn, tables, job.sync_id)
        caught_up = state.get("membership_version")  # None, or the version as an int
        if _moved(state, job):
            # Another destination, or the same one pointed at another table, directory or
            # endpoint, holds none of what the snapshot says was delivered.
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_sql(store, tables.snapshot)}")
        if not _exists(store, conn, tables.snapshot):
            _create(
                store, conn, tables.snapshot, empty_like(values, field_count=tables.field_count)
            )
            caught_up = None
        elif state.get("fingerprint") not in (None, fingerprint):
            _reset_snapshot_hashes(store, conn, tables, current=values)
            caught_up = None  # every stable member differs now: the log does not say so
        _set_state(
            store, tables, job.sync_id, conn=conn,
            fingerprint_pending=fingerprint, destination_id=job.destination_id,
            destination_target=destination_target(job),
        )  # fmt: skip
        stored = membership_row_hash(job.fields, dialect=store.dialect)
        if stored is not None and not store.exists(conn, members, column=stored.name):
            stored = None  # materialized before this mapping existed: hash the values here
        current = current_hashes(
            members=members, parent=job.parent, fields=job.fields, schema=job.schema,
            split=job.split, dialect=store.dialect, now=now, stored=stored,
        )  # fmt: skip
        stats = store.membership_stats(conn, job.audience_id)
        query, incremental = _delta_query(
            store, conn, job, tables, current=current, stats=stats,
            caught_up=caught_up if stored is not None else None,
        )  # fmt: skip
        _replace(store, conn, tables.delta, query)
        planned = _operation_counts(store, conn, tables.delta)
        # Without a split, the stored membership (one row per key) has the count for free.
        counted = members if job.split is None else current.subquery("cur")
        member_count = _scalar(conn, store, _sql(store, exp.select("count(*)").from_(counted)))
        snapshot_size = _scalar(conn, store, f"SELECT count(*) FROM {_sql(store, tables.snapshot)}")
    return _Plan(
        planned=planned, members=member_count, snapshot_size=snapshot_size,
        rows_without_key=stats.rows_without_key if stats else 0,
        # The log speaks of the stored hashes only: a run that computed them from the
        # parent rows leaves the next run a full comparison.
        membership_version=stats.version if stats and stored is not None else None,
        incremental=incremental, hashes=current, current=values,
    )  # fmt: skip


def _delta_query(
    store: ActivationStore,
    conn: sa.Connection,
    job: SyncJob,
    tables: _Tables,
    *,
    current: exp.Select,
    stats: MembershipStats | None,
    caught_up: int | None,
) -> tuple[exp.Select, bool]:
    """The delta's query, and whether it is incremental: it is when the snapshot caught up
    with a membership version the log still reaches back to (and the pending keys of that
    run are there); otherwise every member is compared."""
    if (
        stats is None
        or caught_up is None
        or stats.log_from > caught_up
        or not _exists(store, conn, tables.pending)
    ):
        return delta(current=current, snapshot=tables.snapshot), False
    logged = (
        exp.select("key_hash")
        .from_(store.membership_log_table(job.audience_id))
        .where(exp.column("version") > caught_up)
    )
    candidates = exp.union(
        logged, exp.select("key_hash").from_(tables.pending.copy()), distinct=False
    )
    return delta_of(candidates=candidates, current=current, snapshot=tables.snapshot), True


def _fetch_changes(
    store: ActivationStore, job: SyncJob, tables: _Tables, *, now: datetime
) -> dict[str, int]:
    """The delta with values (the changes table); its counts per operation."""
    with store.transaction() as conn:
        query = changes(
            delta_table=tables.delta, members=store.members_table(job.audience_id),
            snapshot=tables.snapshot, parent=job.parent,
            fields=job.fields, schema=job.schema, dialect=store.dialect, now=now,
        )  # fmt: skip
        _replace(store, conn, tables.changes, query)
        return _operation_counts(store, conn, tables.changes)


def _operation_counts(
    store: ActivationStore, conn: sa.Connection, table: exp.Table
) -> dict[str, int]:
    rows = conn.exec_driver_sql(
        f"SELECT operation, count(*) FROM {_sql(store, table)} GROUP BY operation"
    ).all()
    return {"add": 0, "update": 0, "remove": 0, "reject": 0} | {op: int(n) for op, n in rows}


def _safety_stop(job: SyncJob, *, plan: _Plan) -> str | None:
    """Why the sync's safety rules stop this run before it sends anything; None: they do not."""
    snapshot_size = plan.snapshot_size
    wipes = job.mode == SyncMode.MIRROR and plan.members == 0 and snapshot_size > 0
    if wipes and not job.safety.allow_empty_mirror:
        return (
            f"the audience is empty while {snapshot_size} members were delivered before; "
            "refusing to mirror an empty audience (a broken source would wipe the "
            "destination). Set config.allow_empty_mirror to true if this is intended."
        )
    removes = plan.planned.get("remove", 0) if "remove" in SENT[job.mode] else 0
    if snapshot_size and removes / snapshot_size > job.safety.max_remove_share:
        return (
            f"this run would remove {removes} of {snapshot_size} delivered members "
            f"({removes / snapshot_size:.0%}), more than the allowed "
            f"{job.safety.max_remove_share:.0%}; raise config.max_remove_share to allow it"
        )
    return None


# --- delivery ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Send:
    """The rows of one operation to send (`entity_key, f0…fn`), in key order."""

    op: str
    rows: exp.Select


def _sends(
    job: SyncJob, tables: _Tables, *, full_snapshot: bool, current: exp.Select
) -> list[_Send]:
    """What the run sends, in order: removes, updates, adds (a full-snapshot mirror: every
    member with its values)."""
    sent = ["entity_key", *snapshot_columns(tables.field_count)[3:]]
    if full_snapshot:
        members = exp.select(*sent).from_(current.subquery("x")).where(_not_duplicated(tables))
        return [_Send("add", members.order_by("entity_key"))]
    return [
        _Send(
            op,
            exp.select(*sent)
            .from_(tables.changes.copy())
            .where(exp.column("operation").eq(exp.Literal.string(op)))
            .order_by("entity_key"),
        )
        for op in ("remove", "update", "add")
        if op in SENT[job.mode]
    ]


def _batches(
    send: _Send,
    chunks: Iterator[pa.Table],
    *,
    job: SyncJob,
    run_id: str,
    batch_size: int,
    sequence: Iterator[int],
) -> Iterator[RecordBatch]:
    names = [f.destination_field for f in job.fields]
    hashing = {f.destination_field: f.pii for f in job.fields if f.pii}
    for chunk in chunks:
        for offset in range(0, chunk.num_rows, batch_size):
            arrow = chunk.slice(offset, batch_size)
            keys = [str(k) for k in arrow.column("entity_key").to_pylist()]
            rows = pa.table({name: arrow.column(f"f{i}") for i, name in enumerate(names)})
            if hashing:
                rows = apply_pii(rows, hashing)
            # Per (run, batch): a retried request carries the same key, so a receiver
            # applies it once; the same change in a later run (a member who left and came
            # back) is a new request that must not be taken for a duplicate.
            seed = f"{job.sync_id}|{run_id}|{send.op}|{next(sequence)}"
            yield RecordBatch(
                operation=Operation(send.op),
                keys=keys,
                rows=rows,
                idempotency_key=hashlib.sha256(seed.encode()).hexdigest()[:40],
            )


def _rows(
    store: ActivationStore, query: exp.Select, *, chunk_rows: int, spools: contextlib.ExitStack
) -> Callable[[], Iterator[pa.Table]]:
    """A reader of the rows of `query`, `chunk_rows` at a time, that delivery calls with no
    store transaction open.

    On DuckDB a transaction holds the store's one-writer lock, which every sync and audience
    refresh needs: the rows are spooled now (the caller's transaction, or a session's) to an
    unlinked local file (Arrow IPC, streamed, so memory stays bounded) that `spools` closes,
    and the reader reads them back from there. On PostgreSQL the reader streams them in one
    read transaction of its own, which blocks no writer.
    """
    sql = _sql(store, query)
    if store.dialect != "duckdb":

        def stream() -> Iterator[pa.Table]:
            with store.transaction() as conn:
                result = conn.execution_options(stream_results=True).exec_driver_sql(sql)
                names = list(result.keys())
                for rows in result.partitions(chunk_rows):
                    yield pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})

        return stream
    store.spool_dir.mkdir(parents=True, exist_ok=True)
    spool = spools.enter_context(tempfile.TemporaryFile(dir=store.spool_dir))  # noqa: SIM115 (closed by `spools`)
    with store.transaction() as conn:
        reader = conn.connection.driver_connection.sql(sql).to_arrow_reader(chunk_rows)
        try:
            with pa.ipc.new_stream(spool, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
        finally:
            # DuckDB refuses to end a transaction while a result is open.
            reader.close()

    def read_back() -> Iterator[pa.Table]:
        spool.seek(0)
        for batch in pa.ipc.open_stream(spool):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])

    return read_back


# --- commits ----------------------------------------------------------------------------


def _commit_unsent(store: ActivationStore, tables: _Tables, *, op: str) -> None:
    """Record members in the snapshot without delivering them (remove mode)."""
    with store.transaction() as conn:
        snapshot, changes_sql = _sql(store, tables.snapshot), _sql(store, tables.changes)
        where = f"operation = '{op}'"
        conn.exec_driver_sql(
            f"DELETE FROM {snapshot} WHERE entity_key IN "
            f"(SELECT entity_key FROM {changes_sql} WHERE {where})"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {snapshot} SELECT {_snapshot_columns(tables)} FROM {changes_sql} "
            f"WHERE {where}"
        )


def _confirmed_table(store: ActivationStore, tables: _Tables, *, deferred: bool) -> exp.Table:
    """The run's confirmation log: keys the destination confirmed, one append per batch, folded
    into the snapshot once at the end. Immediate destinations have applied what it holds,
    so a killed run's log is folded by the next run; a deferred destination's output is
    discarded with its run, and so is its log (another table, so the two never mix)."""
    prefix = "staged_" if deferred else "confirmed_"
    return store.table(tables.changes.name.replace("changes_", prefix))


class _ConfirmationLog:
    """The run's confirmation log (`_confirmed_table`): the keys the destination confirmed,
    one append per batch, before the next batch is sent.

    Where a store transaction is cheap (PostgreSQL) each batch is a row insert. On DuckDB
    a transaction opens the store file and takes its lock (~40 ms, while a webhook batch
    is 500 keys), so each batch is a small Arrow file in a directory beside the store,
    written under a temporary name, flushed to disk and renamed, and `load` moves them into
    the table: at the end of the run, or in the next run's `_recover` after a kill. A file
    a kill left unrenamed is the batch that was in flight: it is sent again, as before.
    """

    def __init__(self, store: ActivationStore, table: exp.Table) -> None:
        self.store = store
        self.table = table
        local = store.dialect == "duckdb"
        self.directory = store.spool_dir / table.name if local else None
        self._files = 0

    def reset(self) -> None:
        """Empty: a new run starts its own log (what a killed run left was recovered)."""
        with self.store.transaction() as conn:
            table = _sql(self.store, self.table)
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql(f"CREATE TABLE {table} (entity_key VARCHAR, operation VARCHAR)")
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(parents=True)

    def add(self, op: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        if self.directory is None:
            with self.store.transaction() as conn, _keys_table(self.store, conn, keys) as ks:
                log = _sql(self.store, self.table)
                conn.exec_driver_sql(f"INSERT INTO {log} SELECT entity_key, '{op}' FROM {ks}")
            return
        rows = pa.table({
            "entity_key": pa.array(keys, pa.string()),
            "operation": pa.array([op] * len(keys), pa.string()),
        })  # fmt: skip
        self._files += 1
        final = self.directory / f"{self._files:09d}.arrow"
        partial = final.with_suffix(".partial")
        with partial.open("wb") as sink:
            with pa.ipc.new_file(sink, rows.schema) as writer:
                writer.write_table(rows)
            sink.flush()
            os.fsync(sink.fileno())
        partial.rename(final)

    def load(self) -> None:
        """Move the local batches into the table (the snapshot's fold reads that), a
        transaction per million keys: DuckDB holds a transaction's inserts in memory until
        it commits. A crash before the files are gone loads some twice: the fold reads each
        key once."""
        if self.directory is None or not self.directory.exists():
            return
        with self.store.transaction() as conn:
            wanted = _exists(self.store, conn, self.table)  # else no run of this engine left it
        chunk: list[pa.Table] = []
        for path in sorted(self.directory.glob("*.arrow")) if wanted else ():
            with pa.memory_map(str(path)) as source:
                chunk.append(pa.ipc.open_file(source).read_all())
            if sum(t.num_rows for t in chunk) >= LOAD_KEYS_PER_TRANSACTION:
                with self.store.transaction() as conn:
                    self._insert(conn, pa.concat_tables(chunk))
                chunk = []
        if chunk:
            with self.store.transaction() as conn:
                self._insert(conn, pa.concat_tables(chunk))
        shutil.rmtree(self.directory, ignore_errors=True)

    def discard(self) -> None:
        """Drop the local batches once the snapshot has them (committed)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _insert(self, conn: sa.Connection, rows: pa.Table) -> None:
        """Insert `rows` (entity_key, operation) on DuckDB, straight from Arrow."""
        raw = conn.connection.driver_connection
        raw.register("composable_confirmed", rows)
        try:
            raw.execute(
                f"INSERT INTO {_sql(self.store, self.table)} "
                "SELECT entity_key, operation FROM composable_confirmed"
            )
        finally:
            raw.unregister("composable_confirmed")


def _commit_confirmed(
    store: ActivationStore,
    tables: _Tables,
    confirmed: exp.Table,
    *,
    current: exp.Select | None = None,
    token: str | None = None,
) -> None:
    """One transaction: everything the confirmation log holds goes into the snapshot (for a
    full-snapshot mirror, `current` replaces it), the log is emptied, and the pending
    publication is recorded."""
    log = _sql(store, confirmed)
    snapshot = _sql(store, tables.snapshot)
    with store.transaction() as conn:
        if current is not None:
            conn.exec_driver_sql(f"DELETE FROM {snapshot}")
            conn.exec_driver_sql(
                f"INSERT INTO {snapshot} SELECT {_snapshot_columns(tables)} "
                f"FROM {_sql(store, current.subquery('cur'))} "
                f"WHERE entity_key IN (SELECT entity_key FROM {log})"
            )
        else:
            conn.exec_driver_sql(
                f"DELETE FROM {snapshot} WHERE entity_key IN (SELECT entity_key FROM {log})"
            )
            conn.exec_driver_sql(
                f"INSERT INTO {snapshot} SELECT {_snapshot_columns(tables, prefix='c.')} "
                f"FROM {_sql(store, tables.changes)} AS c "
                f"JOIN (SELECT DISTINCT entity_key, operation FROM {log}) AS k "
                "ON k.entity_key = c.entity_key AND k.operation = c.operation "
                "WHERE c.operation <> 'remove'"
            )
        conn.exec_driver_sql(f"DELETE FROM {log}")
        _set_state(store, tables, tables.sync_id, pending_token=token, conn=conn)


def _commit_sent_changes(
    store: ActivationStore,
    tables: _Tables,
    confirmed: exp.Table,
    *,
    ops: Sequence[str],
    token: str | None,
) -> None:
    """What `_commit_confirmed` does when the destination confirmed every change of `ops`:
    the same snapshot, from the changes table alone. The confirmation log's files stay
    until the caller discards them, so a crash before that folds them again (the same
    rows: a no-op)."""
    snapshot, changes_sql = _sql(store, tables.snapshot), _sql(store, tables.changes)
    sent = " OR ".join(f"operation = {exp.Literal.string(op).sql()}" for op in ops) or "FALSE"
    with store.transaction() as conn:
        conn.exec_driver_sql(
            f"DELETE FROM {snapshot} WHERE entity_key IN "
            f"(SELECT entity_key FROM {changes_sql} WHERE {sent})"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {snapshot} SELECT {_snapshot_columns(tables)} FROM {changes_sql} "
            f"WHERE ({sent}) AND operation <> 'remove'"
        )
        conn.exec_driver_sql(f"DELETE FROM {_sql(store, confirmed)}")
        _set_state(store, tables, tables.sync_id, pending_token=token, conn=conn)


def _recover(store: ActivationStore, job: SyncJob, tables: _Tables) -> None:
    """Finish what a failed or killed run left: fold what an immediate destination
    confirmed into the snapshot, and publish a file that was committed but not published."""
    confirmed = _confirmed_table(store, tables, deferred=False)
    _ConfirmationLog(store, confirmed).load()
    first = _SentFile(store, tables)
    with store.transaction() as conn:
        state = _state(store, conn, tables, job.sync_id)
        token = state.get("pending_token")
        logged, spooled = _exists(store, conn, confirmed), first.exists()
        leftover = logged and not spooled and _exists(store, conn, tables.changes)
        if leftover:
            # The run's own columns: the mapping may have changed since.
            fields = sum(
                1 for c in store.columns(conn, tables.changes) if c[0] == "f" and c[1:].isdigit()
            )
    if logged and spooled:
        first.commit(confirmed, every_row=False, token=None)
    elif leftover:
        _commit_confirmed(store, _Tables(store, job.sync_id, field_count=fields), confirmed)
    first.discard()
    if token:
        # Staged under the old location, which the config no longer names (and which this
        # run abandons, starting from nothing): only the old config could publish it.
        if not _moved(state, job):
            job.destination.publish(job.destination_config, token)
        _set_state(store, tables, job.sync_id, pending_token=None)


def _finish(
    store: ActivationStore,
    tables: _Tables,
    job: SyncJob,
    plan: _Plan,
    *,
    first: _FirstDelivery | None = None,
    every_change_confirmed: bool = False,
) -> None:
    """After a successful run: the snapshot has caught up with the plan's membership version
    except for the delta's keys it still differs on (failed, rejected, or not sent in this
    mode), which the next run compares again whatever the log says. After a first delivery
    the destination confirmed in full, those are the rejected keys (the log logs a parent
    change since the membership, which the next materialization sees)."""
    with store.transaction() as conn:
        state = _state(store, conn, tables, job.sync_id)
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_sql(store, tables.pending)}")
        if plan.membership_version is not None:
            if first is not None and every_change_confirmed:
                still = exp.select("key_hash").from_(first.rejects.subquery("r"))
            else:
                still = delta_of(
                    candidates=exp.select("key_hash").from_(tables.delta.copy()),
                    current=plan.hashes,
                    snapshot=tables.snapshot,
                )
            _create(store, conn, tables.pending, exp.select("key_hash").from_(still.subquery("d")))
        _set_state(
            store, tables, job.sync_id, conn=conn,
            fingerprint=state.get("fingerprint_pending"),
            membership_version=plan.membership_version,
        )  # fmt: skip
        for table in (tables.delta, tables.changes, tables.duplicates,
                      _confirmed_table(store, tables, deferred=False),
                      _confirmed_table(store, tables, deferred=True)):  # fmt: skip
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_sql(store, table)}")


# --- errors -----------------------------------------------------------------------------


def _record_rejects(
    store: ActivationStore,
    tables: _Tables,
    rejects: exp.Select,
    *,
    run_id: str,
    errors: list[tuple[str, str, str]],
) -> int:
    """Record the duplicated keys `rejects` selects (`entity_key, source_rows` first; a
    first delivery's also carries the key hash, for its pending keys)."""
    with store.transaction() as conn:
        rows = conn.exec_driver_sql(_sql(store, rejects)).all()
    failures = {str(key): f"duplicate key: {n} source rows" for key, n, *_ in rows}
    if failures:
        _record_errors(store, tables, run_id=run_id, op="reject", failures=failures)
        errors.extend((k, "reject", v) for k, v in failures.items())
    return len(failures)


def _record_errors(
    store: ActivationStore,
    tables: _Tables,
    *,
    run_id: str,
    op: str,
    failures: Mapping[str | None, str],
) -> None:
    with store.transaction() as conn:
        table = _sql(store, tables.errors)
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {table} (run_id VARCHAR, entity_key VARCHAR, "
            "operation VARCHAR, error VARCHAR)"
        )
        insert = sa.text(f"INSERT INTO {table} VALUES (:run_id, :entity_key, :operation, :error)")
        conn.execute(
            insert,
            [{"run_id": run_id, "entity_key": k, "operation": op, "error": v[:1000]}
             for k, v in failures.items()],
        )  # fmt: skip


# --- state and SQL helpers --------------------------------------------------------------


# What the engine remembers of a sync between runs (besides its snapshot and pending keys):
# the mapping fingerprint its snapshot was hashed with (and the one of the run in progress),
# a file publication committed but not yet done, the membership version its snapshot last
# caught up with (the start of the membership log it needs), and the destination it holds
# (its catalog id, and a hash of where in it members land).
_STATE_COLUMNS = {
    "fingerprint": "VARCHAR",
    "fingerprint_pending": "VARCHAR",
    "pending_token": "VARCHAR",
    "membership_version": "BIGINT",
    "destination_id": "VARCHAR",
    "destination_target": "VARCHAR",
}


def destination_target(job: SyncJob) -> str:
    """A hash of where the sync's members land (see `DestinationType.target`)."""
    parts = (job.destination.name, *job.destination.target(job.destination_config))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _moved(state: Mapping[str, Any], job: SyncJob) -> bool:
    """Whether the snapshot in `state` was delivered somewhere else than `job` delivers to
    (None: not recorded yet, by a store older than the column)."""
    held = (state.get("destination_id"), state.get("destination_target"))
    now = (job.destination_id, destination_target(job))
    return any(was not in (None, new) for was, new in zip(held, now, strict=True))


def _state(
    store: ActivationStore, conn: sa.Connection, tables: _Tables, sync_id: str
) -> dict[str, Any]:
    _ensure_state(store, conn, tables)
    row = conn.execute(
        sa.text(f"SELECT {', '.join(_STATE_COLUMNS)} FROM {_sql(store, tables.state)} "
                "WHERE sync_id = :s"), {"s": sync_id}
    ).first()  # fmt: skip
    return dict(row._mapping) if row is not None else {}


def _set_state(
    store: ActivationStore,
    tables: _Tables,
    sync_id: str,
    *,
    conn: sa.Connection | None = None,
    **values: str | int | None,
) -> None:
    if conn is None:
        with store.transaction() as own:
            _set_state(store, tables, sync_id, conn=own, **values)
        return
    state = dict.fromkeys(_STATE_COLUMNS) | _state(store, conn, tables, sync_id) | values
    table = _sql(store, tables.state)
    conn.execute(sa.text(f"DELETE FROM {table} WHERE sync_id = :s"), {"s": sync_id})
    conn.execute(
        sa.text(f"INSERT INTO {table} (sync_id, {', '.join(_STATE_COLUMNS)}) "
                f"VALUES (:sync_id, {', '.join(':' + c for c in _STATE_COLUMNS)})"),
        {"sync_id": sync_id, **{c: state[c] for c in _STATE_COLUMNS}},
    )  # fmt: skip


def _ensure_state(store: ActivationStore, conn: sa.Connection, tables: _Tables) -> None:
    table = _sql(store, tables.state)
    columns = ", ".join(f"{name} {kind}" for name, kind in _STATE_COLUMNS.items())
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {table} (sync_id VARCHAR PRIMARY KEY, {columns})"
    )
    for name in _STATE_COLUMNS.keys() - store.columns(conn, tables.state):  # an older store
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {_STATE_COLUMNS[name]}")


def _reset_snapshot_hashes(
    store: ActivationStore, conn: sa.Connection, tables: _Tables, *, current: exp.Select
) -> None:
    """After a mapping or engine change: keep who was delivered, forget what was sent, so
    every stable member is resent once. Removes then carry no previous values. Rebuilt in
    the current layout, so a snapshot of an older plan version is migrated too."""
    snapshot = _sql(store, tables.snapshot)
    template = empty_like(current, field_count=tables.field_count)
    fresh = store.table(tables.snapshot.name + "_reset")
    forgotten = snapshot_columns(tables.field_count)[2:]
    s_key = exp.column("entity_key", "s")
    rebuilt = (
        exp.select(s_key, exp.alias_(key_hash(s_key, store.dialect), "key_hash"),
                   *[exp.column(f, "e") for f in forgotten])
        .from_(tables.snapshot.copy().as_("s"))
        .join(template.subquery("e"), on=exp.false(), join_type="left")
    )  # fmt: skip
    _replace(store, conn, fresh, rebuilt)
    conn.exec_driver_sql(f"DROP TABLE {snapshot}")
    conn.exec_driver_sql(
        f"ALTER TABLE {_sql(store, fresh)} RENAME TO "
        f"{_sql(store, exp.to_identifier(tables.snapshot.name, quoted=True))}"
    )


def _snapshot_columns(tables: _Tables, *, prefix: str = "") -> str:
    return ", ".join(prefix + name for name in snapshot_columns(tables.field_count))


def _not_duplicated(tables: _Tables) -> exp.Expression:
    duplicated = (
        exp.select("1")
        .from_(tables.duplicates.copy().as_("d"))
        .where(exp.column("entity_key", "d").eq(exp.column("entity_key", "x")))
    )
    return exp.Not(this=exp.Exists(this=duplicated))


def _replace(
    store: ActivationStore, conn: sa.Connection, table: exp.Table, query: exp.Expression
) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_sql(store, table)}")
    _create(store, conn, table, query)


def _create(
    store: ActivationStore, conn: sa.Connection, table: exp.Table, query: exp.Expression
) -> None:
    conn.exec_driver_sql(f"CREATE TABLE {_sql(store, table)} AS {_sql(store, query)}")


def _exists(store: ActivationStore, conn: sa.Connection, table: exp.Table) -> bool:
    return store.exists(conn, table)


def _scalar(conn: sa.Connection, store: ActivationStore, sql: str) -> int:
    return int(conn.exec_driver_sql(sql).scalar() or 0)


def _sql(store: ActivationStore, expression: exp.Expression) -> str:
    return expression.sql(dialect=store.dialect)


@contextmanager
def _keys_table(store: ActivationStore, conn: sa.Connection, keys: Sequence[str]) -> Iterator[str]:
    """A relation named by the returned SQL holding `keys` (column entity_key)."""
    if store.dialect == "duckdb":
        raw = conn.connection.driver_connection
        raw.register("composable_keys", pa.table({"entity_key": pa.array(keys, pa.string())}))
        try:
            yield "composable_keys"
        finally:
            raw.unregister("composable_keys")
        return
    conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS composable_keys (entity_key TEXT)")
    conn.exec_driver_sql("TRUNCATE composable_keys")
    raw = conn.connection.driver_connection
    with (
        raw.cursor() as cursor,
        cursor.copy("COPY composable_keys (entity_key) FROM STDIN") as copy,
    ):
        for key in keys:
            copy.write_row((key,))
    yield "composable_keys"
