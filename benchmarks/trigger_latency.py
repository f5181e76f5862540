"""Trigger → sync step started, on a real `composable serve`, idle and right after edits.

    python benchmarks/trigger_latency.py [--runs 10]

What a user waits for between `POST .../trigger` and the moment the sync step starts
sending, for one sync of the demo workspace:
- idle: nothing edited since the last run;
- after 20 rapid edits: 20 PUTs of its audience's tree, its mapping and its destination
  (a few ms apart), then the trigger at once.
Each phase comes from Dagster's own run events: API (the trigger's HTTP round trip, which
now includes the launch), queue (run enqueued → the daemon launches it; 0 for API triggers,
which skip the queue: defs/run_coordinator.py), worker start (launched → the run worker
process, forked from a warm fork server, has opened the instance: defs/run_launcher.py),
definitions (→ the worker has built its definitions from the pinned graph and started the
run), step (run started → the sync step starts: the audience step runs first). Beside them,
in a fresh process measured apart: the definitions load a worker would do without the fork
server (import + build), and the baseline of the same work without Dagster: a hand-written
script that runs the audience's SQL and starts writing the file.
Goals (issue "Edits never wait on Dagster"): p50 ≤ 2 s and p95 ≤ 3 s, idle and after edits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import httpx
from _serve import DemoSystem, demo_init, file_sync, ltv_tree, run_events, send, serving

LOAD_SNIPPET = (
    "import time; t = time.perf_counter();"
    "from composable_dagster.definitions import defs; d = defs();"
    "print(time.perf_counter() - t)"
)

HAND_WRITTEN = """
import time, duckdb, csv, sys
t = time.perf_counter()
con = duckdb.connect(sys.argv[1], read_only=True)
rows = con.execute("SELECT customer_id, email FROM analytics.customers "
                   "WHERE lifetime_value > 900").fetchall()
with open(sys.argv[2], "w", newline="") as f:
    csv.writer(f).writerows(rows[:1])
print(time.perf_counter() - t)
"""


def _one_trigger(system: DemoSystem, sync_id: str, sync_step: str) -> dict[str, float]:
    sent = time.time()
    response = httpx.post(
        f"{system.api}/audience-syncs/{sync_id}/trigger", headers=system.headers, timeout=300
    )
    answered = time.time()
    if response.status_code != 201:
        raise SystemExit(f"trigger: {response.status_code} {response.text}")
    run_id = response.json()["id"]
    run = system.dagster.wait_for_run(run_id, timeout=300, poll=0.2)
    if run.status != "SUCCESS":
        raise SystemExit(f"run {run_id} ended {run.status}")
    events = run_events(system, run_id)
    missing = {"RunStartingEvent", "worker process started", "RunStartEvent", f"step:{sync_step}"}
    if missing - set(events):
        raise SystemExit(f"run {run_id} lacks {sorted(missing - set(events))}: {sorted(events)}")
    started = events[f"step:{sync_step}"]
    return {
        "api": answered - sent,
        # An API trigger starts at once (defs/run_coordinator.py): no queue, no enqueue event.
        "queue": events["RunStartingEvent"]
        - events.get("RunEnqueuedEvent", events["RunStartingEvent"]),
        "worker start": events["worker process started"] - events["RunStartingEvent"],
        "definitions": events["RunStartEvent"] - events["worker process started"],
        "step": started - events["RunStartEvent"],
        "total": started - sent,
    }


def _edits(system: DemoSystem, audience_id: str, sync_id: str, destination_id: str, n: int):
    for i in range(20):
        kind = i % 3
        if kind == 0:
            send(system, "PUT", f"/audiences/{audience_id}", {"filter_tree": ltv_tree(900 + i + n)})
        elif kind == 1:
            mapping = [{"source_column": "email", "destination_field": "email"},
                       {"source_column": "country", "destination_field": f"c{i}"}]  # fmt: skip
            send(system, "PUT", f"/audience-syncs/{sync_id}", {"field_mapping": mapping})
        else:
            config = {"path": f"bench_{(n + i) % 2}", "format": "csv"}
            send(system, "PUT", f"/destinations/{destination_id}", {"config": config})


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    cwd, env, init = demo_init()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    loads = [
        float(subprocess.run([sys.executable, "-c", LOAD_SNIPPET], cwd=cwd, env=env,
                             check=True, capture_output=True, text=True).stdout.split()[-1])
        for _ in range(3)
    ]  # fmt: skip
    warehouse = str(cwd / ".composable" / "warehouse.duckdb")
    script = [
        float(subprocess.run([sys.executable, "-c", HAND_WRITTEN, warehouse,
                              str(cwd / "hand.csv")],
                             check=True, capture_output=True, text=True).stdout)
        for _ in range(3)
    ]  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {"idle": [], "after 20 edits": []}
    with serving(cwd, env, init) as system:
        destination, audience, sync = file_sync(system, "bench", path="bench_0")
        sync_step = "demo__syncs"  # the workspace's syncs multi-asset
        _one_trigger(system, sync["id"], sync_step)  # warm-up, not counted
        for n in range(args.runs):
            results["idle"].append(_one_trigger(system, sync["id"], sync_step))
            _edits(system, audience["id"], sync["id"], destination["id"], n)
            results["after 20 edits"].append(_one_trigger(system, sync["id"], sync_step))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{args.runs} triggers each; seconds; goal: total p50 <= 2, p95 <= 3")
    print("| case | api p50 | queue p50 | worker start p50 | definitions p50 | step p50 "
          "| total p50 | total p95 | goal |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for case, rows in results.items():
        p50s = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        total50, total95 = _percentiles([r["total"] for r in rows])
        met = "met" if total50 <= 2 and total95 <= 3 else "not met"
        print(f"| {case} | {p50s['api']:.2f} | {p50s['queue']:.2f} | "
              f"{p50s['worker start']:.2f} | {p50s['definitions']:.2f} | {p50s['step']:.2f} | "
              f"{total50:.2f} | "
              f"{total95:.2f} | {met} |")  # fmt: skip
    print(
        f"definitions load in a fresh process (import + build), median of 3: "
        f"{statistics.median(loads):.2f} s"
    )
    print(
        f"baseline, a hand-written script (DuckDB query + first row written), median of 3: "
        f"{statistics.median(script):.2f} s"
    )


if __name__ == "__main__":
    main()
