"""A/B splits of an audience (our REST shape; see docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from composable_dagster.api.deps import CallerDep, SessionDep
from composable_dagster.api.schemas import Deleted, SplitPublic
from composable_dagster.catalog import splits as service
from composable_dagster.catalog.tables import AudienceSplit

router = APIRouter(prefix="/api/v1/workspaces/{id}/audiences/{aud_id}/splits", tags=["splits"])


def _public(session: Session, split: AudienceSplit) -> SplitPublic:
    groups = service.split_groups(session, split)
    return SplitPublic.model_validate(
        {
            **{c: getattr(split, c) for c in SplitPublic.model_fields if c != "groups"},
            "groups": groups,
        }
    )


@router.get("", response_model=list[SplitPublic])
def list_splits(aud_id: str, session: SessionDep, caller: CallerDep) -> list[SplitPublic]:
    splits = service.list_splits(session, workspace_id=caller.workspace_id, audience_id=aud_id)
    return [_public(session, s) for s in splits]


@router.post("", response_model=SplitPublic, status_code=status.HTTP_201_CREATED)
def create_split(
    aud_id: str, body: service.SplitCreate, session: SessionDep, caller: CallerDep
) -> SplitPublic:
    """Split the audience into groups by percentage (adding up to 100). Sync a group by
    giving its id as a sync's `split_group_id`."""
    split = service.create_split(
        session,
        workspace_id=caller.workspace_id,
        audience_id=aud_id,
        spec=body,
        created_by=caller.api_key_id,
    )
    return _public(session, split)


@router.get("/{split_id}", response_model=SplitPublic)
def get_split(aud_id: str, split_id: str, session: SessionDep, caller: CallerDep) -> SplitPublic:
    split = service.get_split(
        session, workspace_id=caller.workspace_id, audience_id=aud_id, split_id=split_id
    )
    return _public(session, split)


@router.delete("/{split_id}", response_model=Deleted)
def delete_split(aud_id: str, split_id: str, session: SessionDep, caller: CallerDep) -> Deleted:
    """Delete a split; 409 while a sync sends one of its groups."""
    service.delete_split(
        session, workspace_id=caller.workspace_id, audience_id=aud_id, split_id=split_id
    )
    return Deleted()
