"""Traits (computed attributes): CRUD, per-model listing, and evaluation previews."""

from __future__ import annotations

from fastapi import APIRouter, status

from composable_dagster.api.deps import CallerDep, GraphCheckDep, SessionDep
from composable_dagster.api.schemas import Deleted, TraitPublic
from composable_dagster.catalog import traits as service
from composable_dagster.catalog.common import get_owned
from composable_dagster.catalog.tables import Model, Trait

router = APIRouter(prefix="/api/v1/workspaces/{id}", tags=["traits"])


@router.get("/traits", response_model=list[TraitPublic])
def list_traits(session: SessionDep, caller: CallerDep) -> list[Trait]:
    return service.list_traits(session, workspace_id=caller.workspace_id)


@router.get("/models/{model_id}/traits", response_model=list[TraitPublic])
def list_model_traits(model_id: str, session: SessionDep, caller: CallerDep) -> list[Trait]:
    get_owned(session, Model, workspace_id=caller.workspace_id, row_id=model_id)
    return service.list_traits(session, workspace_id=caller.workspace_id, parent_model_id=model_id)


@router.post("/traits", response_model=TraitPublic, status_code=status.HTTP_201_CREATED)
def create_trait(body: service.TraitCreate, session: SessionDep, caller: CallerDep) -> Trait:
    """Create a trait; its config is checked by compiling it against the catalog."""
    return service.create_trait(
        session, workspace_id=caller.workspace_id, spec=body, created_by=caller.api_key_id
    )


@router.get("/traits/{trait_id}", response_model=TraitPublic)
def get_trait(trait_id: str, session: SessionDep, caller: CallerDep) -> Trait:
    return get_owned(session, Trait, workspace_id=caller.workspace_id, row_id=trait_id)


@router.put("/traits/{trait_id}", response_model=TraitPublic)
def update_trait(
    trait_id: str,
    body: service.TraitUpdate,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> Trait:
    """Partial update; the audiences that use it may now read other models."""
    row = service.update_trait(
        session, workspace_id=caller.workspace_id, trait_id=trait_id, spec=body
    )
    graph_check()
    return row


@router.delete("/traits/{trait_id}", response_model=Deleted)
def delete_trait(trait_id: str, session: SessionDep, caller: CallerDep) -> Deleted:
    service.delete_trait(session, workspace_id=caller.workspace_id, trait_id=trait_id)
    return Deleted()
