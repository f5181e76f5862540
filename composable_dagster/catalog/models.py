"""Models: the warehouse tables or queries that audiences, relations and events read.

Columns are discovered from the warehouse (never typed by hand) through a `ColumnSource`
the caller passes in, which keeps the catalog free of warehouse I/O of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import pydantic
import sqlalchemy as sa
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import (
    Description,
    Identifier,
    Name,
    Spec,
    SqlText,
    apply_changes,
    ensure_name_free,
    get_owned,
    list_owned,
)
from composable_dagster.catalog.tables import Audience, Model, Relationship, Trait
from composable_dagster.errors import ConflictError, InvalidInputError
from composable_dagster.filters.schema import Column, ColumnType, EntityType
from composable_dagster.filters.user_sql import table_reference


class ColumnSource(Protocol):
    """The warehouse as model discovery sees it. `describe_query` checks workspace SQL
    (filters/user_sql.py: FilterError) and raises WarehouseRejectedError naming
    `sql_query` when the warehouse refuses it; `dialect` picks the table-name rules."""

    dialect: str

    def describe_table(self, *, schema: str | None, table: str) -> Sequence[Column]: ...
    def describe_query(self, sql: str) -> Sequence[Column]: ...


class ModelCreate(Spec):
    name: Name
    description: Description = ""
    model_type: Literal["table", "sql"] | None = None
    sql_query: SqlText | None = None
    source_schema: Identifier | None = None
    source_table: Identifier | None = None
    selected_columns: list[Identifier] | None = None
    entity_type: EntityType = EntityType.PARENT
    primary_key_column: Identifier
    timestamp_column: Identifier | None = None
    column_config: dict[str, Any] = {}
    source_id: str | None = pydantic.Field(default=None, max_length=36)  # its column


class ModelUpdate(Spec):
    name: Name | None = None
    description: Description | None = None
    model_type: Literal["table", "sql"] | None = None
    sql_query: SqlText | None = None
    source_schema: Identifier | None = None
    source_table: Identifier | None = None
    selected_columns: list[Identifier] | None = None
    entity_type: EntityType | None = None
    primary_key_column: Identifier | None = None
    timestamp_column: Identifier | None = None
    column_config: dict[str, Any] | None = None
    source_id: str | None = pydantic.Field(default=None, max_length=36)  # its column


class ModelPreviewRequest(Spec):
    sql_query: SqlText | None = None
    source_schema: Identifier | None = None
    source_table: Identifier | None = None
    limit: int = pydantic.Field(default=100, ge=1, le=100)


_SOURCE_FIELDS = {"model_type", "sql_query", "source_schema", "source_table", "selected_columns"}
_REQUIRED_NON_NULL = ("name", "entity_type", "primary_key_column", "description", "column_config")


def create_model(
    session: Session,
    *,
    workspace_id: str,
    spec: ModelCreate,
    columns: ColumnSource,
    created_by: str | None,
) -> Model:
    ensure_name_free(session, Model, workspace_id=workspace_id, name=spec.name)
    row = Model(workspace_id=workspace_id, created_by=created_by, status="active", status_error="")
    changes = spec.model_dump()
    apply_changes(row, changes)
    row.model_type = _resolve_model_type(row, changes)
    row.columns = _discover(row, columns)
    _check_keys(row)
    session.add(row)
    session.flush()
    return row


def update_model(
    session: Session,
    *,
    workspace_id: str,
    model_id: str,
    spec: ModelUpdate,
    columns: ColumnSource,
) -> Model:
    row = get_owned(session, Model, workspace_id=workspace_id, row_id=model_id)
    changes = spec.model_dump(exclude_unset=True)
    for field in _REQUIRED_NON_NULL:
        if field in changes and changes[field] is None:
            raise InvalidInputError(field, "may not be null")
    if "name" in changes:
        ensure_name_free(
            session, Model, workspace_id=workspace_id, name=changes["name"], exclude_id=row.id
        )
    apply_changes(row, changes)
    if _SOURCE_FIELDS & changes.keys():
        row.model_type = _resolve_model_type(row, changes)
        row.columns = _discover(row, columns)
    _check_keys(row)
    return row


def refresh_model_columns(
    session: Session, *, workspace_id: str, model_id: str, columns: ColumnSource
) -> Model:
    """Re-read the model's columns from the warehouse (after a dbt change, say)."""
    row = get_owned(session, Model, workspace_id=workspace_id, row_id=model_id)
    row.columns = _discover(row, columns)
    try:
        _check_keys(row)
    except InvalidInputError as err:
        row.status, row.status_error = "error", str(err)
    else:
        row.status, row.status_error = "active", ""
    return row


def delete_model(session: Session, *, workspace_id: str, model_id: str) -> None:
    row = get_owned(session, Model, workspace_id=workspace_id, row_id=model_id)
    users = [
        ("audiences", sa.select(Audience.name).where(Audience.parent_model_id == row.id)),
        ("traits", sa.select(Trait.name).where(Trait.parent_model_id == row.id)),
        (
            "relationships",
            sa.select(Relationship.name).where(
                sa.or_(
                    Relationship.from_model_id == row.id,
                    Relationship.to_model_id == row.id,
                    Relationship.through_model_id == row.id,
                )
            ),
        ),
    ]
    for kind, query in users:
        names = list(session.scalars(query.limit(5)))
        if names:
            raise ConflictError(
                f"model {row.name!r} is used by {kind} ({', '.join(map(repr, names))}); "
                "delete or change them first"
            )
    session.delete(row)


def list_models(session: Session, *, workspace_id: str) -> list[Model]:
    return list_owned(session, Model, workspace_id=workspace_id)


def model_columns(row: Model) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in row.columns}


def _resolve_model_type(row: Model, changes: dict[str, Any]) -> str:
    """The model type the request means: said outright, or implied by the source it sets."""
    if changes.get("model_type"):
        model_type = changes["model_type"]
    elif changes.get("sql_query"):
        model_type = "sql"
    elif changes.get("source_table"):
        model_type = "table"
    else:
        model_type = row.model_type or ("sql" if row.sql_query else "table")
    if model_type == "sql":
        if not row.sql_query:
            raise InvalidInputError("sql_query", "required when model_type is 'sql'")
        row.source_schema = row.source_table = None
    else:
        if not row.source_table:
            raise InvalidInputError("source_table", "required when model_type is 'table'")
        row.sql_query = None
    return model_type


def _discover(row: Model, columns: ColumnSource) -> list[dict[str, Any]]:
    # A refused query is a 400 (FilterError from the parser, WarehouseRejectedError from the
    # warehouse); a warehouse that fails on its own stays a 502 (WarehouseError).
    if row.model_type == "sql":
        assert row.sql_query is not None
        found = list(columns.describe_query(row.sql_query))
    else:
        assert row.source_table is not None
        # The names workspace SQL could not use are refused here too: the activation
        # store's schema, system catalogs, a dotted name that would become more name parts.
        table_reference(
            row.source_table,
            schema=row.source_schema,
            dialect=columns.dialect,
            table_field="source_table",
            schema_field="source_schema",
        )
        found = list(columns.describe_table(schema=row.source_schema, table=row.source_table))
        if not found:
            where = (
                f"{row.source_schema}.{row.source_table}" if row.source_schema else row.source_table
            )
            raise InvalidInputError("source_table", f"no table or view {where!r} in the warehouse")
    if row.selected_columns is not None:
        by_name = {c.name: c for c in found}
        for i, name in enumerate(row.selected_columns):
            if name not in by_name:
                raise InvalidInputError(f"selected_columns[{i}]", f"unknown column {name!r}")
        found = [by_name[name] for name in row.selected_columns]
    return [
        {"name": c.name, "type": c.warehouse_type, "nullable": c.nullable, "kind": c.type.value}
        for c in found
    ]


def _check_keys(row: Model) -> None:
    by_name = model_columns(row)
    known = ", ".join(sorted(by_name)) or "none"
    if row.primary_key_column not in by_name:
        raise InvalidInputError(
            "primary_key_column", f"unknown column {row.primary_key_column!r} (columns: {known})"
        )
    if row.timestamp_column is not None:
        column = by_name.get(row.timestamp_column)
        if column is None:
            raise InvalidInputError(
                "timestamp_column", f"unknown column {row.timestamp_column!r} (columns: {known})"
            )
        if column["kind"] != ColumnType.TIMESTAMP:
            raise InvalidInputError(
                "timestamp_column",
                f"column {row.timestamp_column!r} is {column['type']}, not a timestamp",
            )
    if row.entity_type == EntityType.EVENT and row.timestamp_column is None:
        raise InvalidInputError("timestamp_column", "required for event models")
