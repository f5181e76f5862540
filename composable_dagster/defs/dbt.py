"""The dbt code location's assets: the models of dbt_project/ on the configured warehouse.

(No `from __future__ import annotations` here: Dagster reads the real context annotation.)

A code location of its own (`composable_dbt`, composable_dagster/dbt_definitions.py): the
catalog's location, which every sync run loads, never imports dagster-dbt, and reloading it
after a catalog change never reparses dbt. Audiences depend on these assets by key, across
the two locations. The manifest is built into the state directory (never into the
repository), and on load when it is missing, so a fresh clone loads without a manual step.
"""

import os

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from composable_dagster.dbt_project import (
    DBT_PROJECT_DIR,
    TARGET_ENV_VAR,
    dbt_env_for_warehouse,
    dbt_executable,
    ensure_manifest,
)
from composable_dagster.settings import Settings


def dbt_project(settings: Settings) -> DbtProject:
    """The dbt project targeting the warehouse in `settings`, with its manifest prepared."""
    env = dbt_env_for_warehouse(settings.resolved_warehouse_url)
    # dbt reads its profile from the environment; the run workers inherit it from here.
    os.environ.update(env)
    manifest = ensure_manifest(settings.home_dir, settings.resolved_warehouse_url)
    return DbtProject(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        target=env[TARGET_ENV_VAR],
        # Where `composable init` built: a fresh demo loads without parsing again.
        target_path=manifest.parent,
    )


def dbt_definitions(settings: Settings) -> dg.Definitions:
    project = dbt_project(settings)

    # A DuckDB warehouse file admits one writer, and the API holds it open read-only for a
    # few seconds after an estimate: a build that finds it busy tries again shortly.
    retry = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)

    @dbt_assets(
        manifest=project.manifest_path, project=project, name="dbt_models", retry_policy=retry
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt.cli(["build"], context=context).stream()

    return dg.Definitions(
        assets=[dbt_models],
        resources={
            "dbt": DbtCliResource(
                project_dir=project, target=project.target, dbt_executable=dbt_executable()
            )
        },
        executor=dg.in_process_executor,
    )
