"""End to end on a real `composable serve`: reload over GraphQL, launch, read back, and run
workers that rebuild the definitions from the pinned catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa

from composable_dagster.api.dagster_client import DagsterClient
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.tables import Audience, Sync
from composable_dagster.settings import Settings

from ..conftest import DemoEnv, free_port, wait_for_http

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Running:
    api: str
    dagster: DagsterClient
    headers: dict[str, str]
    workspace_url: str


@pytest.fixture(scope="module")
def running(demo_env: DemoEnv) -> Iterator[Running]:
    dagster_port, api_port = free_port(), free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "composable_dagster.cli", "serve",
         "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
        cwd=demo_env.cwd, env=demo_env.env, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{api_port}/docs", timeout=60, process=serve)
        wait_for_http(f"http://127.0.0.1:{dagster_port}/server_info", timeout=180, process=serve)
        ws = demo_env.init_output["workspace_id"]
        yield Running(
            api=f"http://127.0.0.1:{api_port}",
            dagster=DagsterClient(
                f"http://127.0.0.1:{dagster_port}/graphql", location="composable"
            ),
            headers={
                "Authorization": f"Bearer {demo_env.init_output['api_key']}",
                "X-Workspace-ID": ws,
            },
            workspace_url=f"http://127.0.0.1:{api_port}/api/v1/workspaces/{ws}",
        )
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)


def _asset_paths(client: DagsterClient) -> set[tuple[str, ...]]:
    data = client.query("{ assetNodes { assetKey { path } } }")
    return {tuple(n["assetKey"]["path"]) for n in data["assetNodes"]}


def _add_audience_and_sync(running: Running, demo_env: DemoEnv, name: str) -> tuple[str, str]:
    out = demo_env.init_output
    response = httpx.post(
        f"{running.workspace_url}/audiences",
        headers=running.headers,
        json={"name": name, "parent_model_id": out["model_ids"]["customers"],
              "filter_tree": {"type": "and", "children": [
                  {"type": "condition", "condition_type": "property",
                   "column": "lifetime_value", "operator": "greater_than", "value": 700}]}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    audience_id = response.json()["id"]
    settings = Settings(home=demo_env.cwd / ".composable")
    with catalog_session(settings.resolved_catalog_url) as session:
        slug = session.get(Audience, audience_id).slug
        sync = Sync(workspace_id=out["workspace_id"], audience_id=audience_id,
                    destination_id=out["destination_id"], name=f"{name} sync",
                    slug=f"{slug}_sync", sync_mode="mirror", status="active",
                    status_error="")  # fmt: skip
        session.add(sync)
        session.flush()
        return slug, sync.id


def test_reload_launch_and_read_back(running: Running, demo_env: DemoEnv) -> None:
    slug, sync_id = _add_audience_and_sync(running, demo_env, "E2E buyers")
    audience_path = ("demo", "audiences", slug)
    sync_path = ("demo", "syncs", f"{slug}_sync")
    assert audience_path not in _asset_paths(running.dagster)

    seconds = running.dagster.reload_location()
    assert seconds < 60
    assert {audience_path, sync_path} <= _asset_paths(running.dagster)

    tags = {"composable/sync_id": sync_id, "composable/trigger": "api"}
    launched = running.dagster.launch_assets([audience_path, sync_path], tags=tags)
    finished = running.dagster.wait_for_run(launched.run_id, timeout=180)
    assert finished.status == "SUCCESS", finished
    assert finished.tags["composable/sync_id"] == sync_id
    assert [r.run_id for r in running.dagster.runs(tags={"composable/sync_id": sync_id})] == [
        launched.run_id
    ]

    materialization = running.dagster.materializations(list(audience_path))[0]
    assert materialization["run_id"] == launched.run_id
    exact = httpx.post(
        f"{running.workspace_url}/models/{demo_env.init_output['model_ids']['customers']}"
        "/estimate-filter?mode=exact",
        headers=running.headers,
        json={"filter_tree": {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "lifetime_value",
             "operator": "greater_than", "value": 700}]}},
    ).json()  # fmt: skip
    assert materialization["metadata"]["member_count"] == exact["estimated_size"] > 0
    sync_metadata = running.dagster.materializations(list(sync_path))[0]["metadata"]
    assert sync_metadata["rows_planned_add"] == exact["estimated_size"]


def test_run_workers_use_the_pinned_catalog(running: Running, demo_env: DemoEnv) -> None:
    slug, sync_id = _add_audience_and_sync(running, demo_env, "Soon deleted")
    running.dagster.reload_location()
    audience_path = ("demo", "audiences", slug)
    sync_path = ("demo", "syncs", f"{slug}_sync")

    # Deleted from the catalog after the code server loaded it, with no reload: the run
    # worker must rebuild the definitions the run was launched from, not today's catalog.
    settings = Settings(home=demo_env.cwd / ".composable")
    with catalog_session(settings.resolved_catalog_url) as session:
        session.delete(session.get(Sync, sync_id))
        session.flush()
        session.delete(session.scalars(sa.select(Audience).where(Audience.slug == slug)).one())

    launched = running.dagster.launch_assets(
        [audience_path, sync_path], tags={"composable/sync_id": sync_id}
    )
    finished = running.dagster.wait_for_run(launched.run_id, timeout=180)
    assert finished.status == "SUCCESS", finished

    running.dagster.reload_location()
    assert audience_path not in _asset_paths(running.dagster)
