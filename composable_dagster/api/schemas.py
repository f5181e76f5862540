"""Response bodies (`XPublic`): exactly the documented fields, timestamps as `...Z`. And
the one request body that stores no catalog row (a trigger's, `SyncRunCreate`); the
others are the catalog services' specs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import pydantic
from pydantic import PlainSerializer

from composable_dagster.destinations import destination_type
from composable_dagster.destinations.secrets import public_config


def _iso_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[datetime, PlainSerializer(_iso_z, return_type=str)]


class Public(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(from_attributes=True)


class Audited(Public):
    created_by: str | None
    created_at: Timestamp
    updated_at: Timestamp


class WorkspacePublic(Public):
    id: str
    name: str
    slug: str
    created_at: Timestamp
    updated_at: Timestamp


class ApiKeyPublic(Audited):
    id: str
    workspace_id: str
    name: str
    key_prefix: str
    status: str


class ApiKeyCreated(ApiKeyPublic):
    key: str


class ColumnPublic(Public):
    name: str
    type: str
    nullable: bool


class ModelPublic(Audited):
    id: str
    workspace_id: str
    source_id: str | None
    name: str
    description: str
    sql_query: str | None
    columns: list[ColumnPublic]
    entity_type: str
    primary_key_column: str
    timestamp_column: str | None
    column_config: dict[str, Any]
    model_type: str
    source_schema: str | None
    source_table: str | None
    selected_columns: list[str] | None
    status: str
    status_error: str


class RowsPreview(Public):
    columns: list[ColumnPublic]
    rows: list[dict[str, Any]]


class RelationshipPublic(Audited):
    id: str
    workspace_id: str
    name: str
    description: str
    from_model_id: str
    to_model_id: str
    from_column: str
    to_column: str
    cardinality: str
    through_model_id: str | None
    through_from_column: str | None
    through_to_column: str | None


class TraitPublic(Audited):
    id: str
    workspace_id: str
    parent_model_id: str
    name: str
    slug: str
    description: str
    trait_type: str
    config: dict[str, Any]
    result_type: str
    status: str
    status_error: str
    last_computed_at: Timestamp | None


class DestinationPublic(Audited):
    """A destination; secrets in its config (auth headers, signing secret, database
    password) are shown masked."""

    id: str
    workspace_id: str
    connection_id: str | None
    name: str
    destination_type: str
    config: dict[str, Any]
    status: str
    status_error: str

    @pydantic.model_validator(mode="after")
    def _mask(self) -> DestinationPublic:
        # The catalog stores configs masked already; masking again (idempotent) keeps a
        # secret from ever leaving through this response whatever a row holds.
        self.config = public_config(destination_type(self.destination_type), self.config)
        return self


class ConnectionTestResult(Public):
    success: bool
    message: str


class Deleted(Public):
    status: str = "deleted"


class AudiencePublic(Audited):
    """The documented audience object (its slug, used for Dagster asset keys, stays inside)."""

    id: str
    workspace_id: str
    parent_model_id: str
    name: str
    description: str
    filter_tree: dict[str, Any]
    estimated_size: int | None
    estimated_at: Timestamp | None
    status: str
    status_error: str
    identity_graph_id: str | None


# [low, high]: a pair, typed as a list (not a tuple) so that every OpenAPI tool reads it.
Interval = Annotated[list[int], pydantic.Field(min_length=2, max_length=2)]


class FilterEstimatePublic(Public):
    """`estimated_size` as documented; `sampled` says how it was obtained. A sampled count
    also carries the sample share and a 95% confidence interval."""

    estimated_size: int
    sampled: bool = False
    sample_percent: float | None = None
    confidence_interval: Interval | None = None


class EstimatePublic(FilterEstimatePublic):
    estimated_at: Timestamp


class ExplainNode(Public):
    path: str
    type: str
    member_count: int
    sql: str


class ExplainPublic(Public):
    estimated_size: int
    sql: str
    nodes: list[ExplainNode]


class SyncPublic(Audited):
    """The documented sync object; last_* and an error status come from Dagster's runs."""

    id: str
    workspace_id: str
    audience_id: str
    destination_id: str
    name: str
    description: str
    field_mapping: list[dict[str, Any]]
    sync_mode: str
    schedule: str | None
    config: dict[str, Any]
    status: str
    status_error: str
    last_synced_at: str | None = None
    last_run_id: str | None = None
    split_group_id: str | None


class RowErrorPublic(Public):
    entity_key: str | None
    operation: str
    error: str


class SyncRunPublic(Public):
    id: str
    sync_id: str
    status: str
    trigger: str
    started_at: str | None
    completed_at: str | None
    duration_seconds: float | None
    rows_processed: int
    rows_added: int
    rows_updated: int
    rows_removed: int
    rows_failed: int
    row_errors: list[RowErrorPublic]
    error: str | None
    dagster_run_url: str


class SyncRunCreate(pydantic.BaseModel):
    """The optional body of a trigger. `override_safety`: the run passes the safety stops
    (the audience's checks, the sync's own) and is tagged so (names.TAG_OVERRIDE_SAFETY)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    override_safety: pydantic.StrictBool = False


class SplitGroupPublic(Public):
    id: str
    name: str
    percentage: float
    position: int


class SplitPublic(Audited):
    id: str
    workspace_id: str
    audience_id: str
    name: str
    groups: list[SplitGroupPublic]
