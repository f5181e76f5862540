"""Code-location load and reload time against the number of audiences (each with one sync).

    python benchmarks/definitions_load.py [--counts 10 100 1000] [--code-locations N]
                                          [--api-creates 1000]

Builds a small demo workspace in a temporary directory, starts `composable serve`, and for
each count adds audiences (and a scheduled sync per audience) to the catalog, then times:
- load: building the definitions in a fresh process (what a run worker or a code server
  start pays), the median of 3 processes, beside the same median with an empty catalog
  (baseline: no asset; dbt is a code location of its own);
- reload: the GraphQL `reloadRepositoryLocation` round trip on the running webserver after
  a change of the graph (one more audience and scheduled sync, so a count's row ends 3
  audiences above its count; 5 s to settle before each), the median of 3 (1 at 5,000+);
  `composable serve`'s code server rebuilds in process (defs/code_server.py).
- run worker: a real trigger of one sync on the running system, from the run worker's
  process start to the run's start: the definitions a run worker builds (only its run's
  assets, from the pinned graph; defs/run_worker.py);
- assetNodes and group graph: a timed GraphQL `assetNodes` query (every asset key) and the
  query the UI's asset graph page of the workspace's group sends;
- peak RSS (VmHWM) of the webserver, the daemon and the catalog's code server at the end.
With `--code-locations N` (COMPOSABLE_CODE_LOCATIONS), the catalog is split into N code
locations (catalog/graph.py): "load" is one location's (shard 0) fresh build, "reload" that
of the location the new audience fell in, "group graph" shard 0's part of the group, and
the code server's peak RSS the largest of the N.
One load runs first and is not counted: the first load after `init` writes the dbt manifest
(`dbt parse`, about 8 s) and meets cold caches, which once made the baseline larger than
every loaded figure. Prints a markdown table; docs/benchmarks.md records a run.

With `--api-creates N`, on a fresh demo: N audiences and N scheduled syncs created back to
back through the REST API (what a client scripting a migration does), the time that took,
and how long after the last create Dagster showed every one of them (`assetNodes`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _serve import DemoSystem, demo_init, file_sync, run_events, serving

from composable_dagster.api.app import graph_reader
from composable_dagster.api.dagster_client import DagsterClient
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.tables import Audience, Sync
from composable_dagster.names import location_names
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


SETTLE_SECONDS = 5.0


def _reload_seconds(
    client: DagsterClient, settings: Settings, init: dict, *, count: int, repeats: int = REPEATS
) -> tuple[float, int]:
    """Median reload after a change of the graph, as a create causes: before each, one more
    audience (with its scheduled sync) is added and Dagster left to settle (the daemon
    refreshes after the webserver), so each reload builds new definitions; the location
    reloaded is the one the new audience fell in, as the API would. Returns it and the
    audience count reached."""
    seconds = []
    for _ in range(repeats):
        count += 1
        _grow_catalog(settings, init, count)
        time.sleep(SETTLE_SECONDS)
        seconds.append(client.reload_location(_location_of_audience(settings, count - 1)))
    return statistics.median(seconds), count


def _location_of_audience(settings: Settings, index: int) -> str:
    """The code location that builds bench audience `index` (and its sync)."""
    with catalog_session(settings.resolved_catalog_url) as session:
        sync_id = session.query(Sync.id).filter(Sync.slug == f"bench_sync_{index}").scalar()
    return graph_reader(settings)().sync_locations[sync_id]


# What the UI's asset graph page asks for a group (the fields its layout needs).
_GROUP_GRAPH = """
query GroupGraph($group: AssetGroupSelector!) {
  assetNodes(group: $group) {
    id assetKey { path } groupName opNames isMaterializable isObservable kinds
    dependencyKeys { path } dependedByKeys { path }
    repository { name location { name } }
  }
}"""


def _graph_queries(system: DemoSystem) -> tuple[float, float, int]:
    """Seconds for `assetNodes` (all keys) and for the workspace group's graph query."""
    started = time.perf_counter()
    nodes = system.dagster.query("{ assetNodes { assetKey { path } } }")["assetNodes"]
    all_nodes = time.perf_counter() - started
    group = {"groupName": "demo", "repositoryName": "__repository__",
             "repositoryLocationName": system.dagster.location}  # fmt: skip
    started = time.perf_counter()
    system.dagster.query(_GROUP_GRAPH, {"group": group})
    return all_nodes, time.perf_counter() - started, len(nodes)


def _run_worker_definitions(system: DemoSystem, sync_id: str) -> float:
    """Seconds from the run worker's process start to the run's start, for one trigger.
    A trigger the API could not launch (Dagster too busy to answer within the API's 30 s)
    is tried again, up to 5 times, 10 s apart, and reported."""
    for _ in range(5):
        response = httpx.post(f"{system.api}/audience-syncs/{sync_id}/trigger",
                              headers=system.headers, timeout=600)  # fmt: skip
        if response.status_code in (200, 201):  # 200: a retried launch that went through
            break
        print(f"  trigger answered {response.status_code}: {response.text}", flush=True)
        time.sleep(10)
    else:
        return float("nan")
    run_id = response.json()["id"]
    run = system.dagster.wait_for_run(run_id, timeout=600, poll=0.5)
    if run.status != "SUCCESS":
        raise SystemExit(f"run {run_id} ended {run.status}")
    events = run_events(system, run_id)
    return events["RunStartEvent"] - events["worker process started"]


_PROCESSES = {"webserver": "dagster_webserver", "daemon": "dagster._daemon",
              "code server": "composable_dagster.defs.code_server"}  # fmt: skip


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory (VmHWM) of each Dagster process of the running system, MB."""
    peaks: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for name, mark in _PROCESSES.items():
            if mark in cmdline and "forkserver" not in cmdline:
                kb = int(status.split("VmHWM:")[1].split()[0])
                peaks[name] = max(peaks.get(name, 0.0), kb / 1024)
    return peaks


def _grow_catalog(settings: Settings, init: dict, target: int) -> None:
    """Audiences (and a scheduled sync each) inserted as rows: what the definitions are
    built from, without the API's per-write validation (`--api-creates` times that)."""
    with catalog_session(settings.resolved_catalog_url) as session:
        have = session.query(Audience).filter(Audience.slug.like("bench_audience_%")).count()
        for i in range(have, target):
            audience = Audience(
                workspace_id=init["workspace_id"], parent_model_id=init["model_ids"]["customers"],
                name=f"bench audience {i}", slug=f"bench_audience_{i}", status="active",
                status_error="",
                filter_tree={"type": "and", "children": [
                    {"type": "condition", "condition_type": "property",
                     "column": "lifetime_value", "operator": "greater_than", "value": i}]},
            )  # fmt: skip
            session.add(audience)
            session.flush()
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
    parser.add_argument("--code-locations", type=int, default=1)
    args = parser.parse_args()
    if args.api_creates:
        _api_creates(args.api_creates)
        return
    cwd, env, init = demo_init()
    locations = location_names("composable", args.code_locations)
    env["COMPOSABLE_CODE_LOCATIONS"] = str(args.code_locations)
    settings = Settings(home=cwd / ".composable", code_locations=args.code_locations)
    # A fresh load builds one location: the whole catalog, or shard 0 of it.
    load_env = dict(env, COMPOSABLE_CODE_LOCATION_SHARD="0") if len(locations) > 1 else env
    # Warm-up, not counted: the first load after `init` runs `dbt parse`, on cold caches.
    subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET], cwd=cwd, env=load_env, check=True,
        capture_output=True,
    )  # fmt: skip
    baseline, baseline_assets = _load_seconds(cwd, load_env)
    print(f"load average before: {os.getloadavg()[0]:.2f}; code locations: {len(locations)}")
    with serving(cwd, env, init, location=locations[0]) as system:
        client = system.dagster
        sync_id = file_sync(system, "load bench", path="load_bench")[2]["id"]
        for location in locations:
            client.reload_location(location)  # warm-up, not counted
        _run_worker_definitions(system, sync_id)  # warm-up, not counted
        baseline_reload, grown = _reload_seconds(client, settings, init, count=0)
        print(f"median of {REPEATS} (reload: 1 at 5,000 and more) after one uncounted "
              "warm-up; baseline: empty catalog (+1 bench sync)")  # fmt: skip
        print("goals at 1,000 / 10,000: reload <= 5 / 15 s; run worker definitions <= 2 / 5 s")
        print("| audiences (+1 sync each) | assets | load s (fresh process) | reload s "
              "| reload / baseline | run worker definitions s | assetNodes s | group graph s "
              "| peak RSS MB so far |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|", flush=True)

        def row(count: str, assets: int, load: float, reload: float) -> None:
            worker = _run_worker_definitions(system, sync_id)
            nodes, group, shown = _graph_queries(system)
            peaks = ", ".join(f"{k} {v:.0f}" for k, v in _peak_rss_mb().items())
            print(f"| {count} | {assets} ({shown:,} in Dagster) | {load:.2f} | {reload:.2f} "
                  f"| {reload / baseline_reload:.1f}x | {worker:.2f} | {nodes:.2f} "
                  f"| {group:.2f} | {peaks} |", flush=True)  # fmt: skip

        row("0 (baseline)", baseline_assets, baseline, baseline_reload)
        for count in args.counts:
            grown = max(count, grown)
            _grow_catalog(settings, init, grown)
            for location in locations:  # the rows went in behind the API's back: not counted
                client.reload_location(location)
            load, assets = _load_seconds(cwd, load_env)
            reload, grown = _reload_seconds(
                client, settings, init, count=grown, repeats=REPEATS if count < 5000 else 1
            )
            row(f"{count:,}", assets, load, reload)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
