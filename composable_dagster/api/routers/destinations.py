"""Destinations: CRUD, connection tests and mappable fields."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status

from composable_dagster.api.deps import CallerDep, SessionDep, SettingsDep
from composable_dagster.api.schemas import ConnectionTestResult, Deleted, DestinationPublic
from composable_dagster.catalog import destinations as service
from composable_dagster.catalog.common import get_owned
from composable_dagster.catalog.secret_box import SecretBox, secret_box_for
from composable_dagster.catalog.tables import Destination, Workspace
from composable_dagster.destinations import DestinationScope

router = APIRouter(prefix="/api/v1/workspaces/{id}/destinations", tags=["destinations"])


def get_scope(session: SessionDep, caller: CallerDep, settings: SettingsDep) -> DestinationScope:
    """Where the caller's workspace may write (its export directory, allowed protocols)."""
    workspace = session.get(Workspace, caller.workspace_id)
    assert workspace is not None  # the caller's key belongs to it
    return DestinationScope.for_workspace(settings, workspace.slug)


def get_box(settings: SettingsDep) -> SecretBox:
    return secret_box_for(settings)


ScopeDep = Annotated[DestinationScope, Depends(get_scope)]
BoxDep = Annotated[SecretBox, Depends(get_box)]


@router.get("", response_model=list[DestinationPublic])
def list_destinations(session: SessionDep, caller: CallerDep) -> list[Destination]:
    return service.list_destinations(session, workspace_id=caller.workspace_id)


@router.post("", response_model=DestinationPublic, status_code=status.HTTP_201_CREATED)
def create_destination(
    body: service.DestinationCreate,
    session: SessionDep,
    caller: CallerDep,
    scope: ScopeDep,
    box: BoxDep,
) -> Destination:
    """Create a destination. Its connection is tested; a failure is kept as status error."""
    return service.create_destination(
        session,
        workspace_id=caller.workspace_id,
        spec=body,
        created_by=caller.api_key_id,
        scope=scope,
        box=box,
    )


@router.post("/test", response_model=ConnectionTestResult)
def test_unsaved_destination(
    body: service.DestinationTest, caller: CallerDep, scope: ScopeDep
) -> ConnectionTestResult:
    """Test a destination config without saving it."""
    check = service.check_destination(body, scope=scope)
    return ConnectionTestResult(success=check.ok, message=check.message)


@router.get("/{destination_id}", response_model=DestinationPublic)
def get_destination(destination_id: str, session: SessionDep, caller: CallerDep) -> Destination:
    return get_owned(session, Destination, workspace_id=caller.workspace_id, row_id=destination_id)


@router.put("/{destination_id}", response_model=DestinationPublic)
def update_destination(
    destination_id: str,
    body: service.DestinationUpdate,
    session: SessionDep,
    caller: CallerDep,
    scope: ScopeDep,
    box: BoxDep,
) -> Destination:
    return service.update_destination(
        session,
        workspace_id=caller.workspace_id,
        destination_id=destination_id,
        spec=body,
        scope=scope,
        box=box,
    )


@router.post("/{destination_id}/test", response_model=ConnectionTestResult)
def test_destination(
    destination_id: str, session: SessionDep, caller: CallerDep, scope: ScopeDep, box: BoxDep
) -> ConnectionTestResult:
    """Re-test a saved destination; its status follows the outcome."""
    row = service.recheck_destination(
        session,
        workspace_id=caller.workspace_id,
        destination_id=destination_id,
        scope=scope,
        box=box,
    )
    ok = row.status == "connected"
    return ConnectionTestResult(success=ok, message="connected" if ok else row.status_error)


@router.get("/{destination_id}/fields")
def destination_fields(
    destination_id: str, session: SessionDep, caller: CallerDep
) -> dict[str, Any]:
    row = get_owned(session, Destination, workspace_id=caller.workspace_id, row_id=destination_id)
    return service.destination_fields(row)


@router.delete("/{destination_id}", response_model=Deleted)
def delete_destination(destination_id: str, session: SessionDep, caller: CallerDep) -> Deleted:
    service.delete_destination(
        session, workspace_id=caller.workspace_id, destination_id=destination_id
    )
    return Deleted()
