"""End to end on a real `composable serve`: reload over GraphQL, launch, read back, and run
workers that rebuild the definitions from the pinned graph."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from composable_dagster.api.dagster_client import DagsterClient
from composable_dagster.api.runs import run_error
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.tables import Audience, Sync
from composable_dagster.names import TAG_SYNC
from composable_dagster.settings import Settings

from ..conftest import DemoEnv, RunningSystem

pytestmark = pytest.mark.e2e


def _asset_paths(client: DagsterClient) -> set[tuple[str, ...]]:
    data = client.query("{ assetNodes { assetKey { path } } }")
    return {tuple(n["assetKey"]["path"]) for n in data["assetNodes"]}


def _add_audience_and_sync(
    running_system: RunningSystem, demo_env: DemoEnv, name: str
) -> tuple[str, str]:
    out = demo_env.init_output
    response = httpx.post(
        f"{running_system.workspace_url}/audiences",
        headers=running_system.headers,
        json={"name": name, "parent_model_id": out["model_ids"]["customers"],
              "filter_tree": {"type": "and", "children": [
                  {"type": "condition", "condition_type": "property",
                   "column": "lifetime_value", "operator": "greater_than", "value": 700}]}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    audience_id = response.json()["id"]
    sync = httpx.post(
        f"{running_system.workspace_url}/audience-syncs",
        headers=running_system.headers,
        json={"name": f"{name} sync", "audience_id": audience_id,
              "destination_id": out["destination_id"], "sync_mode": "mirror",
              "field_mapping": [{"source_column": "email", "destination_field": "email"}]},
    )  # fmt: skip
    assert sync.status_code == 201, sync.text
    settings = Settings(home=demo_env.cwd / ".composable")
    with catalog_session(settings.resolved_catalog_url) as session:
        audience_slug = session.get(Audience, audience_id).slug
        sync_slug = session.get(Sync, sync.json()["id"]).slug
    return audience_slug, sync_slug, sync.json()["id"]


def test_reload_launch_and_read_back(running_system: RunningSystem, demo_env: DemoEnv) -> None:
    slug, sync_slug, sync_id = _add_audience_and_sync(running_system, demo_env, "E2E buyers")
    audience_path = ("demo", "audiences", slug)
    sync_path = ("demo", "syncs", sync_slug)
    seconds = running_system.dagster.reload_location()
    assert seconds < 60
    assert {audience_path, sync_path} <= _asset_paths(running_system.dagster)

    tags = {"composable/sync_id": sync_id, "composable/trigger": "api"}
    launched = running_system.dagster.launch_assets([audience_path, sync_path], tags=tags)
    finished = running_system.dagster.wait_for_run(launched.run_id, timeout=180)
    assert finished.status == "SUCCESS", finished
    assert finished.tags["composable/sync_id"] == sync_id
    assert [
        r.run_id for r in running_system.dagster.runs(tags={"composable/sync_id": sync_id})
    ] == [launched.run_id]

    materialization = running_system.dagster.materializations(list(audience_path))[0]
    assert materialization["run_id"] == launched.run_id
    exact = httpx.post(
        f"{running_system.workspace_url}/models/{demo_env.init_output['model_ids']['customers']}"
        "/estimate-filter?mode=exact",
        headers=running_system.headers,
        json={"filter_tree": {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "lifetime_value",
             "operator": "greater_than", "value": 700}]}},
    ).json()  # fmt: skip
    assert materialization["metadata"]["member_count"] == exact["estimated_size"] > 0
    sync_metadata = running_system.dagster.materializations(list(sync_path))[0]["metadata"]
    assert sync_metadata["rows_added"] == exact["estimated_size"]


def test_a_run_launched_before_its_sync_was_deleted_fails_with_the_reason(
    running_system: RunningSystem, demo_env: DemoEnv
) -> None:
    """The run worker rebuilds the graph the run was launched from (pinned), so the run
    starts; its content is read from the catalog, where the rows are gone: the audience step
    fails saying so, and the sync step never sends anything."""
    slug, sync_slug, sync_id = _add_audience_and_sync(running_system, demo_env, "Soon deleted")
    running_system.dagster.reload_location()
    audience_path = ("demo", "audiences", slug)
    sync_path = ("demo", "syncs", sync_slug)

    # Deleted from the catalog after the code server loaded it, with no reload.
    settings = Settings(home=demo_env.cwd / ".composable")
    with catalog_session(settings.resolved_catalog_url) as session:
        session.delete(session.get(Sync, sync_id))
        session.flush()
        session.delete(session.scalars(sa.select(Audience).where(Audience.slug == slug)).one())

    launched = running_system.dagster.launch_assets(
        [audience_path, sync_path], tags={TAG_SYNC: sync_id}
    )
    finished = running_system.dagster.wait_for_run(launched.run_id, timeout=180)
    assert finished.status == "FAILURE", finished
    assert run_error(running_system.dagster, launched.run_id) == (
        "audience 'Soon deleted' was deleted after this run was launched; nothing was computed"
    )
    assert running_system.dagster.materializations(list(sync_path)) == []

    running_system.dagster.reload_location()
    assert audience_path not in _asset_paths(running_system.dagster)


def test_dbt_models_show_as_materialized_after_init(running_system: RunningSystem) -> None:
    """`init --demo` built them with dbt: Dagster records that, so the UI does not show them
    as never materialized before the first run."""
    for model in ("customers", "orders", "events"):
        [latest] = running_system.dagster.materializations([model], limit=1)
        assert latest["metadata"]["dbt_build_seconds"] > 0, model
