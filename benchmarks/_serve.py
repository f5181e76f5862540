"""A demo `composable serve` in a temporary directory, for the benchmarks that time what a
user waits for on the real system (not a module of the package: benchmarks only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from composable_dagster.api.dagster_client import DagsterClient


@dataclass(frozen=True)
class DemoSystem:
    cwd: Path
    env: dict[str, str]
    init: dict  # what `composable init --demo` printed
    dagster: DagsterClient
    api: str  # the workspace's base URL

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.init['api_key']}",
            "X-Workspace-ID": self.init["workspace_id"],
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_init(customers: int = 2000) -> tuple[Path, dict[str, str], dict]:
    """`composable init --demo` in a fresh temporary directory: (cwd, env, its output)."""
    cwd = Path(tempfile.mkdtemp(prefix="composable-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSABLE_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(cwd / ".composable" / "dagster")
    init = json.loads(subprocess.run(
        [sys.executable, "-m", "composable_dagster.cli", "init", "--demo",
         "--customers", str(customers)],
        cwd=cwd, env=env, check=True, capture_output=True, text=True,
    ).stdout)  # fmt: skip
    return cwd, env, init


@contextmanager
def serving(
    cwd: Path, env: dict[str, str], init: dict, *, location: str = "composable"
) -> Iterator[DemoSystem]:
    """`composable serve` over the demo in `cwd` until the block ends; the client's code
    location is `location`."""
    dagster_port, api_port = free_port(), free_port()
    serve_log = (cwd / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "composable_dagster.cli", "serve",
         "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
        cwd=cwd, env=env, start_new_session=True, stdout=serve_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = DagsterClient(f"http://127.0.0.1:{dagster_port}/graphql", location=location)
    try:
        deadline = time.monotonic() + 300
        for url in (f"http://127.0.0.1:{dagster_port}/server_info",
                    f"http://127.0.0.1:{api_port}/docs"):  # fmt: skip
            while True:
                try:
                    httpx.get(url, timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or serve.poll() is not None:
                        raise SystemExit(f"serve did not start; see {cwd / 'serve.log'}") from None
                    time.sleep(0.5)
        yield DemoSystem(
            cwd=cwd, env=env, init=init, dagster=client,
            api=f"http://127.0.0.1:{api_port}/api/v1/workspaces/{init['workspace_id']}",
        )  # fmt: skip
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(timeout=60)


_RUN_EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename
      ... on MessageEvent { timestamp stepKey message } } }
  }
}"""


def send(system: DemoSystem, method: str, path: str, body: dict) -> dict:
    response = httpx.request(
        method, system.api + path, json=body, headers=system.headers, timeout=120
    )
    if response.status_code not in (200, 201):
        raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def ltv_tree(threshold: float) -> dict:
    return {"type": "and", "children": [
        {"type": "condition", "condition_type": "property", "column": "lifetime_value",
         "operator": "greater_than", "value": threshold}]}  # fmt: skip


def run_events(system: DemoSystem, run_id: str) -> dict[str, float]:
    """Seconds (epoch) of the run's lifecycle events, by name."""
    data = system.dagster.query(_RUN_EVENTS, {"runId": run_id})["logsForRun"]
    found: dict[str, float] = {}
    for event in data.get("events", []):
        if "timestamp" not in event:
            continue
        name = event["__typename"]
        if name == "ExecutionStepStartEvent":
            name = f"step:{event['stepKey']}"
        elif name == "EngineEvent" and (event.get("message") or "").startswith(
            "Started process for run"
        ):
            name = "worker process started"
        found.setdefault(name, int(event["timestamp"]) / 1000)
    return found


def file_sync(system: DemoSystem, name: str, *, path: str) -> tuple[dict, dict, dict]:
    """A mirror sync of the customers above 900 of lifetime value to CSV files under
    `path`, created through the API: (destination, audience, sync) as the API returned them."""
    destination = send(system, "POST", "/destinations", {
        "name": f"{name} files", "destination_type": "file",
        "config": {"path": path, "format": "csv"}})  # fmt: skip
    audience = send(system, "POST", "/audiences", {
        "name": name, "parent_model_id": system.init["model_ids"]["customers"],
        "filter_tree": ltv_tree(900)})  # fmt: skip
    sync = send(system, "POST", "/audience-syncs", {
        "name": f"{name} sync", "audience_id": audience["id"],
        "destination_id": destination["id"], "sync_mode": "mirror",
        "config": {"max_remove_share": 1},
        "field_mapping": [{"source_column": "email", "destination_field": "email"}]})  # fmt: skip
    return destination, audience, sync
