"""The dbt project in `dbt_project/`, pointed at the configured warehouse: its environment,
where its state lives, and running its CLI. Low in the house: the demo builds with it and
the Dagster layer loads its manifest, neither through the other.

dbt runs as a subprocess of this interpreter (the ``dbt`` CLI's entry point) rather than through
``dbtRunner``: the profile reads its connection from environment variables, and a child
process gets its own environment without touching ``os.environ`` of a long-lived Dagster or
API process; dbt-duckdb's cached connections (which would keep the warehouse file locked)
die with the child; and repeated builds in one process start from a clean slate.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa

# The package is installed editable from the repository root, which also holds dbt_project/.
DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"

# profiles.yml picks its target from this variable (default duckdb), so a DbtCliResource given
# dbt_env_for_warehouse()'s variables needs no separate target setting.
TARGET_ENV_VAR = "COMPOSABLE_DBT_TARGET"
_OUTPUT_TAIL_LINES = 60


class DbtCommandError(RuntimeError):
    """A dbt command exited unsuccessfully; the message carries dbt's own explanation."""


def dbt_executable() -> str:
    """The `dbt` of this interpreter's environment: beside `sys.executable` first, so a
    `composable serve` started by path from a virtualenv that is not activated (its `bin/`
    not on PATH) still finds it; else whatever `dbt` is on PATH."""
    beside = Path(sys.executable).parent / "dbt"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("dbt") or "dbt"


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
    run_dbt(["parse"], env=env, target_dir=target, log_dir=target.parent / "logs")
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
    return state_dirs(state_dir)[0]


def state_dirs(state_dir: Path | str | None) -> tuple[Path, Path]:
    base = Path(state_dir).resolve() if state_dir is not None else DBT_PROJECT_DIR
    return base / "target", base / "logs"


def run_dbt(
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


def pg_connect_kwargs(url: str) -> dict[str, str | int]:
    """psycopg connection keywords from a SQLAlchemy PostgreSQL URL."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string()}")
    kwargs: dict[str, str | int] = {
        "host": parsed.host or "localhost",
        "port": parsed.port or 5432,
        "dbname": parsed.database or "postgres",
    }
    if parsed.username:
        kwargs["user"] = parsed.username
    if parsed.password is not None:
        kwargs["password"] = str(parsed.password)
    return kwargs


def ensure_manifest(home: Path, warehouse_url: str) -> Path:
    """The manifest of the project for this warehouse, parsed first if it is missing (a
    fresh clone loads before `init`). Both code locations may ask at once: one parses, the
    other waits for it (a file lock), so they never write one target directory together."""
    target = dbt_target_dir(dbt_state_dir(home, warehouse_url))
    manifest = target / "manifest.json"
    if manifest.is_file():
        return manifest
    target.mkdir(parents=True, exist_ok=True)
    with (target.parent / "parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest.is_file():
            dbt_parse(target, warehouse_url=warehouse_url)
    return manifest


def model_asset_keys(manifest: Path) -> dict[tuple[str | None, str], tuple[str, ...]]:
    """Which asset key each dbt model's table has, by (schema, table) and by (None, table),
    lower case: what audiences over those tables depend on.

    Read from the manifest alone, so the catalog's code location need not import dagster-dbt
    (a second of every run worker's start). The rule is dagster-dbt's default translator's
    (`default_asset_key_fn`); tests/test_definitions.py checks the two agree."""
    keys: dict[tuple[str | None, str], tuple[str, ...]] = {}
    for node in json.loads(manifest.read_text())["nodes"].values():
        if node["resource_type"] != "model":
            continue
        meta = node.get("config", {}).get("meta", {}) or node.get("meta", {})
        configured = meta.get("dagster", {}).get("asset_key", [])
        if configured:
            key = tuple(configured)
        elif node.get("version"):
            key = (node["alias"],)
        elif node["config"].get("schema") is not None:
            key = (node["config"]["schema"], node["name"])
        else:
            key = (node["name"],)
        table = (node.get("alias") or node["name"]).lower()
        keys[(node["schema"].lower(), table)] = key
        keys.setdefault((None, table), key)
    return keys
