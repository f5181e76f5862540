"""Code-location load and reload time against the number of audiences (each with one sync).

    python benchmarks/definitions_load.py [--counts 10 100 1000]

Builds a small demo workspace in a temporary directory, starts `composable serve`, and for
each count adds audiences (and a scheduled sync per audience) to the catalog, then times:
- load: building the definitions in a fresh process (what a run worker or a code server
  start pays), the median of 3 processes, beside the same median with an empty catalog
  (baseline: dbt assets only);
- reload: the GraphQL `reloadRepositoryLocation` round trip on the running webserver, the
  median of 3.
One load runs first and is not counted: the first load after `init` writes the dbt manifest
(`dbt parse`, about 8 s) and meets cold caches, which once made the baseline larger than
every loaded figure. Prints a markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from composable_dagster.api.dagster_client import DagsterClient
from composable_dagster.catalog import audiences
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.tables import Audience, Sync
from composable_dagster.settings import Settings

LOAD_SNIPPET = (
    "import time; t = time.perf_counter();"
    "from composable_dagster.definitions import defs; d = defs();"
    "n = len(list(d.resolve_asset_graph().get_all_asset_keys()));"
    "print(time.perf_counter() - t, n)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REPEATS = 3


def _load_seconds(cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """Median load time over `REPEATS` fresh processes, and the number of assets loaded."""
    seconds, assets = [], set()
    for _ in range(REPEATS):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_SNIPPET], cwd=cwd, env=env, check=True,
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        seconds.append(float(out[-2]))
        assets.add(int(out[-1]))
    if len(assets) != 1:
        raise SystemExit(f"asset count changed between identical loads: {sorted(assets)}")
    return statistics.median(seconds), assets.pop()


def _reload_seconds(client: DagsterClient) -> float:
    return statistics.median(client.reload_location() for _ in range(REPEATS))


def _grow_catalog(settings: Settings, init: dict, target: int) -> None:
    with catalog_session(settings.resolved_catalog_url) as session:
        have = session.query(Audience).count()
        for i in range(have, target):
            audience = audiences.create_audience(
                session,
                workspace_id=init["workspace_id"],
                created_by=None,
                spec=audiences.AudienceCreate(
                    name=f"bench audience {i}",
                    parent_model_id=init["model_ids"]["customers"],
                    filter_tree={"type": "and", "children": [
                        {"type": "condition", "condition_type": "property",
                         "column": "lifetime_value", "operator": "greater_than",
                         "value": i}]},
                ),
            )  # fmt: skip
            session.add(Sync(workspace_id=init["workspace_id"], audience_id=audience.id,
                             destination_id=init["destination_id"], name=f"bench sync {i}",
                             slug=f"bench_sync_{i}", sync_mode="mirror",
                             schedule="0 */4 * * *", status="active", status_error=""))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    cwd = Path(tempfile.mkdtemp(prefix="composable-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSABLE_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(cwd / ".composable" / "dagster")
    init = json.loads(subprocess.run(
        [sys.executable, "-m", "composable_dagster.cli", "init", "--demo", "--customers", "2000"],
        cwd=cwd, env=env, check=True, capture_output=True, text=True,
    ).stdout)  # fmt: skip
    settings = Settings(home=cwd / ".composable")
    # Warm-up, not counted: the first load after `init` runs `dbt parse`, on cold caches.
    subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET], cwd=cwd, env=env, check=True, capture_output=True
    )
    baseline, baseline_assets = _load_seconds(cwd, env)

    dagster_port, api_port = _free_port(), _free_port()
    serve_log = (cwd / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "composable_dagster.cli", "serve",
         "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
        cwd=cwd, env=env, start_new_session=True, stdout=serve_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = DagsterClient(f"http://127.0.0.1:{dagster_port}/graphql", location="composable")
    rows = []
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{dagster_port}/server_info", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or serve.poll() is not None:
                    raise SystemExit(f"dagster did not start; see {cwd / 'serve.log'}") from None
                time.sleep(1)
        client.reload_location()  # warm-up, not counted
        baseline_reload = _reload_seconds(client)
        rows.append(("0 (baseline)", baseline_assets, baseline, baseline_reload))
        for count in args.counts:
            _grow_catalog(settings, init, count)
            load, assets = _load_seconds(cwd, env)
            rows.append((str(count), assets, load, _reload_seconds(client)))
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(timeout=60)

    print(f"median of {REPEATS} after one uncounted warm-up; baseline: empty catalog (dbt only)")
    print("| audiences (+1 sync each) | assets | load s | load / baseline | reload s "
          "| reload / baseline |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for count, assets, load, reload in rows:
        print(f"| {count} | {assets} | {load:.2f} | {load / baseline:.1f}x "
              f"| {reload:.2f} | {reload / baseline_reload:.1f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
