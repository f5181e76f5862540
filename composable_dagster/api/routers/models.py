"""Models: CRUD, column refresh, and a preview of any table or query."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlglot import exp

from composable_dagster.api.deps import CallerDep, GraphCheckDep, SessionDep, WarehouseDep
from composable_dagster.api.schemas import Deleted, ModelPublic, RowsPreview
from composable_dagster.catalog import models as service
from composable_dagster.catalog.common import get_owned
from composable_dagster.catalog.tables import Model
from composable_dagster.errors import InvalidInputError
from composable_dagster.filters.user_sql import parse_select, table_reference

router = APIRouter(prefix="/api/v1/workspaces/{id}/models", tags=["models"])


@router.get("", response_model=list[ModelPublic])
def list_models(session: SessionDep, caller: CallerDep) -> list[Model]:
    return service.list_models(session, workspace_id=caller.workspace_id)


@router.post("", response_model=ModelPublic, status_code=status.HTTP_201_CREATED)
def create_model(
    body: service.ModelCreate, session: SessionDep, caller: CallerDep, warehouse: WarehouseDep
) -> Model:
    """Create a table or SQL model; its columns are read from the warehouse."""
    return service.create_model(
        session,
        workspace_id=caller.workspace_id,
        spec=body,
        columns=warehouse,
        created_by=caller.api_key_id,
    )


@router.post("/preview", response_model=RowsPreview)
def preview_model(
    body: service.ModelPreviewRequest, caller: CallerDep, warehouse: WarehouseDep
) -> RowsPreview:
    """Run a model's query (or read a table) with a LIMIT of at most 100 rows.

    The SQL is checked as model SQL is (what it may reach: docs/api.md, "Security model");
    values are in JSON form (BLOBs as base64, NaN as text), long ones cut (`json_value`)."""
    if body.sql_query:
        field = "sql_query"
        source: exp.Expression = parse_select(
            body.sql_query, dialect=warehouse.dialect, field=field
        ).subquery("model")
    elif body.source_table:
        field = "source_table"
        source = table_reference(
            body.source_table,
            schema=body.source_schema,
            dialect=warehouse.dialect,
            table_field=field,
            schema_field="source_schema",
        )
    else:
        raise InvalidInputError("sql_query", "give sql_query, or source_schema and source_table")
    result = warehouse.for_field(field).preview(exp.select("*").from_(source).limit(body.limit))
    return RowsPreview(
        columns=[
            {"name": c.name, "type": c.warehouse_type, "nullable": c.nullable}
            for c in result.columns
        ],
        rows=result.json_rows(),
    )


@router.get("/{model_id}", response_model=ModelPublic)
def get_model(model_id: str, session: SessionDep, caller: CallerDep) -> Model:
    return get_owned(session, Model, workspace_id=caller.workspace_id, row_id=model_id)


@router.put("/{model_id}", response_model=ModelPublic)
def update_model(
    model_id: str,
    body: service.ModelUpdate,
    session: SessionDep,
    caller: CallerDep,
    warehouse: WarehouseDep,
    graph_check: GraphCheckDep,
) -> Model:
    """Partial update; a changed source re-reads the columns from the warehouse (and the
    audiences over it may now depend on other tables' assets)."""
    row = service.update_model(
        session, workspace_id=caller.workspace_id, model_id=model_id, spec=body, columns=warehouse
    )
    graph_check()
    return row


@router.post("/{model_id}/refresh-columns", response_model=ModelPublic)
def refresh_columns(
    model_id: str, session: SessionDep, caller: CallerDep, warehouse: WarehouseDep
) -> Model:
    """Re-read the columns (after the table changed); status goes to error if a key is gone."""
    return service.refresh_model_columns(
        session, workspace_id=caller.workspace_id, model_id=model_id, columns=warehouse
    )


@router.delete("/{model_id}", response_model=Deleted)
def delete_model(model_id: str, session: SessionDep, caller: CallerDep) -> Deleted:
    service.delete_model(session, workspace_id=caller.workspace_id, model_id=model_id)
    return Deleted()
