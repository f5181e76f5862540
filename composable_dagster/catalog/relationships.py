"""Relationships: named, directed joins between two models (optionally through a junction)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from composable_dagster.catalog.common import (
    Description,
    Identifier,
    Name,
    Spec,
    apply_changes,
    ensure_name_free,
    get_owned,
    iter_values,
    list_owned,
)
from composable_dagster.catalog.models import model_columns
from composable_dagster.catalog.tables import Audience, Model, Relationship, Trait
from composable_dagster.errors import ConflictError, InvalidInputError, NotFoundError
from composable_dagster.filters.schema import Cardinality


class RelationshipCreate(Spec):
    name: Name
    description: Description = ""
    from_model_id: str
    to_model_id: str
    from_column: Identifier
    to_column: Identifier
    cardinality: Cardinality = Cardinality.ONE_TO_MANY
    through_model_id: str | None = None
    through_from_column: Identifier | None = None
    through_to_column: Identifier | None = None


class RelationshipUpdate(Spec):
    name: Name | None = None
    description: Description | None = None
    from_model_id: str | None = None
    to_model_id: str | None = None
    from_column: Identifier | None = None
    to_column: Identifier | None = None
    cardinality: Cardinality | None = None
    through_model_id: str | None = None
    through_from_column: Identifier | None = None
    through_to_column: Identifier | None = None


_NOT_NULL = (
    "name",
    "description",
    "from_model_id",
    "to_model_id",
    "from_column",
    "to_column",
    "cardinality",
)


def create_relationship(
    session: Session, *, workspace_id: str, spec: RelationshipCreate, created_by: str | None
) -> Relationship:
    ensure_name_free(session, Relationship, workspace_id=workspace_id, name=spec.name)
    row = Relationship(workspace_id=workspace_id, created_by=created_by, **spec.model_dump())
    _check(session, row)
    session.add(row)
    session.flush()
    return row


def update_relationship(
    session: Session, *, workspace_id: str, relationship_id: str, spec: RelationshipUpdate
) -> Relationship:
    row = get_owned(session, Relationship, workspace_id=workspace_id, row_id=relationship_id)
    changes = spec.model_dump(exclude_unset=True)
    for field in _NOT_NULL:
        if field in changes and changes[field] is None:
            raise InvalidInputError(field, "may not be null")
    if "name" in changes:
        ensure_name_free(
            session,
            Relationship,
            workspace_id=workspace_id,
            name=changes["name"],
            exclude_id=row.id,
        )
    apply_changes(row, changes)
    _check(session, row)
    return row


def delete_relationship(session: Session, *, workspace_id: str, relationship_id: str) -> None:
    row = get_owned(session, Relationship, workspace_id=workspace_id, row_id=relationship_id)
    users = [
        t.name
        for t in list_owned(session, Trait, workspace_id=workspace_id)
        if row.id in iter_values(t.config, "relationship_id")
    ] + [
        a.name
        for a in list_owned(session, Audience, workspace_id=workspace_id)
        if row.id in iter_values(a.filter_tree, "relationship_id")
    ]
    if users:
        raise ConflictError(
            f"relationship {row.name!r} is used by {', '.join(map(repr, users[:5]))}; "
            "change them first"
        )
    session.delete(row)


def list_relationships(session: Session, *, workspace_id: str) -> list[Relationship]:
    return list_owned(session, Relationship, workspace_id=workspace_id)


def _check(session: Session, row: Relationship) -> None:
    ends = [
        ("from_model_id", row.from_model_id, "from_column", row.from_column),
        ("to_model_id", row.to_model_id, "to_column", row.to_column),
    ]
    if row.cardinality == Cardinality.MANY_TO_MANY:
        for field in ("through_model_id", "through_from_column", "through_to_column"):
            if getattr(row, field) is None:
                raise InvalidInputError(field, "required for many_to_many relationships")
        ends += [
            (
                "through_model_id",
                row.through_model_id,
                "through_from_column",
                row.through_from_column,
            ),
            ("through_model_id", row.through_model_id, "through_to_column", row.through_to_column),
        ]
    else:
        for field in ("through_model_id", "through_from_column", "through_to_column"):
            if getattr(row, field) is not None:
                raise InvalidInputError(field, "only many_to_many relationships have a junction")
    for model_field, model_id, column_field, column in ends:
        try:
            model = get_owned(session, Model, workspace_id=row.workspace_id, row_id=model_id)
        except NotFoundError as err:
            raise InvalidInputError(model_field, str(err)) from err
        if column not in model_columns(model):
            raise InvalidInputError(
                column_field, f"unknown column {column!r} on model {model.name}"
            )
