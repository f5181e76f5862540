"""Build the demo warehouse: generate raw data, then run the dbt project over it.

dbt runs as a subprocess of this interpreter (the ``dbt`` CLI's entry point) rather than through
``dbtRunner``: the profile reads its connection from environment variables, and a child
process gets its own environment without touching ``os.environ`` of a long-lived Dagster or
API process; dbt-duckdb's cached connections (which would keep the warehouse file locked)
die with the child; and repeated builds in one process start from a clean slate.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import sqlalchemy as sa

from composable_dagster.demo.generate import (
    RawCounts,
    generate_raw_duckdb,
    generate_raw_postgres,
    pg_connect_kwargs,
)

__all__ = [
    "DBT_PROJECT_DIR",
    "TARGET_ENV_VAR",
    "DbtCommandError",
    "DemoBuildResult",
    "build_demo_warehouse",
    "dbt_env_for_warehouse",
    "dbt_parse",
]

# The package is installed editable from the repository root, which also holds dbt_project/.
DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"

# profiles.yml picks its target from this variable (default duckdb), so a DbtCliResource given
# dbt_env_for_warehouse()'s variables needs no separate target setting.
TARGET_ENV_VAR = "COMPOSABLE_DBT_TARGET"
_OUTPUT_TAIL_LINES = 60


class DbtCommandError(RuntimeError):
    """A dbt command exited unsuccessfully; the message carries dbt's own explanation."""


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


def dbt_env_for_warehouse(warehouse_url: str) -> dict[str, str]:
    """Environment variables that point the demo dbt profile at a warehouse.

    Args:
        warehouse_url: SQLAlchemy URL, ``duckdb:///path/to/file.duckdb`` (relative paths are
            resolved against the current directory) or
            ``postgresql+psycopg://user:pw@host:port/db``.

    Returns:
        ``COMPOSABLE_DBT_TARGET`` (the profile target, ``duckdb`` or ``postgres``) plus the
        connection variables profiles.yml reads for that target.

    Raises:
        ValueError: For other engines, or an in-memory DuckDB (dbt runs in another process).
    """
    url = sa.make_url(warehouse_url)
    backend = url.get_backend_name()
    if backend == "duckdb":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith(":memory:"):
            raise ValueError("the demo warehouse needs a DuckDB file, not an in-memory database")
        return {
            TARGET_ENV_VAR: "duckdb",
            "COMPOSABLE_WAREHOUSE_PATH": str(Path(database).expanduser().resolve()),
        }
    if backend == "postgresql":
        connect = pg_connect_kwargs(warehouse_url)
        env = {
            TARGET_ENV_VAR: "postgres",
            "COMPOSABLE_WAREHOUSE_PG_HOST": str(connect["host"]),
            "COMPOSABLE_WAREHOUSE_PG_PORT": str(connect["port"]),
            "COMPOSABLE_WAREHOUSE_PG_USER": str(connect.get("user", "")),
            "COMPOSABLE_WAREHOUSE_PG_PASSWORD": str(connect.get("password", "")),
            "COMPOSABLE_WAREHOUSE_PG_DBNAME": str(connect["dbname"]),
        }
        sslmode = url.query.get("sslmode")
        if isinstance(sslmode, str):
            env["COMPOSABLE_WAREHOUSE_PG_SSLMODE"] = sslmode
        return env
    raise ValueError(f"unsupported warehouse for the demo: {url.render_as_string()}")


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
    target_dir, log_dir = _state_dirs(state_dir)

    started = time.perf_counter()
    if env[TARGET_ENV_VAR] == "duckdb":
        Path(env["COMPOSABLE_WAREHOUSE_PATH"]).parent.mkdir(parents=True, exist_ok=True)
        # Closed before dbt starts: DuckDB allows only one writing process per file.
        with duckdb.connect(env["COMPOSABLE_WAREHOUSE_PATH"]) as con:
            raw = generate_raw_duckdb(con, customers=customers, seed=seed, as_of=day)
    else:
        raw = generate_raw_postgres(warehouse_url, customers=customers, seed=seed, as_of=day)
    generated = time.perf_counter()

    _run_dbt(["build"], env=env, target_dir=target_dir, log_dir=log_dir)
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


def dbt_parse(target_dir: Path | str, *, warehouse_url: str | None = None) -> Path:
    """Run ``dbt parse`` and return the path of the manifest.json it wrote.

    Parsing does not connect to the warehouse, so without ``warehouse_url`` the DuckDB target
    is used, with ``COMPOSABLE_WAREHOUSE_PATH`` from the environment or else a placeholder
    path (never created); the manifest's models and tests are the same either way.

    Args:
        target_dir: dbt target directory to write; logs go to its sibling ``logs/``.
        warehouse_url: Warehouse whose target the manifest should describe.

    Returns:
        Path of ``manifest.json`` inside ``target_dir``.
    """
    target = Path(target_dir).resolve()
    if warehouse_url is not None:
        env = dbt_env_for_warehouse(warehouse_url)
    else:
        # The DuckDB target needs only a path, so parsing works with no warehouse configured.
        env = {
            TARGET_ENV_VAR: "duckdb",
            "COMPOSABLE_WAREHOUSE_PATH": os.environ.get(
                "COMPOSABLE_WAREHOUSE_PATH", str(target / "warehouse.duckdb")
            ),
        }
    _run_dbt(["parse"], env=env, target_dir=target, log_dir=target.parent / "logs")
    manifest = target / "manifest.json"
    if not manifest.is_file():
        raise DbtCommandError(f"dbt parse succeeded but wrote no manifest at {manifest}")
    return manifest


def dbt_state_dir(home: Path, warehouse_url: str) -> Path:
    """Where dbt keeps `target/` and `logs/` for this warehouse under the state directory:
    what `composable init` builds into and the code location loads its manifest from."""
    return home / "dbt" / dbt_env_for_warehouse(warehouse_url)[TARGET_ENV_VAR]


def dbt_target_dir(state_dir: Path | str) -> Path:
    """dbt's target directory (manifest.json, run_results.json) under `state_dir`."""
    return _state_dirs(state_dir)[0]


def _state_dirs(state_dir: Path | str | None) -> tuple[Path, Path]:
    base = Path(state_dir).resolve() if state_dir is not None else DBT_PROJECT_DIR
    return base / "target", base / "logs"


def _run_dbt(
    command: Sequence[str], *, env: Mapping[str, str], target_dir: Path, log_dir: Path
) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    # A run_results.json left by an earlier command would be mistaken for this one's.
    (target_dir / "run_results.json").unlink(missing_ok=True)
    args = [
        sys.executable,
        # The `dbt` console script's body; `-m dbt.cli.main` warns because dbt.cli imports it.
        "-c",
        "import sys; from dbt.cli.main import cli; sys.exit(cli())",
        *command,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target_dir),
        "--log-path",
        str(log_dir),
        "--no-use-colors",
    ]
    if TARGET_ENV_VAR in env:
        args += ["--target", env[TARGET_ENV_VAR]]
    child_env = {
        **os.environ,
        **env,
        # Offline and deterministic: no usage tracking or version check over the network.
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_VERSION_CHECK": "false",
    }
    completed = subprocess.run(
        args,
        env=child_env,
        cwd=target_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise DbtCommandError(_failure_message(command, completed, target_dir))


def _failure_message(
    command: Sequence[str], completed: subprocess.CompletedProcess[str], target_dir: Path
) -> str:
    lines = [f"dbt {' '.join(command)} failed with exit code {completed.returncode}"]
    run_results = target_dir / "run_results.json"
    # run_results.json names each failing model or test with dbt's own message.
    if run_results.is_file():
        for result in json.loads(run_results.read_text()).get("results", []):
            if result.get("status") not in ("success", "pass", "skipped"):
                lines.append(
                    f"  {result.get('unique_id')}: {result.get('status')}: {result.get('message')}"
                )
    output = (completed.stdout + completed.stderr).strip().splitlines()
    lines.append("dbt output (tail):")
    lines.extend(output[-_OUTPUT_TAIL_LINES:])
    return "\n".join(lines)


def _count_successes(run_results: Path) -> tuple[int, int]:
    results = json.loads(run_results.read_text())["results"]
    models = sum(
        1 for r in results if r["unique_id"].startswith("model.") and r["status"] == "success"
    )
    tests = sum(1 for r in results if r["unique_id"].startswith("test.") and r["status"] == "pass")
    return models, tests
