"""Audiences: named filter trees over a parent model.

Every write validates the tree with the compiler against the workspace's current catalog;
a tree that does not compile is never stored. Reads report `status: error` (with the
compiler's message) when a stored tree stopped compiling, e.g. after a column was dropped.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import (
    Description,
    Name,
    Spec,
    apply_changes,
    ensure_name_free,
    get_owned,
    iter_values,
    list_owned,
    unique_slug,
)
from composable_dagster.catalog.schema_view import audience_def, load_schema
from composable_dagster.catalog.tables import Audience, AudienceSplit, Model, SplitGroup, Sync
from composable_dagster.errors import ConflictError, InvalidInputError, NotFoundError
from composable_dagster.filters import CatalogSchema, FilterError, validate_filter_tree
from composable_dagster.filters.schema import EntityType

AudienceStatus = Literal["draft", "active", "archived"]


# Stored as given (no identity graphs yet), in a column as wide as an id.
IdentityGraphId = Annotated[str, pydantic.StringConstraints(max_length=36)]


class AudienceCreate(Spec):
    name: Name
    description: Description = ""
    parent_model_id: str
    filter_tree: dict[str, Any]
    identity_graph_id: IdentityGraphId | None = None
    status: AudienceStatus = "active"


class AudienceUpdate(Spec):
    name: Name | None = None
    description: Description | None = None
    parent_model_id: str | None = None
    filter_tree: dict[str, Any] | None = None
    identity_graph_id: IdentityGraphId | None = None
    status: AudienceStatus | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AudienceView:
    """An audience as clients see it: the row, with a status that reflects today's catalog."""

    row: Audience
    status: str
    status_error: str


def create_audience(
    session: Session, *, workspace_id: str, spec: AudienceCreate, created_by: str | None
) -> Audience:
    ensure_name_free(session, Audience, workspace_id=workspace_id, name=spec.name)
    _parent_model(session, workspace_id=workspace_id, model_id=spec.parent_model_id)
    row = Audience(
        workspace_id=workspace_id,
        created_by=created_by,
        slug=unique_slug(session, Audience, workspace_id=workspace_id, name=spec.name),
        status_error="",
        **spec.model_dump(),
    )
    session.add(row)
    session.flush()
    _validate(load_schema(session, workspace_id=workspace_id), row)
    return row


def update_audience(
    session: Session, *, workspace_id: str, audience_id: str, spec: AudienceUpdate
) -> Audience:
    row = get_owned(session, Audience, workspace_id=workspace_id, row_id=audience_id)
    changes = spec.model_dump(exclude_unset=True)
    for field in ("name", "description", "parent_model_id", "filter_tree", "status"):
        if field in changes and changes[field] is None:
            raise InvalidInputError(field, "may not be null")
    if "name" in changes:
        ensure_name_free(
            session, Audience, workspace_id=workspace_id, name=changes["name"], exclude_id=row.id
        )
    if "parent_model_id" in changes:
        _parent_model(session, workspace_id=workspace_id, model_id=changes["parent_model_id"])
    apply_changes(row, changes)
    row.status_error = ""
    session.flush()
    # Validated with the new tree in place, so cycles through this audience are caught.
    _validate(load_schema(session, workspace_id=workspace_id), row)
    return row


def delete_audience(session: Session, *, workspace_id: str, audience_id: str) -> None:
    row = get_owned(session, Audience, workspace_id=workspace_id, row_id=audience_id)
    active = [
        s.name
        for s in list_owned(session, Sync, workspace_id=workspace_id, audience_id=row.id)
        if s.status == "active"
    ]
    if active:
        raise ConflictError(
            f"audience {row.name!r} has active syncs ({', '.join(map(repr, active[:5]))}); "
            "pause or delete them first"
        )
    referencing = [
        a.name
        for a in list_owned(session, Audience, workspace_id=workspace_id)
        if a.id != row.id and row.id in iter_values(a.filter_tree, "audience_id")
    ]
    if referencing:
        raise ConflictError(
            f"audience {row.name!r} is used by audiences ({', '.join(map(repr, referencing[:5]))})"
        )
    for sync in list_owned(session, Sync, workspace_id=workspace_id, audience_id=row.id):
        session.delete(sync)  # paused/draft syncs of a deleted audience have nothing to send
    session.flush()
    for group in list_owned(session, SplitGroup, workspace_id=workspace_id, audience_id=row.id):
        session.delete(group)
    session.flush()
    for split in list_owned(session, AudienceSplit, workspace_id=workspace_id, audience_id=row.id):
        session.delete(split)
    session.flush()
    session.delete(row)


def list_audiences(
    session: Session, *, workspace_id: str, parent_model_id: str | None = None
) -> list[AudienceView]:
    schema = load_schema(session, workspace_id=workspace_id)
    filters = {} if parent_model_id is None else {"parent_model_id": parent_model_id}
    rows = list_owned(session, Audience, workspace_id=workspace_id, **filters)
    return [audience_view(schema, row) for row in rows]


def get_audience(session: Session, *, workspace_id: str, audience_id: str) -> AudienceView:
    row = get_owned(session, Audience, workspace_id=workspace_id, row_id=audience_id)
    return audience_view(load_schema(session, workspace_id=workspace_id), row)


def audience_view(schema: CatalogSchema, row: Audience) -> AudienceView:
    try:
        _validate(schema, row)
    except InvalidInputError as err:
        return AudienceView(row=row, status="error", status_error=str(err))
    return AudienceView(row=row, status=row.status, status_error=row.status_error)


def record_estimate(row: Audience, *, size: int, at: datetime) -> None:
    row.estimated_size = size
    row.estimated_at = at


def _validate(schema: CatalogSchema, row: Audience) -> None:
    schema = dataclasses.replace(schema, audiences={**schema.audiences, row.id: audience_def(row)})
    try:
        validate_filter_tree(
            row.filter_tree,
            parent_model_id=row.parent_model_id,
            schema=schema,
            audience_id=row.id,
        )
    except FilterError as err:
        raise InvalidInputError(err.path, err.message) from err


def _parent_model(session: Session, *, workspace_id: str, model_id: str) -> Model:
    try:
        model = get_owned(session, Model, workspace_id=workspace_id, row_id=model_id)
    except NotFoundError as err:
        raise InvalidInputError("parent_model_id", str(err)) from err
    if model.entity_type != EntityType.PARENT:
        raise InvalidInputError(
            "parent_model_id", f"model {model.name!r} is a {model.entity_type} model, not a parent"
        )
    return model
