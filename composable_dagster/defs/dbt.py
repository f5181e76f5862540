"""dbt assets: the models of dbt_project/ as Dagster assets, on the configured warehouse.

(No `from __future__ import annotations` here: Dagster reads the real context annotation.)

The manifest is built into the state directory (never into the repository), and built on
load when it is missing, so a fresh clone's code location loads without a manual step.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets, get_asset_key_for_model

from composable_dagster.demo.dbt_build import (
    DBT_PROJECT_DIR,
    TARGET_ENV_VAR,
    dbt_env_for_warehouse,
    dbt_parse,
    dbt_state_dir,
    dbt_target_dir,
)
from composable_dagster.settings import Settings


def dbt_project(settings: Settings) -> DbtProject:
    """The dbt project targeting the warehouse in `settings`, with its manifest prepared."""
    env = dbt_env_for_warehouse(settings.resolved_warehouse_url)
    target = env[TARGET_ENV_VAR]
    # dbt reads its profile from the environment; the run workers inherit it from here.
    os.environ.update(env)
    project = DbtProject(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        target=target,
        # Where `composable init` built: a fresh demo loads without parsing again.
        target_path=dbt_target_dir(
            dbt_state_dir(settings.home_dir, settings.resolved_warehouse_url)
        ),
    )
    if not Path(project.manifest_path).exists():
        dbt_parse(project.target_path, warehouse_url=settings.resolved_warehouse_url)
    return project


@dataclass(frozen=True)
class DbtLayer:
    """The dbt assets, and which warehouse table each dbt model builds."""

    definitions: dg.Definitions
    table_assets: Mapping[tuple[str | None, str], dg.AssetKey]


def dbt_definitions(settings: Settings) -> DbtLayer:
    project = dbt_project(settings)

    # A DuckDB warehouse file admits one writer, and the API holds it open read-only for a
    # few seconds after an estimate: a build that finds it busy tries again shortly.
    retry = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)

    @dbt_assets(
        manifest=project.manifest_path, project=project, name="dbt_models", retry_policy=retry
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt.cli(["build"], context=context).stream()

    manifest = json.loads(Path(project.manifest_path).read_text())
    table_assets: dict[tuple[str | None, str], dg.AssetKey] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model":
            continue
        key = get_asset_key_for_model([dbt_models], node["name"])
        table = (node.get("alias") or node["name"]).lower()
        table_assets[(node["schema"].lower(), table)] = key
        table_assets.setdefault((None, table), key)
    return DbtLayer(
        definitions=dg.Definitions(
            assets=[dbt_models],
            resources={"dbt": DbtCliResource(project_dir=project, target=project.target)},
        ),
        table_assets=table_assets,
    )
