"""Definitions from the catalog's graph: an asset per audience and per sync (a subsettable
multi-asset of each kind per workspace), and schedules.

A plain, deterministic factory over the (pinned) graph of catalog/graph.py. It holds no
tree, mapping or destination config: runs read those when they start (catalog/resolve.py),
so an edit of content never waits for this to be rebuilt. One bad row never stops the code
location from loading: an invalid cron leaves its sync manual (the API refuses such crons
anyway), and a tree that stopped compiling fails only its own materialization.
"""

import contextlib
import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

import dagster as dg

from composable_dagster.catalog.graph import CatalogGraph, TableName
from composable_dagster.defs.audiences import AudienceAssetSpec, build_audience_assets
from composable_dagster.defs.resources import ActivationStoreResource, CatalogResource
from composable_dagster.defs.syncs import SyncAssetSpec, build_sync_assets, build_sync_schedule
from composable_dagster.names import audience_path, sync_path


def catalog_definitions(
    graph: CatalogGraph,
    *,
    table_assets: Mapping[TableName, dg.AssetKey],
    kind: str,
    max_member_drop: float,
    activation: ActivationStoreResource,
    catalog: CatalogResource,
    only: AbstractSet[dg.AssetKey] | None = None,
) -> dg.Definitions:
    """Assets, checks and schedules for every workspace in `graph`.

    Args:
        graph: The catalog's graph the definitions are built from.
        table_assets: Warehouse tables produced by assets (dbt models), so audiences depend
            on the asset that builds each table they read.
        kind: The warehouse's dialect, shown as the audience assets' kind.
        max_member_drop: Largest share of members an audience may lose in one
            materialization before its blocking check stops its syncs.
        activation: Where the assets store memberships and snapshots.
        catalog: The catalog as runs read it when they start.
        only: The assets to build (a run worker's run), without schedules; None: all.
    """
    assets: list[dg.AssetsDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    for workspace in graph.workspaces:
        model_deps = {
            model_id: [key for t in tables if (key := _table_asset(t, table_assets))]
            for model_id, tables in workspace.model_tables.items()
        }
        audience_keys = {
            a.id: dg.AssetKey(list(audience_path(workspace.slug, a.slug)))
            for a in workspace.audiences
        }
        audience_specs = []
        for audience in workspace.audiences:
            if only is not None and audience_keys[audience.id] not in only:
                continue
            deps = {key for m in audience.model_ids for key in model_deps.get(m, ())}
            deps |= {audience_keys[a] for a in audience.audience_ids if a in audience_keys}
            audience_specs.append(
                AudienceAssetSpec(
                    key=audience_keys[audience.id],
                    audience_id=audience.id,
                    name=audience.name,
                    description=audience.description,
                    group_name=workspace.slug,
                    deps=sorted(deps, key=lambda k: k.to_user_string()),
                    kind=kind,
                    max_member_drop=max_member_drop,
                )
            )
        op_prefix = _OP_NAME_UNSAFE.sub("_", workspace.slug)
        if audience_specs:
            assets.append(build_audience_assets(audience_specs, name=f"{op_prefix}__audiences"))
        sync_specs = []
        for sync in workspace.syncs:
            key = dg.AssetKey(list(sync_path(workspace.slug, sync.slug)))
            if only is not None and key not in only:
                continue
            spec = SyncAssetSpec(
                key=key,
                audience_key=audience_keys[sync.audience_id],
                sync_id=sync.id,
                workspace_id=workspace.id,
                name=sync.name,
                description=sync.description,
                group_name=workspace.slug,
                destination_type=sync.destination_type,
                sync_mode=sync.sync_mode,
                schedule=sync.schedule,
                status=sync.status,
            )
            sync_specs.append(spec)
            # A cron Dagster refuses (stored before the API checked it as Dagster does)
            # leaves its sync manual: one row never breaks the whole location's load.
            with contextlib.suppress(dg.DagsterInvalidDefinitionError):
                if spec.schedule and only is None:
                    schedules.append(build_sync_schedule(spec))
        if sync_specs:
            assets.append(build_sync_assets(sync_specs, name=f"{op_prefix}__syncs"))
    return dg.Definitions(
        assets=assets,
        schedules=schedules,
        resources={"activation": activation, "catalog": catalog},
    )


_OP_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_]")  # a slug from before slugs were checked


def _table_asset(
    table: TableName, table_assets: Mapping[TableName, dg.AssetKey]
) -> dg.AssetKey | None:
    return table_assets.get(table) or table_assets.get((None, table[1]))
