"""Sync diff speed and sync memory, measured beside their baselines in one run.

    python benchmarks/sync_diff.py [--members 10000000] [--churn 0.01] [--updates 0.005]

Setup: a DuckDB warehouse of `members * 1.02` customers; an audience of N members,
materialized as the audience asset does (with the row hash of the sync's mapping); an
upsert sync to CSV files that delivered all N (a real first run). Then `churn` of the
members leave, as many join, `updates` of the stable ones change a mapped value, and the
audience is materialized again.

1. The diff, like for like: what the engine spends on it (the row hashes its
   materialization stores, over a membership-only one; the plan, median of 3; the values
   of the changed rows) against pandas done well (DuckDB hashes key and columns, pandas
   outer-merges the int64 hashes; no values fetched: favourable to pandas) and a typical
   application-side pipeline (fetch key and mapped columns through Arrow,
   `hash_pandas_object`, outer merge); and the same two in polars: DuckDB's hashes in a
   full join, and key and mapped columns through `pl.from_arrow`, hashed by
   `DataFrame.hash_rows` (the fastest row hash we measured: half the time of
   `pl.struct(...).hash()`) and full-joined on the key; both joins lazy, so that only the
   counts are materialized. All must find the same counts. The plan is incremental here
   (keys from the membership log); the diff alone, and the full comparison of every member
   (first run, mapping change, a sync behind the log), are shown beside it, with both
   materializations.
2. Peak RSS of whole syncs in fresh processes, against a process that only imports the
   package (the floor): the sync's run after the churn (changes only written), and a first
   mirror of all N members to another CSV sync (every member written: the heaviest run).

Prints markdown tables; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from composable_dagster.destinations import DestinationScope, destination_type
from composable_dagster.filters import compile_members
from composable_dagster.filters.schema import (
    AudienceDef,
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
)
from composable_dagster.settings import Settings
from composable_dagster.spec.sync import SafetyConfig, SyncMode, resolve_field_mapping
from composable_dagster.sync import engine
from composable_dagster.sync.engine import SyncJob
from composable_dagster.sync.plan import membership_row_hash
from composable_dagster.warehouse.activation import ActivationStore

try:
    import polars as pl
except ImportError as error:  # a benchmark-only dependency, not the product's
    raise ImportError("the polars baselines need polars: pip install -e '.[bench]'") from error

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
MAPPED = ("email", "score", "country", "plan")
MAPPING = [{"source_column": c, "destination_field": c} for c in MAPPED]
FIELDS = resolve_field_mapping(MAPPING, parent=PARENT, schema=SCHEMA, hashed_fields={})
ROW_HASH = membership_row_hash(FIELDS, dialect="duckdb")
assert ROW_HASH is not None
MEMBER_COLUMNS = f"customer_id AS entity_key, {', '.join(MAPPED)}"
# pandas and polars done well: DuckDB hashes the key and the mapped columns (uint64s).
HASH_COLUMNS = f"hash(customer_id) AS k, hash({', '.join(MAPPED)}) AS h"


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


def materialize(
    store: ActivationStore, low: int, high: int, *, row_hashes: bool = True, audience: str = "aud"
) -> float:
    """The audience asset's work; returns its seconds."""
    tree = {"type": "and", "children": [
        {"type": "condition", "condition_type": "property", "column": "score",
         "operator": "greater_than_or_equal", "value": low},
        {"type": "condition", "condition_type": "property", "column": "score",
         "operator": "less_than", "value": high}]}  # fmt: skip
    query = compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=datetime.now(UTC))
    started = time.perf_counter()
    store.replace_members(
        audience_id=audience, members=query.expression,
        row_hashes={ROW_HASH.name: ROW_HASH.columns} if row_hashes else None,
    )  # fmt: skip
    return time.perf_counter() - started


def job(out: Path, *, sync_id: str = "bench-sync", mode: SyncMode = SyncMode.UPSERT) -> SyncJob:
    """A file sync writing into `out` (a directory named `out`: the export directory of a
    workspace called so, under its parent)."""
    kind = destination_type("file")
    scope = DestinationScope(export_root=out.parent, workspace_slug=out.name)
    return SyncJob(
        sync_id=sync_id, audience_id="aud", mode=mode, fields=FIELDS,
        parent=PARENT, schema=SCHEMA, destination=kind,
        destination_config=kind.parse_config({"path": ".", "format": "csv"}, scope=scope),
        safety=SafetyConfig(max_remove_share=1.0),
    )  # fmt: skip


def timed_plan(
    store: ActivationStore, sync_job: SyncJob, *, full: bool = False
) -> tuple[float, dict[str, int]]:
    """One plan; `full` forgets the membership version the sync caught up with first, as a
    mapping change or a sync behind the log would, so every member is compared."""
    tables = engine._Tables(store, sync_job.sync_id, field_count=len(sync_job.fields))
    if full:
        with store.transaction() as conn:
            caught_up = engine._state(store, conn, tables, sync_job.sync_id)["membership_version"]
        engine._set_state(store, tables, sync_job.sync_id, membership_version=None)
    started = time.perf_counter()
    plan = engine._plan(store, sync_job, tables, now=datetime.now(UTC))
    seconds = time.perf_counter() - started
    if full:
        engine._set_state(store, tables, sync_job.sync_id, membership_version=caught_up)
    assert plan.incremental is not full
    return seconds, plan.planned


def timed_fetch(store: ActivationStore, sync_job: SyncJob) -> tuple[float, dict[str, int]]:
    tables = engine._Tables(store, sync_job.sync_id, field_count=len(sync_job.fields))
    started = time.perf_counter()
    counts = engine._fetch_changes(store, sync_job, tables, now=datetime.now(UTC))
    return time.perf_counter() - started, counts


def members_arrow(warehouse: Path, columns: str, where: str) -> pa.Table:
    """`columns` of the members, through Arrow (pandas 3's `.df()` is slower)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(f"SELECT {columns} FROM analytics.customers WHERE {where}").to_arrow_table()


def current_frame(warehouse: Path, where: str) -> pd.DataFrame:
    """Key and row hash of the members, hashed in pandas."""
    frame = members_arrow(warehouse, MEMBER_COLUMNS, where).to_pandas()
    frame["row_hash"] = pd.util.hash_pandas_object(frame[list(MAPPED)], index=False)
    return frame[["entity_key", "row_hash"]]


def diff_pandas(warehouse: Path, snapshot: pd.DataFrame, where: str) -> tuple[float, dict]:
    """The usual application-side pipeline: fetch, hash, outer-merge."""
    started = time.perf_counter()
    current = current_frame(warehouse, where)
    merged = current.merge(
        snapshot, on="entity_key", how="outer", suffixes=("", "_old"), indicator=True
    )
    adds = int((merged["_merge"] == "left_only").sum())
    removes = int((merged["_merge"] == "right_only").sum())
    both = merged[merged["_merge"] == "both"]
    updates = int((both["row_hash"] != both["row_hash_old"]).sum())
    return time.perf_counter() - started, {"add": adds, "update": updates, "remove": removes}


def hashed_frame(warehouse: Path, where: str) -> pd.DataFrame:
    """pandas done well: pandas only holds and merges the two hash columns."""
    return members_arrow(warehouse, HASH_COLUMNS, where).to_pandas()


def diff_pandas_well(warehouse: Path, snapshot: pd.DataFrame, where: str) -> tuple[float, dict]:
    """Hashes in SQL, an outer merge on int64 key hashes: the strongest pandas diff we know
    (it yields counts and key hashes only; the changed rows' values are still to fetch)."""
    started = time.perf_counter()
    current = hashed_frame(warehouse, where)
    merged = current.merge(snapshot, on="k", how="outer", suffixes=("", "_old"), indicator=True)
    adds = int((merged["_merge"] == "left_only").sum())
    removes = int((merged["_merge"] == "right_only").sum())
    both = merged[merged["_merge"] == "both"]
    updates = int((both["h"] != both["h_old"]).sum())
    return time.perf_counter() - started, {"add": adds, "update": updates, "remove": removes}


def current_polars(warehouse: Path, where: str) -> pl.DataFrame:
    """Key and row hash of the members, hashed in polars."""
    # Kept in DuckDB's chunks: a rechunk is a copy the join does not need.
    frame = pl.from_arrow(members_arrow(warehouse, MEMBER_COLUMNS, where), rechunk=False)
    return frame.select("entity_key", row_hash=frame.select(MAPPED).hash_rows())


def hashed_polars(warehouse: Path, where: str) -> pl.DataFrame:
    """polars done well: polars only holds and joins the two hash columns."""
    return pl.from_arrow(members_arrow(warehouse, HASH_COLUMNS, where), rechunk=False)


def joined_counts(
    current: pl.DataFrame, snapshot: pl.DataFrame, *, key: str, row_hash: str
) -> dict[str, int]:
    """Adds, updates and removes from a full join on `key`, counted in the lazy query so the
    joined frame is never materialized."""
    counts = (
        current.lazy()
        .join(snapshot.lazy(), on=key, how="full", suffix="_old")
        .select(
            add=pl.col(f"{key}_old").is_null().sum(),
            # Unmatched rows compare to null, which the sum skips.
            update=(pl.col(row_hash) != pl.col(f"{row_hash}_old")).sum(),
            remove=pl.col(key).is_null().sum(),
        )
        .collect()
    )
    return {op: int(value) for op, value in counts.row(0, named=True).items()}


def diff_polars(warehouse: Path, snapshot: pl.DataFrame, where: str) -> tuple[float, dict]:
    """The typical pipeline in polars: fetch, hash, full join."""
    started = time.perf_counter()
    counts = joined_counts(
        current_polars(warehouse, where), snapshot, key="entity_key", row_hash="row_hash"
    )
    return time.perf_counter() - started, counts


def diff_polars_well(warehouse: Path, snapshot: pl.DataFrame, where: str) -> tuple[float, dict]:
    """Hashes in SQL, a full join on uint64 key hashes (counts only, as pandas done well)."""
    started = time.perf_counter()
    counts = joined_counts(hashed_polars(warehouse, where), snapshot, key="k", row_hash="h")
    return time.perf_counter() - started, counts


def versus(seconds: float, engine_seconds: float, *, bold: bool = False) -> str:
    """`seconds` against the engine's, as the table writes it: "3.2x slower", "1.5x faster"."""
    if seconds >= engine_seconds:
        ratio, word = seconds / engine_seconds, "slower"
    else:
        ratio, word = engine_seconds / seconds, "faster"
    return f"**{ratio:.1f}x** {word}" if bold else f"{ratio:.1f}x {word}"


# The process's peak RSS in kB. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec,
# so a child would show its parent's peak.
PEAK_KB = "re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)"

RSS_RUN = textwrap.dedent("""
    import re, sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    sys.path.insert(0, {bench_dir!r})
    from sync_diff import job
    from composable_dagster.sync.engine import run_sync
    from composable_dagster.spec.sync import SyncMode
    from composable_dagster.warehouse.activation import ActivationStore
    store = ActivationStore(warehouse_url="duckdb:///{warehouse}", home=Path({home!r}),
                            memory_limit={memory_limit!r})
    t = time.perf_counter()
    sync_job = job(Path({out!r}), sync_id={sync_id!r}, mode=SyncMode({mode!r}))
    report = run_sync(store, sync_job, run_id={run_id!r}, now=datetime.now(UTC))
    sent = report.added + report.updated + report.removed
    print(time.perf_counter() - t, sent, report.diff, {peak_kb})
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
    parser.add_argument("--updates", type=float, default=0.005)
    parser.add_argument(
        "--memory-limit",
        default=Settings().activation_memory_limit,
        help="activation store DuckDB limit (default: the product's default)",
    )
    args = parser.parse_args()
    n, moved = args.members, int(args.members * args.churn)
    updated_every = round(1 / args.updates) if args.updates else 0
    work = Path(tempfile.mkdtemp(prefix="composable-diff-"))
    warehouse = work / "warehouse.duckdb"
    t = time.perf_counter()
    build_warehouse(warehouse, n)
    print(f"built {n:,} customers in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    store = ActivationStore(
        warehouse_url=f"duckdb:///{warehouse}", home=work / "home", memory_limit=args.memory_limit
    )
    materialize(store, 0, n)
    t = time.perf_counter()
    first = engine.run_sync(store, job(work / "out"), run_id="first", now=datetime.now(UTC))
    print(f"first run: {first.added:,} delivered in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)  # fmt: skip
    # Each baseline's own copy of the same snapshot, taken before the churn.
    baselines = {
        "pandas": (diff_pandas, current_frame),
        "pandas_well": (diff_pandas_well, hashed_frame),
        "polars": (diff_polars, current_polars),
        "polars_well": (diff_polars_well, hashed_polars),
    }
    snapshots = {name: frame(warehouse, f"score < {n}") for name, (_, frame) in baselines.items()}

    # Churn: the first `moved` leave, `moved` new ones join; some stable members change.
    if updated_every:
        with duckdb.connect(str(warehouse)) as con:
            con.execute(
                "UPDATE analytics.customers SET plan = 'enterprise' "
                f"WHERE score >= {moved} AND score < {n} AND score % {updated_every} = 7"
            )
    # The same change for an audience without syncs: no row hash to store, nothing to log.
    materialize(store, 0, n, row_hashes=False, audience="plain")
    plain = materialize(store, moved, n + moved, row_hashes=False, audience="plain")
    hashed = materialize(store, moved, n + moved)
    sync_job = job(work / "out")
    runs = [timed_plan(store, sync_job) for _ in range(3)]
    engine_seconds = statistics.median(s for s, _ in runs)
    engine_plan = {op: runs[0][1][op] for op in ("add", "update", "remove")}
    full_runs = [timed_plan(store, sync_job, full=True) for _ in range(3)]
    full_seconds = statistics.median(s for s, _ in full_runs)
    assert all(p == runs[0][1] for _, p in runs + full_runs)
    fetch_seconds, fetched = timed_fetch(store, sync_job)

    seconds: dict[str, float] = {}
    for name, (diff, _) in baselines.items():
        # Popped: one copy at a time is freed once used (10M members: ~400 MB each).
        seconds[name], found = diff(
            warehouse, snapshots.pop(name), f"score >= {moved} AND score < {n + moved}"
        )
        assert engine_plan == found, (name, engine_plan, found)
    # Like for like: what the engine does that the baselines' pipelines do too, wherever they
    # run: the row hashes (stored by the materialization: its extra time over a
    # membership-only one), the diff, and the values of the changed rows (the typical
    # pipelines hold those already).
    engine_total = max(hashed - plain, 0.0) + engine_seconds + fetch_seconds

    def listed(values: list[tuple[float, dict]]) -> str:
        return ", ".join(f"{s:.2f}" for s, _ in values)

    print(f"\n### Diff, {n:,} members: {moved:,} in, {moved:,} out, "
          f"{engine_plan['update']:,} updated\n")  # fmt: skip
    print("| step | seconds | vs. like-for-like engine |")
    print("|---|---|---|")
    print(f"| **engine, like for like**: row hashes in the materialization "
          f"({max(hashed - plain, 0.0):.2f}) + incremental diff ({engine_seconds:.2f}) + "
          f"values of the {sum(fetched.values()):,} changed rows ({fetch_seconds:.2f}) | "
          f"**{engine_total:.2f}** | 1.0x |")  # fmt: skip
    labels = {
        "pandas_well": "pandas done well: hashes in SQL, merge on int64 key hashes (no values yet)",
        "pandas": "pandas, typical: fetch key + columns, `hash_pandas_object`, outer merge",
        "polars_well": "polars done well: hashes in SQL, full join on uint64 key hashes "
        "(no values yet)",
        "polars": "polars, typical: `pl.from_arrow` key + columns, `hash_rows`, full join",
    }
    for name, label in labels.items():
        ratio = versus(seconds[name], engine_total, bold=name.endswith("_well"))
        print(f"| {label} | {seconds[name]:.2f} | {ratio} |")
    print(f"| engine diff alone (incremental: keys logged since the last run; median of "
          f"{listed(runs)}) | {engine_seconds:.2f} | |")  # fmt: skip
    print(f"| engine diff alone, full comparison of every member (median of "
          f"{listed(full_runs)}) | {full_seconds:.2f} | |")  # fmt: skip
    print(f"| audience materialization, membership only | {plain:.2f} | |")
    print(f"| audience materialization with the sync's row hash and the log | {hashed:.2f} | |")
    print(f"\nplan: {engine_plan}; DuckDB memory_limit {args.memory_limit}")

    # The floor imports what the measured children import (this script: pandas, polars).
    floor_kb = run_child(
        f"import re, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import sync_diff; print({PEAK_KB})"
    )
    print("\n### Peak RSS of whole syncs in a fresh process "
          f"(DuckDB memory_limit {args.memory_limit})\n")  # fmt: skip
    print("| process | diff | peak RSS MB | seconds | rows sent | rows/s |")
    print("|---|---|---|---|---|---|")
    print(f"| import only (floor) | | {int(floor_kb) / 1024:.0f} | - | - | - |")
    cases = [
        ("the sync's run after the churn (changes only) to CSV", "bench-sync", "upsert"),
        ("first mirror of every member to CSV", "first-mirror", "mirror"),
    ]
    for label, sync_id, mode in cases:
        code = RSS_RUN.format(
            bench_dir=str(Path(__file__).parent), warehouse=warehouse, home=str(work / "home"),
            out=str(work / "out"), memory_limit=args.memory_limit, peak_kb=PEAK_KB,
            sync_id=sync_id, mode=mode, run_id=f"rss-{sync_id}",
        )  # fmt: skip
        seconds, sent, diff, rss_kb = run_child(code).split()
        rate = int(sent) / float(seconds)
        print(f"| {label} | {diff} | {int(rss_kb) / 1024:.0f} | {float(seconds):.1f} | "
              f"{int(sent):,} | {rate:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
