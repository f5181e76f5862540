"""Helpers every catalog resource uses: scoped lookups, slugs, uniqueness, input specs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import pydantic
import sqlalchemy as sa
from sqlalchemy.orm import Session

from composable_dagster.catalog.tables import Base
from composable_dagster.errors import ConflictError, NotFoundError

RowT = TypeVar("RowT", bound=Base)


class Spec(pydantic.BaseModel):
    """Base of request bodies. Unknown fields are ignored so that clients which send back a
    whole object (ids, timestamps) on PUT keep working, as they do against the hosted API."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


# Documented limits of text fields (docs/api.md, "Limits"): longer input is a 400.
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 4_000
MAX_SQL_LENGTH = 100_000

Name = pydantic.constr(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH)
# A warehouse or column name, as the user typed it (validated against the warehouse later).
Identifier = pydantic.constr(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH)
Description = pydantic.constr(max_length=MAX_DESCRIPTION_LENGTH)
SqlText = pydantic.constr(min_length=1, max_length=MAX_SQL_LENGTH)


def get_owned(session: Session, table: type[RowT], *, workspace_id: str, row_id: str) -> RowT:
    """The row `row_id` of `table` if it belongs to the workspace; NotFoundError otherwise.

    Another workspace's row is reported as not found, so ids of other tenants leak nothing.
    """
    row = session.get(table, row_id)
    if row is None or row.workspace_id != workspace_id:  # type: ignore[attr-defined]
        raise NotFoundError(_resource_name(table), row_id)
    return row


def list_owned(
    session: Session, table: type[RowT], *, workspace_id: str, **equals: Any
) -> list[RowT]:
    query = sa.select(table).where(table.workspace_id == workspace_id)  # type: ignore[attr-defined]
    for column, value in equals.items():
        query = query.where(getattr(table, column) == value)
    return list(session.scalars(query.order_by(table.created_at, table.id)))  # type: ignore[attr-defined]


def ensure_name_free(
    session: Session,
    table: type[RowT],
    *,
    workspace_id: str,
    name: str,
    exclude_id: str | None = None,
) -> None:
    query = sa.select(table.id).where(  # type: ignore[attr-defined]
        table.workspace_id == workspace_id,  # type: ignore[attr-defined]
        table.name == name,  # type: ignore[attr-defined]
    )
    if exclude_id is not None:
        query = query.where(table.id != exclude_id)  # type: ignore[attr-defined]
    if session.scalar(query) is not None:
        raise ConflictError(f"name: a {_resource_name(table)} named {name!r} already exists")


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (slug or "item")[:48]


def unique_slug(session: Session, table: type[RowT], *, workspace_id: str, name: str) -> str:
    """A slug for `name`, unique in the workspace; fixed for the row's lifetime."""
    base = slugify(name)
    taken = set(
        session.scalars(
            sa.select(table.slug).where(  # type: ignore[attr-defined]
                table.workspace_id == workspace_id,  # type: ignore[attr-defined]
                table.slug.like(f"{base}%"),  # type: ignore[attr-defined]
            )
        )
    )
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}_{n}", n + 1
    return slug


def apply_changes(row: Base, changes: Mapping[str, Any]) -> None:
    for field, value in changes.items():
        setattr(row, field, value)


def iter_values(tree: Any, key: str) -> Iterator[Any]:
    """Every value stored under `key` anywhere in a JSON document (filter trees, configs)."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            if k == key:
                yield v
            yield from iter_values(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from iter_values(item, key)


def _resource_name(table: type[Base]) -> str:
    return {
        "models": "model",
        "relationships": "relationship",
        "traits": "trait",
        "destinations": "destination",
        "audiences": "audience",
        "syncs": "sync",
        "api_keys": "API key",
        "workspaces": "workspace",
        "audience_splits": "split",
        "split_groups": "split group",
    }[table.__tablename__]
