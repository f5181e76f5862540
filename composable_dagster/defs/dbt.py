"""dbt assets: the models of dbt_project/ as Dagster assets, on the configured warehouse.

(No `from __future__ import annotations` here: Dagster reads the real context annotation.)

The manifest is built into the state directory (never into the repository), and built on
load when it is missing, so a fresh clone's code location loads without a manual step.
"""


import os
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from composable_dagster.demo.dbt_build import (
    DBT_PROJECT_DIR,
    TARGET_ENV_VAR,
    dbt_env_for_warehouse,
    dbt_parse,
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
        target_path=settings.home_dir / "dbt" / target,
    )
    if not Path(project.manifest_path).exists():
        dbt_parse(project.target_path, warehouse_url=settings.resolved_warehouse_url)
    return project


def dbt_definitions(settings: Settings) -> dg.Definitions:
    project = dbt_project(settings)

    @dbt_assets(manifest=project.manifest_path, project=project, name="dbt_models")
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt.cli(["build"], context=context).stream()

    return dg.Definitions(
        assets=[dbt_models],
        resources={"dbt": DbtCliResource(project_dir=project, target=project.target)},
    )
