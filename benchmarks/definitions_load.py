"""Code-location load and reload time against the number of audiences (each with one sync).

    python benchmarks/definitions_load.py [--counts 10 100 1000] [--api-creates 1000]

Builds a small demo workspace in a temporary directory, starts `composable serve`, and for
each count adds audiences (and a scheduled sync per audience) to the catalog, then times:
- load: building the definitions in a fresh process (what a run worker or a code server
  start pays), the median of 3 processes, beside the same median with an empty catalog
  (baseline: no asset; dbt is a code location of its own);
- reload: the GraphQL `reloadRepositoryLocation` round trip on the running webserver, the
  median of 3.
One load runs first and is not counted: the first load after `init` writes the dbt manifest
(`dbt parse`, about 8 s) and meets cold caches, which once made the baseline larger than
every loaded figure. Prints a markdown table; docs/benchmarks.md records a run.

With `--api-creates N`, on a fresh demo: N audiences and N scheduled syncs created back to
back through the REST API (what a client scripting a migration does), the time that took,
and how long after the last create Dagster showed every one of them (`assetNodes`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _serve import demo_init, serving

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


def _api_creates(count: int) -> None:
    cwd, env, init = demo_init()
    with serving(cwd, env, init) as system:
        started = time.monotonic()
        sync_keys = set()
        for i in range(count):
            audience = httpx.post(f"{system.api}/audiences", headers=system.headers, json={
                "name": f"api audience {i}", "parent_model_id": init["model_ids"]["customers"],
                "filter_tree": {"type": "and", "children": [
                    {"type": "condition", "condition_type": "property",
                     "column": "lifetime_value", "operator": "greater_than", "value": i}]},
            }, timeout=120)  # fmt: skip
            audience.raise_for_status()
            sync = httpx.post(f"{system.api}/audience-syncs", headers=system.headers, json={
                "name": f"api sync {i}", "audience_id": audience.json()["id"],
                "destination_id": init["destination_id"], "sync_mode": "mirror",
                "schedule": "0 */4 * * *",
                "field_mapping": [{"source_column": "email", "destination_field": "email"}],
            }, timeout=120)  # fmt: skip
            sync.raise_for_status()
            sync_keys.add(("demo", "syncs", f"api_sync_{i}"))
        created = time.monotonic()
        while True:
            data = system.dagster.query("{ assetNodes { assetKey { path } } }")
            loaded = {tuple(n["assetKey"]["path"]) for n in data["assetNodes"]}
            if sync_keys <= loaded:
                break
            if time.monotonic() - created > 600:
                raise SystemExit("Dagster did not show every sync within 600 s")
            time.sleep(0.5)
        shown = time.monotonic()
    print("| creates through the API | audiences + syncs | create time s | shown in Dagster "
          "after the last create s |")  # fmt: skip
    print("|---|---|---|---|")
    print(f"| {count} | {2 * count} | {created - started:.1f} | {shown - created:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--api-creates", type=int, default=0)
    args = parser.parse_args()
    if args.api_creates:
        _api_creates(args.api_creates)
        return
    cwd, env, init = demo_init()
    settings = Settings(home=cwd / ".composable")
    # Warm-up, not counted: the first load after `init` runs `dbt parse`, on cold caches.
    subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET], cwd=cwd, env=env, check=True, capture_output=True
    )
    baseline, baseline_assets = _load_seconds(cwd, env)
    rows = []
    with serving(cwd, env, init) as system:
        client = system.dagster
        client.reload_location()  # warm-up, not counted
        baseline_reload = _reload_seconds(client)
        rows.append(("0 (baseline)", baseline_assets, baseline, baseline_reload))
        for count in args.counts:
            _grow_catalog(settings, init, count)
            load, assets = _load_seconds(cwd, env)
            rows.append((str(count), assets, load, _reload_seconds(client)))

    print(f"median of {REPEATS} after one uncounted warm-up; baseline: empty catalog")
    print("| audiences (+1 sync each) | assets | load s | load / baseline | reload s "
          "| reload / baseline |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for count, assets, load, reload in rows:
        print(f"| {count} | {assets} | {load:.2f} | {load / baseline:.1f}x "
              f"| {reload:.2f} | {reload / baseline_reload:.1f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
