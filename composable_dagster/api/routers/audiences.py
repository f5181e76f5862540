"""Audiences: the nine endpoints of the seed page, plus `explain`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from composable_dagster.api.deps import CallerDep, GraphCheckDep, SessionDep, WarehouseDep
from composable_dagster.api.schemas import (
    AudiencePublic,
    Deleted,
    EstimatePublic,
    ExplainPublic,
    FilterEstimatePublic,
    RowsPreview,
)
from composable_dagster.catalog import audiences as service
from composable_dagster.catalog.common import Spec, get_owned
from composable_dagster.catalog.schema_view import load_schema
from composable_dagster.catalog.tables import Audience, Model
from composable_dagster.errors import InvalidInputError
from composable_dagster.warehouse.audiences import (
    Estimate,
    EstimateMode,
    estimate_members,
    explain_tree,
    preview_members,
)

router = APIRouter(prefix="/api/v1/workspaces/{id}", tags=["audiences"])
# The warehouse refusing a compiled tree (a bad cast in a stored model's SQL, a value out of
# range) is a 400 about the tree; the warehouse being down stays a 502.
TREE_FIELD = "filter_tree"


class EstimateFilterRequest(Spec):
    filter_tree: dict[str, Any]


def _public(view: service.AudienceView) -> AudiencePublic:
    public = AudiencePublic.model_validate(view.row)
    return public.model_copy(update={"status": view.status, "status_error": view.status_error})


def _now() -> datetime:
    # The adapter reads the clock once per request; the compiler never does.
    return datetime.now(UTC)


@router.get("/audiences", response_model=list[AudiencePublic])
def list_audiences(session: SessionDep, caller: CallerDep) -> list[AudiencePublic]:
    return [_public(v) for v in service.list_audiences(session, workspace_id=caller.workspace_id)]


@router.post("/audiences", response_model=AudiencePublic, status_code=status.HTTP_201_CREATED)
def create_audience(
    body: service.AudienceCreate,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> AudiencePublic:
    """Create an audience; a filter tree that does not compile is a 400 naming its path.
    Dagster reloads in the background, and the audience's asset appears."""
    row = service.create_audience(
        session, workspace_id=caller.workspace_id, spec=body, created_by=caller.api_key_id
    )
    graph_check()
    return _public(service.AudienceView(row=row, status=row.status, status_error=""))


@router.get("/audiences/{aud_id}", response_model=AudiencePublic)
def get_audience(aud_id: str, session: SessionDep, caller: CallerDep) -> AudiencePublic:
    return _public(
        service.get_audience(session, workspace_id=caller.workspace_id, audience_id=aud_id)
    )


@router.put("/audiences/{aud_id}", response_model=AudiencePublic)
def update_audience(
    aud_id: str,
    body: service.AudienceUpdate,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> AudiencePublic:
    row = service.update_audience(
        session, workspace_id=caller.workspace_id, audience_id=aud_id, spec=body
    )
    graph_check()
    return _public(service.AudienceView(row=row, status=row.status, status_error=""))


@router.delete("/audiences/{aud_id}", response_model=Deleted)
def delete_audience(
    aud_id: str,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> Deleted:
    """Delete; 409 while an active sync (or another audience) references it."""
    service.delete_audience(session, workspace_id=caller.workspace_id, audience_id=aud_id)
    graph_check()
    return Deleted()


ModeQuery = Annotated[
    EstimateMode,
    Query(description="auto: sampled above 1M parent rows when within ±3%; exact; sampled"),
]


@router.post(
    "/audiences/{aud_id}/estimate", response_model=EstimatePublic, response_model_exclude_none=True
)
def estimate_audience(
    aud_id: str,
    session: SessionDep,
    caller: CallerDep,
    warehouse: WarehouseDep,
    mode: ModeQuery = "auto",
) -> EstimatePublic:
    """Count the members in the warehouse and store the count on the audience."""
    row = _valid_audience(session, caller, aud_id)
    now = _now()
    estimate = estimate_members(
        warehouse.for_field(TREE_FIELD),
        tree=row.filter_tree,
        parent_model_id=row.parent_model_id,
        schema=load_schema(session, workspace_id=caller.workspace_id),
        now=now,
        mode=mode,
        audience_id=row.id,
    )
    service.record_estimate(row, size=estimate.size, at=now)
    return EstimatePublic(estimated_at=now, **_estimate_fields(estimate))


@router.get("/audiences/{aud_id}/preview", response_model=RowsPreview)
def preview_audience(
    aud_id: str,
    session: SessionDep,
    caller: CallerDep,
    warehouse: WarehouseDep,
    limit: int = Query(default=100, ge=1, le=100),
) -> RowsPreview:
    """Up to 100 members: primary key, a few attributes, and the traits the tree uses."""
    row = _valid_audience(session, caller, aud_id)
    result = preview_members(
        warehouse.for_field(TREE_FIELD),
        tree=row.filter_tree,
        parent_model_id=row.parent_model_id,
        schema=load_schema(session, workspace_id=caller.workspace_id),
        now=_now(),
        limit=limit,
        audience_id=row.id,
    )
    model = session.get(Model, row.parent_model_id)
    nullable = {c["name"]: c["nullable"] for c in model.columns} if model else {}
    return RowsPreview(
        columns=[
            {"name": c.name, "type": c.warehouse_type, "nullable": nullable.get(c.name, True)}
            for c in result.columns
        ],
        rows=result.json_rows(),
    )


@router.post("/audiences/{aud_id}/explain", response_model=ExplainPublic)
def explain_audience(
    aud_id: str, session: SessionDep, caller: CallerDep, warehouse: WarehouseDep
) -> ExplainPublic:
    """The compiled SQL, and a member count for every group and condition of the tree."""
    row = _valid_audience(session, caller, aud_id)
    schema = load_schema(session, workspace_id=caller.workspace_id)
    now = _now()
    nodes = explain_tree(
        warehouse.for_field(TREE_FIELD),
        tree=row.filter_tree,
        parent_model_id=row.parent_model_id,
        schema=schema,
        now=now,
        audience_id=row.id,
    )
    return ExplainPublic(
        estimated_size=nodes[0].member_count,
        sql=nodes[0].sql,
        nodes=[dataclasses.asdict(n) for n in nodes],
    )


@router.get("/models/{model_id}/audiences", response_model=list[AudiencePublic])
def list_model_audiences(
    model_id: str, session: SessionDep, caller: CallerDep
) -> list[AudiencePublic]:
    get_owned(session, Model, workspace_id=caller.workspace_id, row_id=model_id)
    views = service.list_audiences(
        session, workspace_id=caller.workspace_id, parent_model_id=model_id
    )
    return [_public(v) for v in views]


@router.post(
    "/models/{model_id}/estimate-filter",
    response_model=FilterEstimatePublic,
    response_model_exclude_none=True,
)
def estimate_filter(
    model_id: str,
    body: EstimateFilterRequest,
    session: SessionDep,
    caller: CallerDep,
    warehouse: WarehouseDep,
    mode: ModeQuery = "auto",
) -> FilterEstimatePublic:
    """Count an ad-hoc tree on a parent model (the builder UI calls it on every edit)."""
    get_owned(session, Model, workspace_id=caller.workspace_id, row_id=model_id)
    estimate = estimate_members(
        warehouse.for_field(TREE_FIELD),
        tree=body.filter_tree,
        parent_model_id=model_id,
        schema=load_schema(session, workspace_id=caller.workspace_id),
        now=_now(),
        mode=mode,
    )
    return FilterEstimatePublic(**_estimate_fields(estimate))


def _estimate_fields(estimate: Estimate) -> dict[str, Any]:
    return {
        "estimated_size": estimate.size,
        "sampled": estimate.sampled,
        "sample_percent": estimate.sample_percent,
        "confidence_interval": estimate.confidence_interval,
    }


def _valid_audience(session: SessionDep, caller: CallerDep, aud_id: str) -> Audience:
    """The audience, if its tree still compiles; a 400 with the compiler's reason otherwise."""
    view = service.get_audience(session, workspace_id=caller.workspace_id, audience_id=aud_id)
    if view.status == "error":
        raise InvalidInputError("filter_tree", f"audience cannot be evaluated: {view.status_error}")
    return view.row
