"""Every kind of edit takes effect on the next run, with the definitions built once.

The definitions hold the graph only; a run reads its tree, mapping, destination, traits,
models and safety settings from the catalog when it starts. Here the edits go through the
real API (whose Dagster is unreachable, so no reload can happen), and every run is a real
Dagster run (`dg.materialize`) of one `Definitions` object built before the first edit.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.defs.load import build_definitions
from composable_dagster.settings import Settings

from ..api.conftest import Tenant, create_demo_models, make_tenant
from ..conftest import DemoEnv, free_port


class Workspace:
    """A workspace of its own on the demo warehouse (the demo's is shared), over HTTP."""

    def __init__(self, client: TestClient, tenant: Tenant) -> None:
        self.client = client
        self.base = f"/api/v1/workspaces/{tenant.workspace_id}"
        self.headers = tenant.headers
        self.model_ids = create_demo_models(client, tenant)

    def send(self, method: str, path: str, body: dict, status: int) -> dict:
        response = self.client.request(method, self.base + path, json=body, headers=self.headers)
        assert response.status_code == status, response.text
        return response.json()


@pytest.fixture
def settings(demo_env: DemoEnv, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("COMPOSABLE_WAREHOUSE") or key == "COMPOSABLE_DBT_TARGET":
            monkeypatch.delenv(key)
    return Settings(
        home=demo_env.cwd / ".composable",
        # Nothing listens there: a reload the API might ask for cannot happen.
        dagster_url=f"http://127.0.0.1:{free_port()}/graphql",
        max_member_drop=1.0,  # the edits below shrink the audience on purpose
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[Workspace]:
    with TestClient(create_app(settings)) as client:
        yield Workspace(client, make_tenant(settings, "Edits"))


def _condition(column: str, operator: str, value: object) -> dict:
    return {"type": "condition", "condition_type": "property", "column": column,
            "operator": operator, "value": value}  # fmt: skip


def _trait_condition(trait_id: str, value: float) -> dict:
    return {"type": "condition", "condition_type": "trait", "trait_id": trait_id,
            "operator": "greater_than_or_equal", "value": value}  # fmt: skip


def test_each_edit_kind_takes_effect_on_the_next_run_without_a_reload(
    settings: Settings, api: Workspace
) -> None:
    model = api.send("POST", "/models", {
        "name": "Edited customers", "primary_key_column": "customer_id",
        "sql_query": "SELECT customer_id, email, country, lifetime_value FROM analytics.customers",
    }, 201)  # fmt: skip
    relationship = api.send("POST", "/relationships", {
        "name": "edited_orders", "from_model_id": model["id"],
        "to_model_id": api.model_ids["orders"], "from_column": "customer_id",
        "to_column": "customer_id",
    }, 201)  # fmt: skip
    trait = api.send("POST", "/traits", {
        "name": "Edited order count", "parent_model_id": model["id"],
        "trait_type": "aggregation",
        "config": {"relationship_id": relationship["id"], "function": "count"},
    }, 201)  # fmt: skip
    destination = api.send("POST", "/destinations", {
        "name": "Edited files", "destination_type": "file",
        "config": {"path": "edits_a", "format": "csv"},
    }, 201)  # fmt: skip
    audience = api.send("POST", "/audiences", {
        "name": "Edited", "parent_model_id": model["id"],
        "filter_tree": {"type": "and", "children": [_trait_condition(trait["id"], 1)]},
    }, 201)  # fmt: skip
    sync = api.send("POST", "/audience-syncs", {
        "name": "Edited sync", "audience_id": audience["id"], "destination_id": destination["id"],
        "sync_mode": "mirror", "config": {"max_remove_share": 1},  # edits below shrink it
        "field_mapping": [{"source_column": "email", "destination_field": "email"}],
    }, 201)  # fmt: skip

    defs = build_definitions(settings)  # once: no edit below rebuilds or reloads it
    audience_key = dg.AssetKey(["edits", "audiences", "edited"])
    sync_key = dg.AssetKey(["edits", "syncs", "edited_sync"])
    versions: list[str] = []

    def run() -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            [defs.get_assets_def(audience_key), defs.get_assets_def(sync_key)],
            resources=defs.resources, selection=[audience_key, sync_key], raise_on_error=False,
        )  # fmt: skip
        for event in result.get_asset_materialization_events():
            if event.asset_key == audience_key:
                versions.append(event.materialization.metadata["catalog_version"].value)
        return result

    def members(result: dg.ExecuteInProcessResult) -> int:
        event = next(
            e for e in result.get_asset_materialization_events() if e.asset_key == audience_key
        )
        return event.materialization.metadata["member_count"].value

    def expected_members() -> int:
        """The audience as stored now, counted exactly by the API's estimate."""
        estimate = api.send("POST", f"/audiences/{audience['id']}/estimate?mode=exact", {}, 200)
        assert estimate["sampled"] is False
        return estimate["estimated_size"]

    def latest_file(directory: str) -> list[dict[str, str]]:
        files = sorted(
            (settings.resolved_export_root / "edits" / directory).rglob("*.csv"),
            key=lambda p: p.stat().st_mtime,
        )
        assert files, f"nothing written to {directory}"
        with Path(files[-1]).open() as f:
            return list(csv.DictReader(f))

    first = run()
    assert first.success
    baseline = members(first)
    assert baseline == expected_members() > 0
    assert list(latest_file("edits_a")[0]) == ["entity_key", "operation", "email"]

    # The tree.
    api.send("PUT", f"/audiences/{audience['id']}", {"filter_tree": {"type": "and", "children": [
        _trait_condition(trait["id"], 1), _condition("lifetime_value", "greater_than", 300)]}},
        200)  # fmt: skip
    after_tree = run()
    assert after_tree.success
    assert members(after_tree) == expected_members() < baseline

    # The model's SQL.
    api.send("PUT", f"/models/{model['id']}", {"sql_query": (
        "SELECT customer_id, email, country, lifetime_value FROM analytics.customers "
        "WHERE country = 'US'")}, 200)  # fmt: skip
    after_model = run()
    assert after_model.success
    assert members(after_model) == expected_members() < members(after_tree)

    # The trait: only orders above 50 count now.
    api.send("PUT", f"/traits/{trait['id']}", {"config": {
        "relationship_id": relationship["id"], "function": "count",
        "filter": {"type": "and", "children": [_condition("amount", "greater_than", 50)]}}},
        200)  # fmt: skip
    after_trait = run()
    assert after_trait.success
    assert members(after_trait) == expected_members() < members(after_model)

    # The mapping.
    api.send("PUT", f"/audience-syncs/{sync['id']}", {"field_mapping": [
        {"source_column": "email", "destination_field": "email"},
        {"source_column": "country", "destination_field": "country"}]}, 200)  # fmt: skip
    assert run().success
    rows = latest_file("edits_a")
    assert list(rows[0]) == ["entity_key", "operation", "email", "country"]
    assert {r["country"] for r in rows} == {"US"}

    # The destination.
    api.send("PUT", f"/destinations/{destination['id']}", {"config": {
        "path": "edits_b", "format": "csv"}}, 200)  # fmt: skip
    assert run().success
    assert len(latest_file("edits_b")) == members(after_trait)

    # The safety settings: a sync that may remove nobody stops when members leave.
    api.send("PUT", f"/audience-syncs/{sync['id']}", {"config": {"max_remove_share": 0}}, 200)
    api.send("PUT", f"/audiences/{audience['id']}", {"filter_tree": {"type": "and", "children": [
        _trait_condition(trait["id"], 1), _condition("lifetime_value", "greater_than", 2000)]}},
        200)  # fmt: skip
    stopped = run()
    assert not stopped.success
    failure = next(e for e in stopped.all_events if e.is_step_failure)
    assert failure.step_failure_data.user_failure_data.description.startswith("safety stop:")
    api.send("PUT", f"/audience-syncs/{sync['id']}", {"config": {"max_remove_share": 1}}, 200)
    assert run().success

    # Each run recorded the catalog version it read; every edit gave a new one.
    assert len(versions) == 8 and len(set(versions)) == 7  # the last two read the same rows
