"""A/B splits of an audience: non-overlapping groups, by percentage, covering every member.

Assignment is by bucket (sync/plan.py: md5 of split id and entity key), so it is stable for
the split's life. A split is immutable: new percentages mean a new split (and a reshuffle).
"""

from __future__ import annotations

import math

import pydantic
import sqlalchemy as sa
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import Name, Spec, get_owned, list_owned
from composable_dagster.catalog.tables import Audience, AudienceSplit, SplitGroup, Sync
from composable_dagster.errors import ConflictError, InvalidInputError


class SplitGroupSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: Name
    percentage: float = pydantic.Field(gt=0, le=100)


class SplitCreate(Spec):
    name: Name
    groups: list[SplitGroupSpec] = pydantic.Field(min_length=2, max_length=100)


def create_split(
    session: Session,
    *,
    workspace_id: str,
    audience_id: str,
    spec: SplitCreate,
    created_by: str | None,
) -> AudienceSplit:
    audience = get_owned(session, Audience, workspace_id=workspace_id, row_id=audience_id)
    total = sum(g.percentage for g in spec.groups)
    if not math.isclose(total, 100.0, abs_tol=1e-6):
        raise InvalidInputError("groups", f"percentages must add up to 100, not {total:g}")
    names = [g.name for g in spec.groups]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidInputError(f"groups[{i}].name", f"{name!r} is used twice")
    split = AudienceSplit(
        workspace_id=workspace_id, audience_id=audience.id, name=spec.name, created_by=created_by
    )
    session.add(split)
    session.flush()
    for position, group in enumerate(spec.groups):
        session.add(
            SplitGroup(
                workspace_id=workspace_id,
                split_id=split.id,
                audience_id=audience.id,
                name=group.name,
                percentage=group.percentage,
                position=position,
                created_by=created_by,
            )
        )
    session.flush()
    return split


def list_splits(session: Session, *, workspace_id: str, audience_id: str) -> list[AudienceSplit]:
    get_owned(session, Audience, workspace_id=workspace_id, row_id=audience_id)
    return list_owned(session, AudienceSplit, workspace_id=workspace_id, audience_id=audience_id)


def get_split(
    session: Session, *, workspace_id: str, audience_id: str, split_id: str
) -> AudienceSplit:
    split = get_owned(session, AudienceSplit, workspace_id=workspace_id, row_id=split_id)
    if split.audience_id != audience_id:
        get_owned(session, AudienceSplit, workspace_id="", row_id=split_id)  # 404, uniformly
    return split


def split_groups(session: Session, split: AudienceSplit) -> list[SplitGroup]:
    return list(
        session.scalars(
            sa.select(SplitGroup)
            .where(SplitGroup.split_id == split.id)
            .order_by(SplitGroup.position)
        )
    )


def delete_split(session: Session, *, workspace_id: str, audience_id: str, split_id: str) -> None:
    split = get_split(
        session, workspace_id=workspace_id, audience_id=audience_id, split_id=split_id
    )
    group_ids = [g.id for g in split_groups(session, split)]
    users = list(session.scalars(sa.select(Sync.name).where(Sync.split_group_id.in_(group_ids))))
    if users:
        raise ConflictError(
            f"split {split.name!r} is used by syncs ({', '.join(map(repr, users[:5]))})"
        )
    for group in split_groups(session, split):
        session.delete(group)
    session.flush()
    session.delete(split)
