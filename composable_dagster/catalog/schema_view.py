"""One workspace's catalog rows as the filter language's `CatalogSchema` (pure values)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from composable_dagster.catalog.common import list_owned
from composable_dagster.catalog.tables import Audience, Model, Relationship, Trait
from composable_dagster.filters.schema import (
    AudienceDef,
    Cardinality,
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
    RelationshipDef,
    ResultType,
    TraitDef,
    TraitType,
)


def model_def(row: Model) -> ModelDef:
    table = None
    if row.model_type == "table":
        table = f"{row.source_schema}.{row.source_table}" if row.source_schema else row.source_table
    return ModelDef(
        id=row.id,
        name=row.name,
        entity_type=EntityType(row.entity_type),
        primary_key=row.primary_key_column,
        columns={
            c["name"]: Column(
                name=c["name"],
                type=ColumnType(c.get("kind", ColumnType.OTHER)),
                warehouse_type=c["type"],
                nullable=c.get("nullable", True),
            )
            for c in row.columns
        },
        table=table,
        sql=row.sql_query if row.model_type == "sql" else None,
        timestamp_column=row.timestamp_column,
    )


def relationship_def(row: Relationship) -> RelationshipDef:
    return RelationshipDef(
        id=row.id,
        name=row.name,
        from_model_id=row.from_model_id,
        to_model_id=row.to_model_id,
        from_column=row.from_column,
        to_column=row.to_column,
        cardinality=Cardinality(row.cardinality),
        through_model_id=row.through_model_id,
        through_from_column=row.through_from_column,
        through_to_column=row.through_to_column,
    )


def trait_def(row: Trait) -> TraitDef:
    return TraitDef(
        id=row.id,
        name=row.name,
        slug=row.slug,
        parent_model_id=row.parent_model_id,
        trait_type=TraitType(row.trait_type),
        result_type=ResultType(row.result_type),
        config=row.config,
    )


def audience_def(row: Audience) -> AudienceDef:
    return AudienceDef(
        id=row.id, name=row.name, parent_model_id=row.parent_model_id, filter_tree=row.filter_tree
    )


def load_schema(session: Session, *, workspace_id: str) -> CatalogSchema:
    """Everything a filter tree of this workspace may reference."""
    return schema_from_rows(
        models=list_owned(session, Model, workspace_id=workspace_id),
        relationships=list_owned(session, Relationship, workspace_id=workspace_id),
        traits=list_owned(session, Trait, workspace_id=workspace_id),
        audiences=list_owned(session, Audience, workspace_id=workspace_id),
    )


def schema_from_rows(
    *,
    models: Iterable[Model],
    relationships: Iterable[Relationship],
    traits: Iterable[Trait],
    audiences: Iterable[Audience],
) -> CatalogSchema:
    """The schema of one workspace's rows (from a session or from a catalog export)."""
    return CatalogSchema(
        models={r.id: model_def(r) for r in models},
        relationships={r.id: relationship_def(r) for r in relationships},
        traits={r.id: trait_def(r) for r in traits},
        audiences={r.id: audience_def(r) for r in audiences},
    )
