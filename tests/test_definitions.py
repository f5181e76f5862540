"""The Dagster code location: it loads from a fresh state directory and its dbt assets build."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from composable_dagster.defs.dbt import dbt_definitions
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
    defs = dbt_definitions(settings).definitions
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"customers", "orders", "events"} <= keys
    assert (tmp_path / "fresh" / "dbt" / "duckdb" / "target" / "manifest.json").is_file()
    orders = defs.resolve_asset_graph().get(dg.AssetKey("orders"))
    assert dg.AssetKey(["raw", "orders"]) in orders.parent_keys


def test_materialize_dbt_assets(demo_settings: Settings) -> None:
    defs = dbt_definitions(demo_settings).definitions
    assets = list(defs.assets or [])
    result = dg.materialize(assets, resources=dict(defs.resources or {}))
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"customers", "orders", "events"}
    path = demo_settings.resolved_warehouse_url.removeprefix("duckdb:///")
    with duckdb.connect(path, read_only=True) as con:
        count = con.execute("SELECT count(*) FROM analytics.customers").fetchone()
    assert count == (DEMO_CUSTOMERS,)
