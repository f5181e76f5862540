"""Relationships between models (the REST shape is ours; see docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter, status

from composable_dagster.api.deps import CallerDep, GraphCheckDep, SessionDep
from composable_dagster.api.schemas import Deleted, RelationshipPublic
from composable_dagster.catalog import relationships as service
from composable_dagster.catalog.common import get_owned
from composable_dagster.catalog.tables import Relationship

router = APIRouter(prefix="/api/v1/workspaces/{id}/relationships", tags=["relationships"])


@router.get("", response_model=list[RelationshipPublic])
def list_relationships(session: SessionDep, caller: CallerDep) -> list[Relationship]:
    return service.list_relationships(session, workspace_id=caller.workspace_id)


@router.post("", response_model=RelationshipPublic, status_code=status.HTTP_201_CREATED)
def create_relationship(
    body: service.RelationshipCreate, session: SessionDep, caller: CallerDep
) -> Relationship:
    return service.create_relationship(
        session, workspace_id=caller.workspace_id, spec=body, created_by=caller.api_key_id
    )


@router.get("/{relationship_id}", response_model=RelationshipPublic)
def get_relationship(relationship_id: str, session: SessionDep, caller: CallerDep) -> Relationship:
    return get_owned(
        session, Relationship, workspace_id=caller.workspace_id, row_id=relationship_id
    )


@router.put("/{relationship_id}", response_model=RelationshipPublic)
def update_relationship(
    relationship_id: str,
    body: service.RelationshipUpdate,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> Relationship:
    """Partial update; the audiences that join through it may now read another model."""
    row = service.update_relationship(
        session, workspace_id=caller.workspace_id, relationship_id=relationship_id, spec=body
    )
    graph_check()
    return row


@router.delete("/{relationship_id}", response_model=Deleted)
def delete_relationship(relationship_id: str, session: SessionDep, caller: CallerDep) -> Deleted:
    service.delete_relationship(
        session, workspace_id=caller.workspace_id, relationship_id=relationship_id
    )
    return Deleted()
