"""What a run does, read from the catalog by id when the run starts.

Dagster's definitions carry only the graph (catalog/graph.py); the content of a run (the
tree, the mapping, the destination and its secrets, the safety settings, the split) comes
from here, so an edit takes effect on the next run with no reload. `sync_spec` is also what
validates a sync write (catalog/syncs.py): one resolution for both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pydantic
import sqlalchemy as sa
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import list_owned
from composable_dagster.catalog.destinations import destination_config
from composable_dagster.catalog.schema_view import schema_from_rows
from composable_dagster.catalog.secret_box import SecretBox
from composable_dagster.catalog.tables import (
    Audience,
    Base,
    Destination,
    Model,
    Relationship,
    SplitGroup,
    Sync,
    Trait,
    Workspace,
)
from composable_dagster.destinations import DestinationScope, DestinationType, destination_type
from composable_dagster.destinations.pii import HASHED_FIELDS
from composable_dagster.errors import DomainError, NotFoundError
from composable_dagster.filters import CatalogSchema
from composable_dagster.spec.sync import SyncSpec, resolve_sync


@dataclass(frozen=True, slots=True)
class AudienceRun:
    """One audience as its materialization computes it now."""

    audience_id: str
    name: str
    parent_model_id: str
    filter_tree: dict
    schema: CatalogSchema
    # The specs of its syncs that resolve: their mappings' row hashes are stored with the
    # membership, so their diffs need not read the parent model.
    syncs: tuple[SyncSpec, ...]
    catalog_version: str


@dataclass(frozen=True, slots=True)
class SyncRun:
    """One sync as its run performs it now, destination secrets included (never stored
    by Dagster: this lives only in the run worker's memory)."""

    spec: SyncSpec
    name: str
    schema: CatalogSchema
    destination: DestinationType
    destination_config: pydantic.BaseModel
    catalog_version: str


def sync_spec(session: Session, row: Sync, *, schema: CatalogSchema) -> SyncSpec:
    """The sync `row` resolved against its workspace's rows (`InvalidInputError` naming the
    field when it cannot run as stored). Its audience and destination must exist."""
    audience = session.get(Audience, row.audience_id)
    destination = session.get(Destination, row.destination_id)
    assert audience is not None and destination is not None
    kind = destination_type(destination.destination_type)
    groups: list[SplitGroup] = []
    if row.split_group_id is not None:
        group = session.get(SplitGroup, row.split_group_id)
        if group is not None:
            groups = list(
                session.scalars(sa.select(SplitGroup).where(SplitGroup.split_id == group.split_id))
            )
    return resolve_sync(
        row,
        parent=schema.models[audience.parent_model_id],
        schema=schema,
        destination_type=kind.name,
        supported_modes=kind.capabilities.modes,
        split_groups=groups,
        hashed_fields=HASHED_FIELDS,
    )


def load_audience_run(session: Session, *, audience_id: str) -> AudienceRun:
    """NotFoundError when the audience was deleted (after its run was launched, say)."""
    audience = session.get(Audience, audience_id)
    if audience is None:
        raise NotFoundError("audience", audience_id)
    schema, version_rows = _workspace_schema(session, audience.workspace_id)
    specs = []
    syncs = session.scalars(
        sa.select(Sync).where(Sync.audience_id == audience_id).order_by(Sync.id)
    )
    for sync in syncs:
        try:
            specs.append(sync_spec(session, sync, schema=schema))
        except (DomainError, ValueError):
            continue  # that sync fails its own run, with the reason; the audience is fine
        version_rows.append(sync)
    return AudienceRun(
        audience_id=audience.id,
        name=audience.name,
        parent_model_id=audience.parent_model_id,
        filter_tree=audience.filter_tree,
        schema=schema,
        syncs=tuple(specs),
        catalog_version=catalog_version(version_rows),
    )


def load_sync_run(
    session: Session,
    *,
    sync_id: str,
    scope_for: Callable[[str], DestinationScope],
    box: SecretBox,
) -> SyncRun:
    """NotFoundError when the sync was deleted; `InvalidInputError` when it cannot run as
    stored (a mapping whose column was dropped from its model, say)."""
    sync = session.get(Sync, sync_id)
    if sync is None:
        raise NotFoundError("sync", sync_id)
    workspace = session.get(Workspace, sync.workspace_id)
    destination = session.get(Destination, sync.destination_id)
    assert workspace is not None and destination is not None
    schema, version_rows = _workspace_schema(session, sync.workspace_id)
    spec = sync_spec(session, sync, schema=schema)
    kind, config = destination_config(destination, scope=scope_for(workspace.slug), box=box)
    return SyncRun(
        spec=spec,
        name=sync.name,
        schema=schema,
        destination=kind,
        destination_config=config,
        catalog_version=catalog_version([*version_rows, sync, destination]),
    )


def catalog_version(rows: Iterable[Base]) -> str:
    """A version of the rows a run read: it changes with any edit, creation or deletion
    among them, so two runs that used the same catalog show the same version."""
    digest = hashlib.sha256()
    for name, row_id, updated in sorted(
        (type(r).__tablename__, r.id, r.updated_at.isoformat())
        for r in rows  # type: ignore[attr-defined]
    ):
        digest.update(f"{name}/{row_id}/{updated};".encode())
    return digest.hexdigest()[:16]


def _workspace_schema(session: Session, workspace_id: str) -> tuple[CatalogSchema, list[Base]]:
    models = list_owned(session, Model, workspace_id=workspace_id)
    relationships = list_owned(session, Relationship, workspace_id=workspace_id)
    traits = list_owned(session, Trait, workspace_id=workspace_id)
    audiences = list_owned(session, Audience, workspace_id=workspace_id)
    schema = schema_from_rows(
        models=models, relationships=relationships, traits=traits, audiences=audiences
    )
    return schema, [*models, *relationships, *traits, *audiences]
