"""Definitions from the catalog: an asset per audience and per sync, and schedules.

A plain, deterministic factory over the (pinned) catalog export. One bad row never stops
the code location from loading: an invalid cron leaves its sync manual (the API refuses
such crons anyway), and a tree that stopped compiling fails only its own materialization.
"""

import contextlib
from collections.abc import Callable, Mapping, Sequence

import dagster as dg
from sqlglot import exp

from composable_dagster.catalog.export import CatalogRows
from composable_dagster.catalog.schema_view import schema_from_rows
from composable_dagster.catalog.syncs import valid_cron
from composable_dagster.catalog.tables import Destination, Model, SplitGroup, Sync
from composable_dagster.defs.audiences import AudienceAssetSpec, build_audience_asset
from composable_dagster.defs.resources import ActivationStoreResource, CatalogResource
from composable_dagster.defs.syncs import (
    SyncAssetSpec,
    build_sync_asset,
    build_sync_schedule,
)
from composable_dagster.destinations import DestinationScope, destination_type
from composable_dagster.destinations.pii import HASHED_FIELDS
from composable_dagster.errors import DomainError
from composable_dagster.filters import (
    CatalogSchema,
    FilterError,
    referenced_ids,
    referenced_model_ids,
)
from composable_dagster.filters.user_sql import parse_select
from composable_dagster.sync.engine import SafetyConfig, SyncJob
from composable_dagster.sync.plan import SyncMode, membership_row_hash, resolve_field_mapping
from composable_dagster.sync.splits import GroupShare, split_ranges

TableName = tuple[str | None, str]  # (schema, table), lower case


def audience_key(workspace_slug: str, audience_slug: str) -> dg.AssetKey:
    return dg.AssetKey([workspace_slug, "audiences", audience_slug])


def sync_key(workspace_slug: str, sync_slug: str) -> dg.AssetKey:
    return dg.AssetKey([workspace_slug, "syncs", sync_slug])


def catalog_definitions(
    rows: CatalogRows,
    *,
    table_assets: Mapping[TableName, dg.AssetKey],
    dialect: str,
    max_member_drop: float,
    activation: ActivationStoreResource,
    catalog: CatalogResource,
    destination_scope: Callable[[str], DestinationScope],
) -> dg.Definitions:
    """Assets, checks and schedules for every workspace in `rows`.

    Args:
        rows: The catalog export the definitions are built from.
        table_assets: Warehouse tables produced by assets (dbt models), so audiences depend
            on the asset that builds each table they read.
        dialect: The warehouse's SQL dialect (model SQL is read in it for the assets' deps;
            shown as the audience assets' kind).
        max_member_drop: Largest share of members an audience may lose in one
            materialization before its blocking check stops its syncs.
        activation: Where the assets store memberships and snapshots.
        catalog: The catalog as runs read it (destination secrets, decrypted at run time).
        destination_scope: Where the destinations of the workspace with this slug may write.
    """
    assets: list[dg.AssetsDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    for workspace in rows.workspaces:
        models = rows.of_workspace(workspace.id, "models")
        audiences = rows.of_workspace(workspace.id, "audiences")
        schema = schema_from_rows(
            models=models,
            relationships=rows.of_workspace(workspace.id, "relationships"),
            traits=rows.of_workspace(workspace.id, "traits"),
            audiences=audiences,
        )
        destinations = {d.id: d for d in rows.of_workspace(workspace.id, "destinations")}
        audience_ids = {a.id for a in audiences}
        syncs = [
            s
            for s in rows.of_workspace(workspace.id, "syncs")
            if s.audience_id in audience_ids and s.destination_id in destinations
        ]
        jobs_by_sync = {
            sync.id: _sync_job(
                sync, schema=schema, destination=destinations[sync.destination_id],
                split_groups=rows.of_workspace(workspace.id, "split_groups"),
                scope=destination_scope(workspace.slug),
            )
            for sync in syncs
        }  # fmt: skip
        row_hashes = _row_hashes_by_audience(
            [job for job, _problem in jobs_by_sync.values() if job is not None], dialect=dialect
        )
        model_deps = {m.id: _model_assets(m, table_assets, dialect=dialect) for m in models}
        audience_keys = {a.id: audience_key(workspace.slug, a.slug) for a in audiences}
        for audience in audiences:
            try:
                used_models = referenced_model_ids(
                    audience.filter_tree, parent_model_id=audience.parent_model_id, schema=schema
                )
                used_audiences = referenced_ids(audience.filter_tree).audience_ids
            except FilterError:
                used_models, used_audiences = frozenset({audience.parent_model_id}), frozenset()
            deps = {key for m in used_models for key in model_deps.get(m, ())}
            deps |= {audience_keys[a] for a in used_audiences if a in audience_keys}
            assets.append(
                build_audience_asset(
                    AudienceAssetSpec(
                        key=audience_keys[audience.id],
                        audience_id=audience.id,
                        workspace_id=workspace.id,
                        name=audience.name,
                        description=audience.description,
                        group_name=workspace.slug,
                        parent_model_id=audience.parent_model_id,
                        filter_tree=audience.filter_tree,
                        schema=schema,
                        deps=sorted(deps, key=lambda k: k.to_user_string()),
                        kind=dialect,
                        max_member_drop=max_member_drop,
                        row_hashes=row_hashes.get(audience.id, {}),
                    )
                )
            )
        for sync in syncs:
            job, problem = jobs_by_sync[sync.id]
            spec = SyncAssetSpec(
                key=sync_key(workspace.slug, sync.slug),
                audience_key=audience_keys[sync.audience_id],
                sync_id=sync.id,
                audience_id=sync.audience_id,
                workspace_id=workspace.id,
                name=sync.name,
                description=sync.description,
                group_name=workspace.slug,
                destination_type=destinations[sync.destination_id].destination_type,
                sync_mode=sync.sync_mode,
                schedule=sync.schedule if sync.schedule and valid_cron(sync.schedule) else None,
                status=sync.status,
                job=job,
                problem=problem,
            )
            assets.append(build_sync_asset(spec))
            # A cron Dagster refuses (stored before the API checked it as Dagster does)
            # leaves its sync manual: one row never breaks the whole location's load.
            with contextlib.suppress(dg.DagsterInvalidDefinitionError):
                if spec.schedule:
                    schedules.append(build_sync_schedule(spec))
    return dg.Definitions(
        assets=assets,
        schedules=schedules,
        resources={"activation": activation, "catalog": catalog},
    )


def _sync_job(
    sync: Sync,
    *,
    schema: CatalogSchema,
    destination: Destination,
    split_groups: Sequence[SplitGroup],
    scope: DestinationScope,
) -> tuple[SyncJob | None, str]:
    """The sync's run, resolved; or None and the reason it cannot run as stored.

    The destination config here is the public one (secrets masked, as the export carries
    it): the sync asset replaces it with the stored config when its run starts.
    """
    audience = schema.audiences[sync.audience_id]
    parent = schema.models[audience.parent_model_id]
    try:
        kind = destination_type(destination.destination_type)
        split = None
        if sync.split_group_id is not None:
            group = next(g for g in split_groups if g.id == sync.split_group_id)
            shares = [
                GroupShare(group_id=g.id, percentage=g.percentage, position=g.position)
                for g in split_groups
                if g.split_id == group.split_id
            ]
            split = split_ranges(group.split_id, shares)[group.id]
        job = SyncJob(
            sync_id=sync.id,
            audience_id=sync.audience_id,
            mode=SyncMode(sync.sync_mode),
            fields=resolve_field_mapping(
                sync.field_mapping, parent=parent, schema=schema, hashed_fields=HASHED_FIELDS
            ),
            parent=parent,
            schema=schema,
            destination=kind,
            destination_config=kind.parse_config(destination.config, scope=scope),
            destination_id=destination.id,
            safety=SafetyConfig.from_config(sync.config),
            split=split,
        )
    except (DomainError, StopIteration, ValueError) as err:
        return None, str(err) or type(err).__name__
    return job, ""


def _row_hashes_by_audience(
    jobs: Sequence[SyncJob], *, dialect: str
) -> dict[str, dict[str, tuple[str, ...]]]:
    """Per audience, the row hashes its materialization stores for its syncs' mappings."""
    hashes: dict[str, dict[str, tuple[str, ...]]] = {}
    for job in jobs:
        column = membership_row_hash(job.fields, dialect=dialect)
        if column is not None:
            hashes.setdefault(job.audience_id, {})[column.name] = column.columns
    return hashes


def _model_assets(
    model: Model, table_assets: Mapping[TableName, dg.AssetKey], *, dialect: str
) -> Sequence[dg.AssetKey]:
    """The assets that build the tables a model reads (its table, or its query's tables)."""
    if model.model_type == "table" and model.source_table:
        names: list[TableName] = [(model.source_schema, model.source_table)]
    else:
        try:
            # The one parser of workspace SQL: bounded, so no stored query can fail the load.
            parsed = parse_select(model.sql_query or "", dialect=dialect, field="sql_query")
        except FilterError:
            return []  # its audiences fail at materialization, with the parser's reason
        names = [(t.db or None, t.name) for t in parsed.find_all(exp.Table)]
    keys = []
    for schema, table in names:
        key = table_assets.get(((schema or "").lower() or None, table.lower()))
        key = key or table_assets.get((None, table.lower()))
        if key is not None:
            keys.append(key)
    return keys
