"""Sync diff speed and sync memory, measured beside their baselines in one run.

    python benchmarks/sync_diff.py [--members 10000000] [--churn 0.01]

1. Mirror diff of N members with `churn` of them leaving and as many joining, computed by
   the engine's SQL plan (current rows + full outer join against the snapshot), against
   the same diff in pandas (fetch key + value columns through Arrow, hash, outer merge).
2. Peak RSS of a whole mirror sync of N members to a file destination (every member is
   written: the heaviest run), in a fresh process, against a process that only imports
   the package (the floor).
Prints markdown tables; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from composable_dagster.destinations import destination_type
from composable_dagster.filters import compile_members
from composable_dagster.filters.schema import (
    AudienceDef,
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
)
from composable_dagster.sync import engine
from composable_dagster.sync.engine import SafetyConfig, SyncJob
from composable_dagster.sync.plan import SyncMode, resolve_field_mapping
from composable_dagster.warehouse.activation import ActivationStore

PARENT = ModelDef(
    id="customers", name="customers", entity_type=EntityType.PARENT, primary_key="customer_id",
    columns={n: Column(n, t) for n, t in (("customer_id", ColumnType.TEXT),
             ("email", ColumnType.TEXT), ("score", ColumnType.NUMBER),
             ("country", ColumnType.TEXT), ("plan", ColumnType.TEXT))},
    table="analytics.customers",
)  # fmt: skip
SCHEMA = CatalogSchema(
    models={"customers": PARENT}, audiences={"aud": AudienceDef("aud", "A", "customers", {})}
)
MAPPING = [
    {"source_column": c, "destination_field": c} for c in ("email", "score", "country", "plan")
]


def build_warehouse(path: Path, members: int) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA analytics")
        # score = position in a random order: "score < x" selects a random x members.
        con.execute(f"""
            CREATE TABLE analytics.customers AS
            SELECT printf('C%09d', i) AS customer_id,
                   printf('user%d@example.com', i) AS email,
                   row_number() OVER (ORDER BY hash(i)) - 1 AS score,
                   ['US', 'DE', 'GB', 'FR'][(i % 4 + 1)::BIGINT] AS country,
                   ['free', 'pro'][(i % 2 + 1)::BIGINT] AS plan
            FROM range({int(members * 1.02)}) t(i)""")


def materialize(store: ActivationStore, low: int, high: int) -> None:
    tree = {"type": "and", "children": [
        {"type": "condition", "condition_type": "property", "column": "score",
         "operator": "greater_than_or_equal", "value": low},
        {"type": "condition", "condition_type": "property", "column": "score",
         "operator": "less_than", "value": high}]}  # fmt: skip
    query = compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=datetime.now(UTC))
    store.replace_members(audience_id="aud", members=query.expression)


def job(out: Path) -> SyncJob:
    kind = destination_type("file")
    return SyncJob(
        sync_id="bench-sync", audience_id="aud", mode=SyncMode.MIRROR,
        fields=resolve_field_mapping(MAPPING, parent=PARENT, schema=SCHEMA, hashed_fields={}),
        parent=PARENT, schema=SCHEMA, destination=kind,
        destination_config=kind.parse_config({"path": str(out), "format": "csv"}),
        safety=SafetyConfig(max_remove_share=1.0),
    )  # fmt: skip


def diff_engine(store: ActivationStore, sync_job: SyncJob) -> tuple[float, dict[str, int]]:
    tables = engine._Tables(store, sync_job.sync_id, field_count=len(sync_job.fields))
    started = time.perf_counter()
    planned = engine._plan(store, sync_job, tables, now=datetime.now(UTC))[0]
    return time.perf_counter() - started, planned


def diff_pandas(
    warehouse: Path, snapshot: pd.DataFrame, low: int, high: int
) -> tuple[float, dict[str, int]]:
    """The usual application-side pipeline: fetch, hash, outer-merge."""
    started = time.perf_counter()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        current = (
            con.sql(
                "SELECT customer_id AS entity_key, email, score, country, plan FROM "
                f"analytics.customers WHERE score >= {low} AND score < {high}"
            )
            .to_arrow_table()
            .to_pandas()
        )
    current["row_hash"] = pd.util.hash_pandas_object(
        current[["email", "score", "country", "plan"]], index=False
    )
    merged = current[["entity_key", "row_hash"]].merge(
        snapshot, on="entity_key", how="outer", suffixes=("", "_old"), indicator=True
    )
    adds = int((merged["_merge"] == "left_only").sum())
    removes = int((merged["_merge"] == "right_only").sum())
    both = merged[merged["_merge"] == "both"]
    updates = int((both["row_hash"] != both["row_hash_old"]).sum())
    return time.perf_counter() - started, {"add": adds, "update": updates, "remove": removes}


# The process's peak RSS in kB. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec,
# so a child would show its parent's peak.
PEAK_KB = "re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)"

RSS_RUN = textwrap.dedent("""
    import dataclasses, re, sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    sys.path.insert(0, {bench_dir!r})
    from sync_diff import job
    from composable_dagster.sync.engine import run_sync
    from composable_dagster.warehouse.activation import ActivationStore
    store = ActivationStore(warehouse_url="duckdb:///{warehouse}", home=Path({home!r}),
                            memory_limit={memory_limit!r})
    t = time.perf_counter()
    # Another sync of the same audience: an empty snapshot, so every member is written.
    sync_job = dataclasses.replace(job(Path({out!r})), sync_id="rss-sync")
    report = run_sync(store, sync_job, run_id="rss", now=datetime.now(UTC))
    print(time.perf_counter() - t, report.added, {peak_kb})
""")


def run_child(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=10_000_000)
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--memory-limit", default="1GB", help="activation store DuckDB limit")
    args = parser.parse_args()
    n, moved = args.members, int(args.members * args.churn)
    work = Path(tempfile.mkdtemp(prefix="composable-diff-"))
    warehouse = work / "warehouse.duckdb"
    t = time.perf_counter()
    build_warehouse(warehouse, n)
    print(f"built {n:,} customers in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    store = ActivationStore(
        warehouse_url=f"duckdb:///{warehouse}", home=work / "home", memory_limit=args.memory_limit
    )
    sync_job = job(work / "out")
    materialize(store, 0, n)
    diff_engine(store, sync_job)  # first plan creates the snapshot table
    with store.transaction() as conn:  # "delivered": the snapshot holds every member
        tables = engine._Tables(store, sync_job.sync_id, field_count=len(sync_job.fields))
        conn.exec_driver_sql(
            f"INSERT INTO {tables.snapshot.sql('duckdb')} SELECT entity_key, row_hash, "
            f"f0, f1, f2, f3 FROM {tables.changes.sql('duckdb')}"
        )
    # Churn: the first `moved` leave, `moved` new ones join.
    materialize(store, moved, n + moved)
    engine_seconds, engine_plan = diff_engine(store, sync_job)

    with duckdb.connect(str(warehouse), read_only=True) as con:
        snapshot = (
            con.sql(
                "SELECT customer_id AS entity_key, email, score, country, plan FROM "
                f"analytics.customers WHERE score < {n}"
            )
            .to_arrow_table()
            .to_pandas()
        )
    snapshot["row_hash"] = pd.util.hash_pandas_object(
        snapshot[["email", "score", "country", "plan"]], index=False
    )
    snapshot = snapshot[["entity_key", "row_hash"]]
    pandas_seconds, pandas_plan = diff_pandas(warehouse, snapshot, moved, n + moved)
    assert engine_plan == pandas_plan, (engine_plan, pandas_plan)

    print(
        f"\n### Mirror diff, {n:,} members, {args.churn:.0%} churn ({moved:,} in, {moved:,} out)\n"
    )
    print("| approach | seconds | vs engine |")
    print("|---|---|---|")
    print(f"| engine SQL plan (DuckDB) | {engine_seconds:.2f} | 1.0x |")
    ratio = pandas_seconds / engine_seconds
    print(f"| pandas fetch + hash + merge | {pandas_seconds:.2f} | {ratio:.1f}x |")
    print(f"\nplan: {engine_plan}")

    del snapshot
    floor_kb = run_child(f"import composable_dagster.sync.engine, re; print({PEAK_KB})")
    floor_rss = int(floor_kb) / 1024
    code = RSS_RUN.format(
        bench_dir=str(Path(__file__).parent),
        warehouse=warehouse,
        home=str(work / "home"),
        out=str(work / "rss-out"),
        memory_limit=args.memory_limit,
        peak_kb=PEAK_KB,
    )
    line = run_child(code)
    seconds, sent, rss_kb = line.split()
    print(f"\n### Peak RSS, mirror sync of {n:,} members to CSV (every member written), "
          f"DuckDB memory_limit {args.memory_limit}\n")  # fmt: skip
    print("| process | peak RSS MB | seconds | rows/s |")
    print("|---|---|---|---|")
    print(f"| import only (floor) | {floor_rss:.0f} | - | - |")
    rate = int(sent) / float(seconds)
    print(f"| full sync | {int(rss_kb) / 1024:.0f} | {float(seconds):.1f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
