"""The Dagster code locations: dbt's loads from a fresh state directory and its assets build;
the catalog's never imports dagster-dbt and depends on dbt's assets by the same keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_dbt import get_asset_key_for_model

from composable_dagster.dbt_project import ensure_manifest, model_asset_keys
from composable_dagster.defs.dbt import dbt_definitions
from composable_dagster.defs.load import build_definitions
from composable_dagster.settings import Settings

from .conftest import DEMO_CUSTOMERS, DemoEnv


@pytest.fixture
def demo_settings(demo_env: DemoEnv, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The definitions export dbt's profile variables into the process; keep them per test.
    for key in list(os.environ):
        if key.startswith("COMPOSABLE_WAREHOUSE") or key == "COMPOSABLE_DBT_TARGET":
            monkeypatch.delenv(key)
    return Settings(home=demo_env.cwd / ".composable")


def test_definitions_load_with_dbt_assets(demo_settings: Settings, tmp_path: Path) -> None:
    # A fresh state directory: the manifest is parsed on load, nothing prepared by hand.
    settings = Settings(home=tmp_path / "fresh", warehouse_url=demo_settings.resolved_warehouse_url)
    defs = dbt_definitions(settings)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"customers", "orders", "events"} <= keys
    assert (tmp_path / "fresh" / "dbt" / "duckdb" / "target" / "manifest.json").is_file()
    orders = defs.resolve_asset_graph().get(dg.AssetKey("orders"))
    assert dg.AssetKey(["raw", "orders"]) in orders.parent_keys


def test_materialize_dbt_assets(demo_settings: Settings) -> None:
    defs = dbt_definitions(demo_settings)
    assets = list(defs.assets or [])
    result = dg.materialize(assets, resources=dict(defs.resources or {}))
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"customers", "orders", "events"}
    path = demo_settings.resolved_warehouse_url.removeprefix("duckdb:///")
    with duckdb.connect(path, read_only=True) as con:
        count = con.execute("SELECT count(*) FROM analytics.customers").fetchone()
    assert count == (DEMO_CUSTOMERS,)


def test_the_catalog_location_knows_each_dbt_models_key_as_dagster_dbt_does(
    demo_settings: Settings,
) -> None:
    defs = dbt_definitions(demo_settings)
    [dbt_models] = list(defs.assets or [])
    manifest = ensure_manifest(demo_settings.home_dir, demo_settings.resolved_warehouse_url)
    ours = model_asset_keys(manifest)
    nodes = json.loads(manifest.read_text())["nodes"].values()
    models = [n for n in nodes if n["resource_type"] == "model"]
    assert len(models) == 3
    for node in models:
        theirs = get_asset_key_for_model([dbt_models], node["name"])
        assert dg.AssetKey(list(ours[(node["schema"].lower(), node["alias"].lower())])) == theirs


def test_a_sync_runs_code_location_never_imports_dagster_dbt(demo_env: DemoEnv) -> None:
    """What every run worker of a sync loads: its start is a second shorter without it."""
    code = (
        "import sys; from composable_dagster.definitions import defs;"
        "defs().resolve_asset_graph();"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(('dagster_dbt', 'dbt.')))))"
    )
    env = {**demo_env.env, "COMPOSABLE_HOME": str(demo_env.cwd / ".composable")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=demo_env.cwd, env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def test_the_catalog_definitions_are_rebuilt_when_the_dbt_manifest_changes(
    demo_settings: Settings,
) -> None:
    """The code server reloads in one process and reuses a build while its inputs are
    unchanged (defs/load.py): a new manifest (dbt models added or removed) is one of them."""
    first = build_definitions(demo_settings)
    assert build_definitions(demo_settings) is first  # nothing changed: the same build
    manifest = ensure_manifest(demo_settings.home_dir, demo_settings.resolved_warehouse_url)
    stamp = manifest.stat()
    # A `dbt parse` rewrites it: a new modification time, here with the same bytes.
    os.utime(manifest, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    try:
        second = build_definitions(demo_settings)
        assert second is not first
        assert build_definitions(demo_settings) is second
    finally:
        os.utime(manifest, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
