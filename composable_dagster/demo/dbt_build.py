"""Build the demo warehouse: generate raw data, then run the dbt project over it
(composable_dagster/dbt_project.py runs dbt)."""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from composable_dagster.dbt_project import (
    TARGET_ENV_VAR,
    dbt_env_for_warehouse,
    run_dbt,
    state_dirs,
)
from composable_dagster.demo.generate import RawCounts, generate_raw_duckdb, generate_raw_postgres


@dataclass(frozen=True)
class DemoBuildResult:
    """What :func:`build_demo_warehouse` built and how long it took.

    Attributes:
        target: dbt target used, ``duckdb`` or ``postgres``.
        as_of: Day the generated data ends.
        seed: Random seed of the generated data.
        raw: Row counts of the raw tables.
        models: Number of dbt models built.
        tests: Number of dbt tests that passed.
        generate_seconds: Time spent generating (and, for PostgreSQL, loading) raw data.
        dbt_seconds: Wall time of ``dbt build``, including dbt's start-up.
        target_dir: dbt's target directory (manifest.json, run_results.json).
    """

    target: str
    as_of: datetime.date
    seed: int
    raw: RawCounts
    models: int
    tests: int
    generate_seconds: float
    dbt_seconds: float
    target_dir: Path


def build_demo_warehouse(
    warehouse_url: str,
    *,
    customers: int = 100_000,
    seed: int = 42,
    as_of: datetime.date | None = None,
    state_dir: Path | str | None = None,
) -> DemoBuildResult:
    """Generate the raw demo data and run ``dbt build`` (models and tests) over it.

    Args:
        warehouse_url: Where to build (see :func:`dbt_env_for_warehouse`). Existing raw and
            analytics tables are replaced.
        customers: Scale knob; orders and events scale with it.
        seed: Random seed of the generated data.
        as_of: Day the data ends; defaults to today (UTC) so relative-time audiences match.
        state_dir: Directory for dbt's ``target/`` and ``logs/``; defaults to the dbt project
            itself, which is fine for one local user but races when builds run in parallel.

    Returns:
        Counts and timings of the build.

    Raises:
        DbtCommandError: When ``dbt build`` fails (a model error or a failing test).
    """
    env = dbt_env_for_warehouse(warehouse_url)
    day = as_of or datetime.datetime.now(datetime.UTC).date()
    target_dir, log_dir = state_dirs(state_dir)

    started = time.perf_counter()
    if env[TARGET_ENV_VAR] == "duckdb":
        Path(env["COMPOSABLE_WAREHOUSE_PATH"]).parent.mkdir(parents=True, exist_ok=True)
        # Closed before dbt starts: DuckDB allows only one writing process per file.
        with duckdb.connect(env["COMPOSABLE_WAREHOUSE_PATH"]) as con:
            raw = generate_raw_duckdb(con, customers=customers, seed=seed, as_of=day)
    else:
        raw = generate_raw_postgres(warehouse_url, customers=customers, seed=seed, as_of=day)
    generated = time.perf_counter()

    run_dbt(["build"], env=env, target_dir=target_dir, log_dir=log_dir)
    finished = time.perf_counter()

    models, tests = _count_successes(target_dir / "run_results.json")
    return DemoBuildResult(
        target=env[TARGET_ENV_VAR],
        as_of=day,
        seed=seed,
        raw=raw,
        models=models,
        tests=tests,
        generate_seconds=generated - started,
        dbt_seconds=finished - generated,
        target_dir=target_dir,
    )


def _count_successes(run_results: Path) -> tuple[int, int]:
    results = json.loads(run_results.read_text())["results"]
    models = sum(
        1 for r in results if r["unique_id"].startswith("model.") and r["status"] == "success"
    )
    tests = sum(1 for r in results if r["unique_id"].startswith("test.") and r["status"] == "pass")
    return models, tests
