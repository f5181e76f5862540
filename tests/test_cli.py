"""The `composable` command, run as a newcomer would: init --demo, api, serve."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import DemoEnv, free_port, run_cli, wait_for_http

README = Path(__file__).resolve().parents[1] / "README.md"


def test_init_demo_is_idempotent(demo_env: DemoEnv) -> None:
    first = demo_env.init_output
    assert set(first["model_ids"]) == {"customers", "orders", "events"}
    assert set(first["trait_ids"]) == {
        "order_count", "total_spend", "last_order_at", "average_order_value",
    }  # fmt: skip
    assert first["api_key"].startswith("cdk_")
    again = json.loads(run_cli(["init", "--demo"], cwd=demo_env.cwd, env=demo_env.env))
    assert again == first
    # The build left its manifest where the code location loads it: no parse at first load.
    assert (demo_env.cwd / ".composable/dbt/duckdb/target/manifest.json").is_file()


def test_keys_and_workspaces_commands(demo_env: DemoEnv) -> None:
    created = json.loads(
        run_cli(["workspaces", "create", "Marketing"], cwd=demo_env.cwd, env=demo_env.env)
    )
    assert created["slug"] == "marketing"
    key = json.loads(
        run_cli(["keys", "create", "--workspace", "marketing"], cwd=demo_env.cwd, env=demo_env.env)
    )
    assert key["workspace_id"] == created["workspace_id"] and key["key"] != created["api_key"]
    duplicate = subprocess.run(
        [sys.executable, "-m", "composable_dagster.cli", "workspaces", "create", "Marketing"],
        cwd=demo_env.cwd, env=demo_env.env, capture_output=True, text=True,
    )  # fmt: skip
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr


def _readme_example() -> str:
    text = README.read_text()
    block = re.search(
        r"<!-- readme-example: begin -->\s*```bash\n(.*?)```\s*<!-- readme-example: end -->",
        text,
        re.S,
    )
    assert block is not None, "README lost its example block"
    return block.group(1)


def test_readme_curl_examples_work_as_written(demo_env: DemoEnv) -> None:
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "composable_dagster.cli", "api", "--port", str(port)],
        cwd=demo_env.cwd, env=demo_env.env,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/docs", timeout=60, process=api)
        # The only change to the README's text: the port of this test's server.
        script = _readme_example().replace(
            "API=http://127.0.0.1:8000", f"API=http://127.0.0.1:{port}"
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=demo_env.cwd, env=demo_env.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert '"name": "customers"' in result.stdout
        assert '"entity_type": "event"' in result.stdout
        relationship = json.loads(result.stdout[result.stdout.rindex("{\n  ") :])
        assert relationship["name"] == "customer_recent_orders"
        assert relationship["cardinality"] == "one_to_many"

        ws = demo_env.init_output["workspace_id"]
        headers = {
            "Authorization": f"Bearer {demo_env.init_output['api_key']}",
            "X-Workspace-ID": ws,
        }
        models = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/workspaces/{ws}/models", headers=headers
        ).json()
        recent = next(m for m in models if m["name"] == "recent_orders")
        assert recent["model_type"] == "sql"
        assert "category" in [c["name"] for c in recent["columns"]]
    finally:
        api.terminate()
        api.wait(timeout=30)


@pytest.mark.e2e
def test_serve_starts_dagster_and_api_and_ctrl_c_stops_both(demo_env: DemoEnv) -> None:
    dagster_port, api_port = free_port(), free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "composable_dagster.cli", "serve",
         "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
        cwd=demo_env.cwd, env=demo_env.env,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{api_port}/docs", timeout=60, process=serve)
        wait_for_http(f"http://127.0.0.1:{dagster_port}/server_info", timeout=180, process=serve)
        # The dbt models are in the code location's asset graph.
        query = "{ assetNodes { assetKey { path } } }"
        deadline = time.monotonic() + 120
        paths: list[list[str]] = []
        while time.monotonic() < deadline and ["customers"] not in paths:
            answer = httpx.post(
                f"http://127.0.0.1:{dagster_port}/graphql", json={"query": query}, timeout=30
            ).json()
            paths = [n["assetKey"]["path"] for n in answer.get("data", {}).get("assetNodes", [])]
            time.sleep(1)
        assert {"customers", "orders", "events"} <= {p[-1] for p in paths}, paths

        os.killpg(serve.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        assert serve.wait(timeout=60) == 0
        for port in (dagster_port, api_port):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
