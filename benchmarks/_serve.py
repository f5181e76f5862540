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
def serving(cwd: Path, env: dict[str, str], init: dict) -> Iterator[DemoSystem]:
    """`composable serve` over the demo in `cwd` until the block ends."""
    dagster_port, api_port = free_port(), free_port()
    serve_log = (cwd / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "composable_dagster.cli", "serve",
         "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
        cwd=cwd, env=env, start_new_session=True, stdout=serve_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = DagsterClient(f"http://127.0.0.1:{dagster_port}/graphql", location="composable")
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
