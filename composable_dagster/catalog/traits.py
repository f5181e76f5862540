"""Traits (computed attributes): one value per parent entity, evaluated in the warehouse.

A trait is validated by the filter language itself (`filters.validate_trait`) before it is
stored, so every stored trait compiles.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
import pydantic_core
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import (
    MAX_NAME_LENGTH,
    MAX_SQL_LENGTH,
    Description,
    Name,
    Spec,
    apply_changes,
    ensure_name_free,
    get_owned,
    iter_values,
    list_owned,
    slugify,
)
from composable_dagster.catalog.schema_view import load_schema, trait_def
from composable_dagster.catalog.tables import Audience, Model, Trait
from composable_dagster.errors import ConflictError, InvalidInputError, NotFoundError
from composable_dagster.filters import FilterError, validate_trait
from composable_dagster.filters.schema import EntityType, ResultType, TraitType

Slug = pydantic.constr(pattern=r"^[a-z][a-z0-9_]{0,63}$")
# min/max take the type of their column, so only they need result_type spelled out.
_TYPED_BY_COLUMN = {"min", "max"}
# Config keys holding SQL (a `sql` trait's query, a formula); every other string at the top
# of a config names something (a column, a relationship id, a function). A `filter` is a
# filter tree, bounded by the filter language's own limits.
_SQL_KEYS = frozenset({"sql", "expression"})


def _bounded_text(config: dict[str, Any]) -> dict[str, Any]:
    for key, value in config.items():
        limit = MAX_SQL_LENGTH if key in _SQL_KEYS else MAX_NAME_LENGTH
        if isinstance(value, str) and len(value) > limit:
            raise pydantic_core.PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters",
                # `loc_suffix`: the key at fault, appended to `config` in the 400's message.
                {"max_length": limit, "loc_suffix": (key,)},
            )
    return config


TraitConfig = Annotated[dict[str, Any], pydantic.AfterValidator(_bounded_text)]


class TraitCreate(Spec):
    name: Name
    slug: Slug | None = None
    description: Description = ""
    parent_model_id: str
    trait_type: TraitType
    config: TraitConfig
    result_type: ResultType | None = None


class TraitUpdate(Spec):
    name: Name | None = None
    description: Description | None = None
    config: TraitConfig | None = None
    result_type: ResultType | None = None


def create_trait(
    session: Session, *, workspace_id: str, spec: TraitCreate, created_by: str | None
) -> Trait:
    ensure_name_free(session, Trait, workspace_id=workspace_id, name=spec.name)
    slug = spec.slug or slugify(spec.name)
    if any(t.slug == slug for t in list_owned(session, Trait, workspace_id=workspace_id)):
        raise ConflictError(f"slug: a trait with slug {slug!r} already exists")
    try:
        parent = get_owned(session, Model, workspace_id=workspace_id, row_id=spec.parent_model_id)
    except NotFoundError as err:
        raise InvalidInputError("parent_model_id", str(err)) from err
    if parent.entity_type != EntityType.PARENT:
        raise InvalidInputError("parent_model_id", f"model {parent.name!r} is not a parent model")
    row = Trait(
        workspace_id=workspace_id,
        created_by=created_by,
        status="active",
        status_error="",
        name=spec.name,
        slug=slug,
        description=spec.description,
        parent_model_id=parent.id,
        trait_type=spec.trait_type,
        config=spec.config,
        result_type=spec.result_type or _default_result_type(spec.trait_type, spec.config),
    )
    session.add(row)
    session.flush()
    _validate(session, row)
    return row


def update_trait(session: Session, *, workspace_id: str, trait_id: str, spec: TraitUpdate) -> Trait:
    row = get_owned(session, Trait, workspace_id=workspace_id, row_id=trait_id)
    changes = spec.model_dump(exclude_unset=True)
    for field in ("name", "description", "config", "result_type"):
        if field in changes and changes[field] is None:
            raise InvalidInputError(field, "may not be null")
    if "name" in changes:
        ensure_name_free(
            session, Trait, workspace_id=workspace_id, name=changes["name"], exclude_id=row.id
        )
    apply_changes(row, changes)
    session.flush()
    _validate(session, row)
    return row


def delete_trait(session: Session, *, workspace_id: str, trait_id: str) -> None:
    row = get_owned(session, Trait, workspace_id=workspace_id, row_id=trait_id)
    users = [
        a.name
        for a in list_owned(session, Audience, workspace_id=workspace_id)
        if row.id in iter_values(a.filter_tree, "trait_id")
    ] + [
        t.name
        for t in list_owned(session, Trait, workspace_id=workspace_id)
        if t.trait_type == TraitType.FORMULA and row.slug in _formula_words(t.config)
    ]
    if users:
        raise ConflictError(
            f"trait {row.name!r} is used by {', '.join(map(repr, users[:5]))}; change them first"
        )
    session.delete(row)


def list_traits(
    session: Session, *, workspace_id: str, parent_model_id: str | None = None
) -> list[Trait]:
    if parent_model_id is None:
        return list_owned(session, Trait, workspace_id=workspace_id)
    return list_owned(session, Trait, workspace_id=workspace_id, parent_model_id=parent_model_id)


def _validate(session: Session, row: Trait) -> None:
    schema = load_schema(session, workspace_id=row.workspace_id)
    try:
        validate_trait(trait_def(row), schema=schema, path="config")
    except FilterError as err:
        raise InvalidInputError(err.path, err.message) from err


def _default_result_type(trait_type: TraitType, config: dict[str, Any]) -> ResultType:
    if trait_type == TraitType.AGGREGATION and config.get("function") not in _TYPED_BY_COLUMN:
        return ResultType.NUMBER
    raise InvalidInputError("result_type", f"required for {trait_type} traits of this kind")


def _formula_words(config: dict[str, Any]) -> set[str]:
    expression = config.get("expression", "")
    return set("".join(c if c.isalnum() or c == "_" else " " for c in str(expression)).split())
