"""Workspaces (the caller's own) and their API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from composable_dagster.api.deps import ApiKeyDep, CallerDep, SessionDep
from composable_dagster.api.schemas import ApiKeyCreated, ApiKeyPublic, Deleted, WorkspacePublic
from composable_dagster.catalog import workspaces as service
from composable_dagster.catalog.tables import Workspace

router = APIRouter(prefix="/api/v1/workspaces", tags=["workspaces"])


@router.get("", response_model=list[WorkspacePublic])
def list_workspaces(session: SessionDep, key: ApiKeyDep) -> list[Workspace]:
    """The workspaces this API key can reach (keys are workspace-scoped: one)."""
    workspace = session.get(Workspace, key.workspace_id)
    return [workspace] if workspace is not None else []


@router.get("/{id}/api-keys", response_model=list[ApiKeyPublic], tags=["api-keys"])
def list_api_keys(session: SessionDep, caller: CallerDep) -> list:
    return service.list_api_keys(session, workspace_id=caller.workspace_id)


@router.post(
    "/{id}/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["api-keys"],
)
def create_api_key(
    body: service.ApiKeyCreate, session: SessionDep, caller: CallerDep
) -> ApiKeyCreated:
    """Create a key. The raw `key` is in this response only; it is stored hashed."""
    issued = service.issue_api_key(
        session, workspace_id=caller.workspace_id, spec=body, created_by=caller.api_key_id
    )
    public = ApiKeyPublic.model_validate(issued.row)
    return ApiKeyCreated(**public.model_dump(), key=issued.raw_key)


@router.delete("/{id}/api-keys/{key_id}", response_model=Deleted, tags=["api-keys"])
def delete_api_key(key_id: str, session: SessionDep, caller: CallerDep) -> Deleted:
    service.delete_api_key(session, workspace_id=caller.workspace_id, key_id=key_id)
    return Deleted()
