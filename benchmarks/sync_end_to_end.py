"""A sync to PostgreSQL end to end, through real Dagster runs, beside a hand-written script.

    python benchmarks/sync_end_to_end.py [--members 1000000] [--churn 0.01] [--updates 0.005]
                                         [--pg-url postgresql+psycopg://...]
                                         [--activation-memory-limit 384MB]

Setup: `composable init --demo` in a temporary directory, whose `analytics.customers` is
then replaced by `members * (1 + 2 * churn)` generated customers (members have a positive
lifetime value, the others 0); `composable serve`; through the API an audience
(lifetime_value > 0), a PostgreSQL destination (a scratch database on the server of
`--pg-url`, default COMPOSABLE_TEST_PG_URL) and a mirror sync of email, lifetime value and
country. Three stages, each a real run triggered through the API (what a client or a
schedule does; the API's launch starts it at once) and timed from the trigger until the
API reports it completed:

1. first run: every member added;
2. churn: `churn` of the members leave, as many join, `updates` of the rest change country;
3. no change: triggered again.

Beside each, in the same session, the strongest baseline: a hand-written script doing
the same sync (HAND_WRITTEN below: DuckDB computes the members and their row hashes, diffs
them against its own snapshot and writes the changed rows as CSV, which PostgreSQL's COPY
loads into a staging table; then one INSERT … ON CONFLICT and one DELETE), run as a fresh
process as a run worker is. After each stage both destination tables must hold the same rows. Also
reported: the run worker's peak RSS (VmHWM, sampled while the run lives), and the
activation store's rows written per member on the first run.

Prints a markdown table with the goals beside the results; docs/benchmarks.md records runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import duckdb
import httpx
import psycopg
import sqlalchemy as sa
from _serve import DemoSystem, demo_init, send, serving

from composable_dagster.names import TAG_RUN_WORKER, parse_run_worker_tag

# The same sync by hand: what an engineer who knows DuckDB and PostgreSQL would write.
HAND_WRITTEN = textwrap.dedent('''
    import sys, duckdb, psycopg
    warehouse, state, pg_url, table = sys.argv[1:5]
    con = duckdb.connect(state)
    con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    con.execute("CREATE TABLE IF NOT EXISTS snap (k VARCHAR, h UBIGINT)")
    con.execute("""CREATE TEMP TABLE cur AS SELECT CAST(customer_id AS VARCHAR) AS k,
        email, lifetime_value AS ltv, country, hash(email, lifetime_value, country) AS h
        FROM wh.analytics.customers WHERE lifetime_value > 0""")
    con.execute("""CREATE TEMP TABLE put AS SELECT c.k, c.email, c.ltv, c.country FROM cur c
        LEFT JOIN snap s ON s.k = c.k WHERE s.k IS NULL OR s.h <> c.h""")
    con.execute("CREATE TEMP TABLE gone AS SELECT k FROM snap ANTI JOIN cur USING (k)")
    first = con.execute("SELECT count(*) FROM snap").fetchone()[0] == 0
    with psycopg.connect(pg_url) as pg:
        # The table the product's connector creates for a mirror sync: half-full pages.
        pg.execute(f"""CREATE TABLE IF NOT EXISTS {table} (entity_key TEXT PRIMARY KEY,
            email TEXT, ltv DOUBLE PRECISION, country TEXT) WITH (fillfactor = 50)""")
        pg.execute("CREATE TEMP TABLE stage (entity_key TEXT, email TEXT, "
                   "ltv DOUBLE PRECISION, country TEXT) ON COMMIT DROP")
        # DuckDB writes the changed rows as CSV (in parallel), PostgreSQL's COPY reads it:
        # straight into the table on the first run, else into staging for one upsert.
        csv_path = state + ".put.csv"
        con.execute(f"COPY put TO '{csv_path}' (HEADER false)")
        into = table if first else "stage"
        with open(csv_path, "rb") as f:
            with pg.cursor().copy(f"COPY {into} FROM STDIN (FORMAT csv)") as copy:
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
        if not first:
            pg.execute(f"""INSERT INTO {table} AS t SELECT * FROM stage
                ON CONFLICT (entity_key) DO UPDATE SET email = EXCLUDED.email,
                ltv = EXCLUDED.ltv, country = EXCLUDED.country""")
        gone = [r[0] for r in con.execute("SELECT k FROM gone").fetchall()]
        pg.execute(f"DELETE FROM {table} WHERE entity_key = ANY(%s)", [gone])
    con.execute("CREATE OR REPLACE TABLE snap AS SELECT k, h FROM cur")
''')

GOALS = {
    "first run": "≥ 200k rows/s end to end",
    "churn": "≤ 1.3x the script at 1M, ≤ 1.1x at 10M",
    "no change": "≤ 1.5x the script",
}


def _scratch_database(server_url: str) -> str:
    """A new database on the server of `server_url`; returns its psycopg URL."""
    name = f"bench_e2e_{uuid.uuid4().hex[:8]}"
    url = sa.make_url(server_url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    parsed = sa.make_url(url)
    engine = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    engine.dispose()


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _write_warehouse(path: Path, sql: str) -> None:
    """Run `sql` on the demo warehouse, waiting out a reader that holds it (the API keeps it
    open a few seconds after a request)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with duckdb.connect(str(path)) as con:
                con.execute(sql)
            return
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _generate(path: Path, members: int, churn: float) -> None:
    others = int(members * 2 * churn) or 1
    _write_warehouse(
        path,
        f"""
        CREATE OR REPLACE TABLE analytics.customers AS
        SELECT i AS customer_id, 'user' || i || '@example.com' AS email,
               CASE WHEN i < {members} THEN 1 + (i % 5000) ELSE 0 END::DOUBLE
                   AS lifetime_value,
               ['US', 'DE', 'FR', 'GB', 'JP'][1 + (i % 5)] AS country,
               DATE '2024-01-01' + CAST(i % 365 AS INTEGER) AS signup_date
        FROM range({members + others}) t(i)""",
    )


def _churn(path: Path, members: int, churn: float, updates: float) -> None:
    moved, changed = int(members * churn), int(members * updates)
    _write_warehouse(
        path,
        f"""
        UPDATE analytics.customers SET lifetime_value = 0 WHERE customer_id < {moved};
        UPDATE analytics.customers SET lifetime_value = 7 WHERE customer_id >= {members}
            AND customer_id < {members + moved};
        UPDATE analytics.customers SET country = 'ZZ' WHERE customer_id >= {moved}
            AND customer_id < {moved + changed};""",
    )


class PeakRss:
    """Samples the run worker's VmHWM (its peak RSS) while the run lives."""

    def __init__(self, system: DemoSystem, run_id: str) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(system, run_id), daemon=True)
        self._thread.start()

    def _sample(self, system: DemoSystem, run_id: str) -> None:
        pid = None
        while not self._stop.is_set():
            if pid is None:
                tag = system.dagster.run(run_id).tags.get(TAG_RUN_WORKER)
                worker = parse_run_worker_tag(tag) if tag else None
                pid = worker[1] if worker else None
            if pid is not None:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    kb = int(status.split("VmHWM:")[1].split()[0])
                    self.peak_mb = max(self.peak_mb, kb / 1024)
                except (OSError, IndexError):
                    pass
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


_STEP_EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename
      ... on MessageEvent { timestamp stepKey } } }
  }
}"""


def _phases(system: DemoSystem, run_id: str, triggered_at: float, done_at: float) -> str:
    """Where a run's time went: until its worker started it, each step, and the rest."""
    events = system.dagster.query(_STEP_EVENTS, {"runId": run_id})["logsForRun"]["events"]
    at: dict[str, float] = {}
    for event in events:
        if "timestamp" in event:
            name, step = event["__typename"], event.get("stepKey")
            at.setdefault(f"{name}:{step}" if step else name, int(event["timestamp"]) / 1000)
    steps = sorted(
        (at[k], k.split(":", 1)[1]) for k in at if k.startswith("ExecutionStepStartEvent:")
    )
    parts = [f"to run start {at['RunStartEvent'] - triggered_at:.2f}"]
    last = at["RunStartEvent"]
    for started, step in steps:
        ended = at.get(f"ExecutionStepSuccessEvent:{step}", started)
        parts.append(f"gap {started - last:.2f}, {step.split('__')[-1]} {ended - started:.2f}")
        last = ended
    parts.append(f"to run end {at['RunSuccessEvent'] - last:.2f}")
    parts.append(f"API sees it {done_at - at['RunSuccessEvent']:.2f}")
    return "; ".join(parts)


def _product_run(system: DemoSystem, sync_id: str) -> tuple[float, dict, float]:
    """Trigger the sync; (seconds until the API reports it completed, the run, peak MB)."""
    triggered_at = time.time()
    started = time.perf_counter()
    response = httpx.post(f"{system.api}/audience-syncs/{sync_id}/trigger",
                          headers=system.headers, timeout=300)  # fmt: skip
    response.raise_for_status()
    run_id = response.json()["id"]
    rss = PeakRss(system, run_id)
    while True:
        run = httpx.get(f"{system.api}/audience-syncs/{sync_id}/runs/{run_id}",
                        headers=system.headers, timeout=60).json()  # fmt: skip
        if run["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    peak = rss.stop()
    if run["status"] != "completed":
        raise SystemExit(f"run {run_id} ended {run['status']}: {run.get('error')}")
    print(f"    phases (s): {_phases(system, run_id, triggered_at, time.time())}", flush=True)
    return elapsed, run, peak


def _script_run(script: Path, warehouse: Path, state: Path, pg_url: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(script), str(warehouse), str(state), _libpq(pg_url),
                    "script_members"], check=True)  # fmt: skip
    return time.perf_counter() - started


def _same_rows(pg_url: str) -> int:
    """Both tables' row count, once they hold the same rows (else exit)."""
    with psycopg.connect(_libpq(pg_url)) as pg:
        columns = "entity_key::text, email, ltv::double precision, country"
        differ = pg.execute(f"""SELECT count(*) FROM (
            (SELECT {columns} FROM product_members
             EXCEPT ALL SELECT {columns} FROM script_members)
            UNION ALL
            (SELECT {columns} FROM script_members
             EXCEPT ALL SELECT {columns} FROM product_members)) d""").fetchone()[0]
        rows = pg.execute("SELECT count(*) FROM product_members").fetchone()[0]
    if differ:
        raise SystemExit(f"the destination tables differ in {differ} rows")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--updates", type=float, default=0.005)
    parser.add_argument("--pg-url", default=os.environ.get("COMPOSABLE_TEST_PG_URL"))
    parser.add_argument(
        "--activation-memory-limit",
        help="COMPOSABLE_ACTIVATION_MEMORY_LIMIT for the served system (default: its own)",
    )
    args = parser.parse_args()
    if not args.pg_url:
        raise SystemExit("give --pg-url or set COMPOSABLE_TEST_PG_URL")
    n = args.members
    limit = args.activation_memory_limit or "the default"
    print(
        f"load average before: {os.getloadavg()[0]:.2f}; members: {n:,}; "
        f"store memory limit: {limit}",
        flush=True,
    )
    cwd, env, init = demo_init()
    if args.activation_memory_limit:  # demo_init keeps no COMPOSABLE_* variable of ours
        env["COMPOSABLE_ACTIVATION_MEMORY_LIMIT"] = args.activation_memory_limit
    warehouse = cwd / ".composable" / "warehouse.duckdb"
    _generate(warehouse, n, args.churn)
    pg_url = _scratch_database(args.pg_url)
    scratch = Path(tempfile.mkdtemp(prefix="composable-e2e-script-"))
    script, state = scratch / "hand_written_sync.py", scratch / "state.duckdb"
    script.write_text(HAND_WRITTEN)
    rows: list[tuple[str, float, dict, float, float, int]] = []
    try:
        with serving(cwd, env, init) as system:
            destination = send(system, "POST", "/destinations", {
                "name": "e2e postgres", "destination_type": "postgres",
                "config": {"url": pg_url, "table": "public.product_members"}})  # fmt: skip
            audience = send(system, "POST", "/audiences", {
                "name": "e2e members", "parent_model_id": init["model_ids"]["customers"],
                "filter_tree": {"type": "and", "children": [
                    {"type": "condition", "condition_type": "property",
                     "column": "lifetime_value", "operator": "greater_than",
                     "value": 0}]}})  # fmt: skip
            sync = send(system, "POST", "/audience-syncs", {
                "name": "e2e sync", "audience_id": audience["id"],
                "destination_id": destination["id"], "sync_mode": "mirror",
                "config": {"max_remove_share": 1},
                "field_mapping": [
                    {"source_column": "email", "destination_field": "email"},
                    {"source_column": "lifetime_value", "destination_field": "ltv"},
                    {"source_column": "country", "destination_field": "country"}]})  # fmt: skip
            for stage in ("first run", "churn", "no change"):
                if stage == "churn":
                    _churn(warehouse, n, args.churn, args.updates)
                product, run, peak = _product_run(system, sync["id"])
                time.sleep(4)  # the API lets go of the warehouse (COMPOSABLE_WAREHOUSE_HOLD)
                script_seconds = _script_run(script, warehouse, state, pg_url)
                rows.append((stage, product, run, peak, script_seconds, _same_rows(pg_url)))
                print(
                    f"  {stage}: product {product:.2f} s, script {script_seconds:.2f} s", flush=True
                )
    finally:
        _drop_database(pg_url)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(
        "\n| stage | rows changed | product run s (trigger → completed) | rows/s | "
        "hand-written script s | product / script | run worker peak RSS MB | "
        "destination rows (identical) | goal |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for stage, product, run, peak, script_seconds, dest_rows in rows:
        changed = run["rows_added"] + run["rows_updated"] + run["rows_removed"]
        rate = f"{changed / product:,.0f}" if changed else "-"
        print(
            f"| {stage} | {changed:,} | {product:.2f} | {rate} | {script_seconds:.2f} | "
            f"{product / script_seconds:.2f}x | {peak:.0f} | {dest_rows:,} | "
            f"{GOALS[stage]} |"
        )
    print("goal: run worker peak RSS ≤ 800 MB at 10M")


if __name__ == "__main__":
    main()
