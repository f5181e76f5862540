"""Deliver 1M rows x 5 columns to PostgreSQL through the `postgres` connector.

Synthetic rows are generated in DuckDB and handed to the connector as Arrow batches of the
type's batch size (50,000), as the sync engine does. Passes over one scratch database:

- connector, add: every row is new (binary COPY straight into the keyed table);
- connector, re-sent add: the same batches again, every row conflicts and is unchanged (the
  recovery of a crashed run: binary COPY into TEMP staging + INSERT … ON CONFLICT);
- connector, update: every row changed (staging + INSERT … ON CONFLICT DO UPDATE), into the
  table the connector created (fillfactor 50 for a sync that updates rows: HOT updates);
- connector, update into a packed table: the same rows first added, then changed, in a
  table created beforehand with PostgreSQL's default fillfactor (100), as a user's own table
  would be: every update writes a new index entry;
- raw COPY: pyarrow CSV through psycopg COPY into an identical keyed table, no connector
  (the reference the performance facts quote);
- row by row: SQLAlchemy `insert()` for a sample (`--sample`), in one transaction,
  extrapolated to rows/s: executed with lists of 1,000 rows (what performance-facts.md
  measured at ~19k rows/s: SQLAlchemy sends them one row per statement; the baseline of
  the ratios), and executed once per row.

A scratch database is created on the server of `--url` (default: COMPOSABLE_TEST_PG_URL) and
dropped afterwards. Prints a markdown table, then both tables' sizes after the add and after
the update.

    python benchmarks/delivery_postgres.py --rows 1000000
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from composable_dagster.destinations.base import (
    DestinationScope,
    Operation,
    RecordBatch,
    SyncContext,
    SyncMode,
)
from composable_dagster.destinations.postgres import PostgresDestination


def generate(rows: int) -> pa.Table:
    """`rows` members: the key plus 5 typed columns, as a warehouse query would return them."""
    con = duckdb.connect()
    return con.sql(f"""
        SELECT 'c' || lpad(i::VARCHAR, 9, '0') AS entity_key,
               'user' || i || '@example.org' AS email,
               (hash(i) % 100000)::BIGINT AS points,
               (hash(i * 3) % 1000000) / 100.0 AS ltv,
               i % 3 = 0 AS opted_in,
               TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL 1 SECOND AS signed_up_at
        FROM range({rows}) t(i)
    """).to_arrow_table()


def deliver_all(url: str, data: pa.Table, *, table: str, operation: Operation) -> float:
    """Seconds to deliver `data` as `operation` batches through one connector run."""
    destination = PostgresDestination()
    # A network database: the scope (where local files may go) does not come into it.
    scope = DestinationScope(export_root=Path(tempfile.gettempdir()), workspace_slug="bench")
    config = destination.parse_config({"url": url, "table": table}, scope=scope)
    context = SyncContext(sync_id="bench", run_id=uuid.uuid4().hex, mode=SyncMode.UPSERT)
    size = destination.batch_size(config)
    keys = data.column("entity_key").to_pylist()
    rows = data.drop_columns(["entity_key"])
    started = time.perf_counter()
    connector = destination.open(config, context=context)
    try:
        for start in range(0, data.num_rows, size):
            batch = RecordBatch(
                operation=operation,
                keys=keys[start : start + size],
                rows=rows.slice(start, size),
                idempotency_key=f"bench-{start}",
            )
            result = connector.deliver(batch)
            assert not result.failed, result.failed
        connector.stage()
    finally:
        connector.close(success=True)
    return time.perf_counter() - started


def create_packed(url: str, name: str) -> None:
    """The benchmark's table as a user would create it: PostgreSQL's default fillfactor."""
    engine = sa.create_engine(url)
    sa.Table(name, sa.MetaData(), *member_columns()).create(engine)
    engine.dispose()


def member_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("entity_key", sa.Text, primary_key=True),
        sa.Column("email", sa.Text),
        sa.Column("points", sa.BigInteger),
        sa.Column("ltv", sa.Double),
        sa.Column("opted_in", sa.Boolean),
        sa.Column("signed_up_at", sa.DateTime(timezone=True)),
    ]


def table_size(url: str, name: str) -> int:
    """Bytes of the table with its indexes and TOAST."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        size = conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": name}).scalar()
    engine.dispose()
    return int(size)


def check_updated(url: str, name: str, *, rows: int, points: pa.Scalar) -> None:
    table = sa.table(name, sa.column("points"))
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        query = sa.select(sa.func.count(), sa.func.sum(table.c.points)).select_from(table)
        count, total = conn.execute(query).one()
    engine.dispose()
    assert count == rows, f"{count} rows in {name}, expected {rows}"
    assert total == points.as_py(), f"the updates were not applied to {name}"


def raw_copy(url: str, data: pa.Table) -> float:
    """Seconds for a plain CSV COPY of `data` into a fresh keyed table (no connector)."""
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE members_raw (entity_key text PRIMARY KEY, email text, points bigint,"
            " ltv double precision, opted_in boolean, signed_up_at timestamptz)"
        )
        started = time.perf_counter()
        buffer = io.BytesIO()
        pa_csv.write_csv(data, buffer, pa_csv.WriteOptions(include_header=False))
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy("COPY members_raw FROM STDIN (FORMAT csv)") as copy,
        ):
            copy.write(buffer.getbuffer())
        return time.perf_counter() - started


def row_by_row(url: str, data: pa.Table, *, sample: int, batch: int) -> float:
    """Seconds to insert the first `sample` rows with SQLAlchemy `insert()`, executed with
    `batch` rows at a time (1: once per row)."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    table = sa.Table(f"members_row_by_row_{batch}", metadata, *member_columns())
    metadata.create_all(engine)
    records = data.slice(0, sample).to_pylist()
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            conn.execute(table.insert(), chunk if batch > 1 else chunk[0])
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="rows for row-by-row")
    parser.add_argument("--url", default=os.environ.get("COMPOSABLE_TEST_PG_URL"))
    args = parser.parse_args()
    if not args.url:
        parser.error("--url or COMPOSABLE_TEST_PG_URL is required")

    data = generate(args.rows)
    server = sa.make_url(args.url)
    scratch = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{scratch}"'))  # scratch name built above
    url = server.set(database=scratch).render_as_string(hide_password=False)
    try:
        # The reference runs first, on the fresh database, so later passes' dead tuples and
        # checkpoints do not slow it down.
        raw = raw_copy(url, data)
        add = deliver_all(url, data, table="members", operation=Operation.ADD)
        again = deliver_all(url, data, table="members", operation=Operation.ADD)
        changed = data.set_column(2, "points", pc.add(data.column("points"), 1))
        sizes = {"members": [table_size(url, "members")]}
        update = deliver_all(url, changed, table="members", operation=Operation.UPDATE)
        sizes["members"].append(table_size(url, "members"))
        create_packed(url, "members_packed")
        deliver_all(url, data, table="members_packed", operation=Operation.ADD)
        sizes["members_packed"] = [table_size(url, "members_packed")]
        packed = deliver_all(url, changed, table="members_packed", operation=Operation.UPDATE)
        sizes["members_packed"].append(table_size(url, "members_packed"))
        points = pc.sum(changed.column("points"))
        for name in sizes:
            check_updated(url, name, rows=args.rows, points=points)
        sample = min(args.sample, args.rows)
        batched = row_by_row(url, data, sample=sample, batch=1_000)
        single = row_by_row(url, data, sample=sample, batch=1)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()

    slow_rate = sample / batched
    results = [
        ("connector: add, new rows (binary COPY into the table)", add),
        ("connector: add re-sent, rows unchanged (staging + ON CONFLICT)", again),
        ("connector: update, rows changed, table it created (fillfactor 50)", update),
        ("connector: update, rows changed, packed table (fillfactor 100)", packed),
        ("reference: raw CSV COPY into a keyed table, no connector", raw),
        (
            f"SQLAlchemy insert(), lists of 1,000 rows (sample of {sample:,}, extrapolated)",
            args.rows / slow_rate,
        ),
        (
            f"SQLAlchemy insert(), one execute per row (sample of {sample:,}, extrapolated)",
            args.rows / (sample / single),
        ),
    ]
    print(f"PostgreSQL delivery, {args.rows:,} rows x 5 columns, batches of 50,000\n")
    print("| approach | rows | seconds | rows/s | ratio to insert() in lists of 1,000 |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in results:
        rate = args.rows / seconds
        print(
            f"| {name} | {args.rows:,} | {seconds:.2f} | {rate:,.0f} | {rate / slow_rate:,.1f}x |"
        )
    print("\n| table | MB after the add | MB after the update |")
    print("|---|---:|---:|")
    for name, (added, updated) in sizes.items():
        print(f"| {name} | {added / 1e6:,.0f} | {updated / 1e6:,.0f} |")


if __name__ == "__main__":
    main()
